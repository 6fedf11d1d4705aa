"""Trainable-parameter counts per capacity family, by hand from the model shape, and budget matching.

    adapter_params(shape, "mole", rank=8, targets="all-linear", experts=4)
    match_rank(393_216, shape, "mole", targets="all-linear", experts=4)   # -> (rank, params)

Each family's count per adapted layer is part of its definition (harness.capacity.families, where
the formulas are listed); tests check them against the parameters peft and harness.capacity.mole
really create. No torch here.
"""

from __future__ import annotations

from harness.capacity.registry import get_family
from harness.shapes import ModelShape


def adapter_params(shape: ModelShape, family: str, rank: int, targets: str | list[str], *,
                   experts: int | None = None, n_groups: int | None = None) -> int | None:
    """Trainable parameters of one adapter setting; None when the target modules are not ones the
    shape knows (a custom module list on an unfamiliar architecture)."""
    dims = shape.linear_dims(targets)
    if dims is None:
        return None
    return shape.layers * get_family(family).layer_params(dims, rank, experts, n_groups)


def match_rank(budget: int, shape: ModelShape, family: str, targets: str | list[str], *,
               experts: int | None = None, n_groups: int | None = None,
               max_rank: int = 4096) -> tuple[int, int] | None:
    """(rank, params) of the family's setting nearest to `budget` trainable parameters.

    Parameters grow linearly with rank, so the nearest rank is a rounding; None when the targets
    are unknown or even rank 1 overshoots the budget by more than half (the setting cannot be made
    small enough: too many experts or groups for the budget)."""
    counts = [adapter_params(shape, family, r, targets, experts=experts, n_groups=n_groups) for r in (1, 2)]
    if counts[0] is None:
        return None
    per_rank = counts[1] - counts[0]
    fixed = counts[0] - per_rank
    rank = min(max(round((budget - fixed) / per_rank), 1), max_rank)
    params = fixed + per_rank * rank
    if params > 1.5 * budget:
        return None
    return rank, params
