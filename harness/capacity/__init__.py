"""Adapter capacity: the ways a sweep adds trainable capacity to a frozen base model.

Families (`capacity.family`): `lora`, `dora` (weight-decomposed LoRA), `multi_lora` (one LoRA adapter
per capability domain or subtask group plus a shared one), `mole` (a mixture of LoRA experts with a
token-level router). Each is one definition in `families` (registered in `registry`, frozen here
after import); `schema` holds the capacity block's types, `params` counts parameters by hand from a
model shape and `settings` resolves a sweep's capacity grid (both torch-free: `harness plan` and
sweep expansion run them); `adapters` attaches, routes, saves, loads and merges them.
"""

from harness.capacity import families  # noqa: F401  (registers every shipped family)
from harness.capacity.registry import FAMILIES

FAMILIES.freeze()
