"""Adapter capacity: the ways a sweep adds trainable capacity to a frozen base model.

Families (`capacity.family`): `lora`, `dora` (weight-decomposed LoRA), `multi_lora` (one LoRA adapter
per capability domain or subtask group plus a shared one), `mole` (a mixture of LoRA experts with a
token-level router). `params` counts parameters by hand from a model shape (no torch, used by
`harness plan` and sweep expansion); `adapters` attaches, routes, saves, loads and merges them.
"""
