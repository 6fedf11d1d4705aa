"""Permutation calibration: does the interaction test reject a true null at its nominal rate?

Take a real sweep's trials, destroy any diversity x capacity interaction by permuting, refit, and
count how often the test says p < alpha. A calibrated test rejects about alpha of the time.

    from harness.analysis.calibration import permutation_fpr
    result = permutation_fpr(a.trials, "n_domains", "lora_rank", scheme="residuals", n_perm=400)
    result.fpr          # share of permutations with p < 0.05

Schemes (what is permuted, and the null it makes true):
- "residuals" (Freedman & Lane 1983): fit the main-effects model `score ~ diversity + capacity`,
  shuffle its residuals across trials and add them back. The real main effects stay, the
  interaction is gone: exactly the null the interaction test is about.
- "diversity": the diversity label, within each capacity level (no diversity effect at all).
- "capacity": the capacity label, within each diversity level (no capacity effect at all).
- "cells": the (diversity, capacity) label pair across all trials (no effect of either).

Label schemes on a small sweep have few distinct relabellings (8 trials in 2 x 2 cells: 36 within
capacity), and a real main effect makes their null lumpy, so they are a coarse check there;
`distinct` says how many different relabellings the draws held.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.stats import ALPHA, capacity_values, interaction_design, interaction_t
from harness.errors import InputError

SCHEMES = ("residuals", "diversity", "capacity", "cells")


@dataclass
class PermutationResult:
    """How often the interaction test rejected under n_perm permutations of one scheme."""

    scheme: str
    n_perm: int
    rejections: int
    distinct: int  # different permuted data sets among the draws
    alpha: float = ALPHA

    @property
    def fpr(self) -> float:
        return self.rejections / self.n_perm if self.n_perm else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fpr": self.fpr}


def permutation_fpr(trials: pd.DataFrame, diversity: str, capacity: str, *,
                    scheme: str = "residuals", n_perm: int = 200, alpha: float = ALPHA,
                    log2: bool = True, seed: int = 0) -> PermutationResult:
    """Refit the interaction on n_perm permuted copies of `trials` and count p < alpha."""
    if scheme not in SCHEMES:
        raise InputError(f"permutation scheme {scheme!r}: choose one of {', '.join(SCHEMES)}")
    d = trials[diversity].to_numpy(float)
    c = capacity_values(trials, capacity, log2).to_numpy(float)
    y = trials["score"].to_numpy(float)
    rng = np.random.default_rng(seed)
    draw = _drawer(scheme, d, c, y)
    rejections, seen = 0, set()
    for _ in range(n_perm):
        dd, cc, yy = draw(rng)
        seen.add((dd.tobytes(), cc.tobytes(), yy.tobytes()))
        p = interaction_t(interaction_design(dd, cc), yy)[3]
        rejections += bool(p < alpha)  # nan (singular or exact) never rejects
    return PermutationResult(scheme, n_perm, rejections, len(seen), alpha)


def _drawer(scheme: str, d: np.ndarray, c: np.ndarray, y: np.ndarray):
    """A function rng -> (diversity, capacity, scores) for one permuted copy."""
    if scheme == "residuals":
        main = np.column_stack([np.ones_like(d), d, c])
        fitted = main @ np.linalg.lstsq(main, y, rcond=None)[0]
        resid = y - fitted
        return lambda rng: (d, c, fitted + rng.permutation(resid))
    if scheme == "diversity":
        return lambda rng: (_within(d, c, rng), c, y)
    if scheme == "capacity":
        return lambda rng: (d, _within(c, d, rng), y)
    return lambda rng: (d, c, rng.permutation(y))  # moving scores = moving label pairs


def _within(labels: np.ndarray, blocks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """labels shuffled inside each block (trials sharing a value of `blocks`)."""
    out = labels.copy()
    for value in np.unique(blocks):
        where = np.flatnonzero(blocks == value)
        out[where] = rng.permutation(labels[where])
    return out
