"""Training data: (domains, subtasks, volume) -> the rows a trial trains on, and how a row reads.

`mixture` builds mixtures and evaluation sets and caches mixtures; `diversity` measures a mixture's
Vendi score; `prompting` turns a row into the prompt and answer text a model sees.
"""
