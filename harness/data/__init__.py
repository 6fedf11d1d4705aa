"""Training data: (domains, subtasks, volume) -> the rows a trial trains on, and how a row reads.

`mixture` builds a training mixture (budget modes, the contamination check, fingerprints, counting
stats) and the evaluation sets it is checked against; `cache` adds a mixture's embedding diversity
and keeps built mixtures on disk, keyed by everything that decides them; `diversity` holds the
Vendi score over a mixture sample; `embeddings` locates, loads and runs the MiniLM sentence model
(the evaluation's sentence-transformer metrics use it too); `prompting` turns a row into the prompt
and the answer text a model sees, in training and evaluation alike. Nothing here imports torch.
"""
