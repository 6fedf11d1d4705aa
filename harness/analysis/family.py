"""Capacity as family x size: the interaction per adapter family, and whether it differs.

With several capacity families (lora, dora, multi_lora, mole) in one sweep, a single fit of
`score ~ diversity * log2(size)` would average slopes that need not agree, and whether they agree is
the question. So, on the per-trial table:

1. Each family is fitted on its own trials with the same two-way OLS as the headline
   (stats.fit_interaction): its interaction coefficient and 95% CI rest on that family's residual
   variance only, and equal what analysing that family's trials alone would give.
2. Each family is compared with a reference, plain `lora` when present (else the first family): the
   difference of the two interaction estimates with a Welch-Satterthwaite t-interval. The fits use
   disjoint trials, so the estimates are independent; their residual variances need not be equal
   (a router or a magnitude vector can make a family noisier), as in stats.diff_ci for cells.
3. One omnibus test that every family has the same interaction: the F-test of the three-way terms
   diversity:size:C(family) in the fully interacted OLS `score ~ C(family) * diversity * size`
   against the same model without them. Its coefficients are exactly the per-family fits; unlike
   1 and 2 it pools residual variance across families (assumes it is equal), so each family's
   residual SD is reported next to it. `differs` is this test at the 5% level; the pairwise
   intervals say which family differs from the reference, and by how much (with more than two
   families they are not adjusted for multiplicity: the omnibus test is the guarded one).

The size axis is log2 of one numeric column. By default it is the parameter budget (`budget_size`)
when every trial was matched to one (capacity.match_params): families then sit at the same
parameter counts, so a difference in slope is not a difference in size. Otherwise it is the
analysis's capacity column (lora_rank, or adapter_params). Per doubling the slope is the same
whether size is a family's rank or its parameters whenever the two are (close to) proportional, as
they are for every family here (DoRA's magnitude vector and MoLE's router add a small
rank-independent part).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.analysis.load import BUDGET_SIZE, FAMILY, budget_kinds
from harness.analysis.stats import (ALPHA, InteractionFit, capacity_values, cell_means,
                                    fit_interaction)

REFERENCE = "lora"  # plain LoRA: the family every other one is compared against when present
FULL_MODEL = "score ~ C(family) * diversity * capacity"
NO_THREE_WAY = "score ~ (C(family) + diversity + capacity) ** 2"  # every two-way term, no three-way


@dataclass
class FamilyComparison:
    """Per-family interaction fits, their differences from the reference, and the omnibus test."""

    diversity: str
    size: str  # the size column, e.g. "budget_size"; fitted on log2 when `log2`
    log2: bool
    fits: dict[str, InteractionFit]  # family -> its own fit, reference family first
    reference: str | None = None
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)  # family vs reference
    omnibus: dict[str, Any] = field(default_factory=dict)  # F, df_num, df_den, p_value, reason
    cells: pd.DataFrame = field(default_factory=pd.DataFrame)  # mean [CI] per family x div x size
    trials: dict[str, int] = field(default_factory=dict)  # family -> successful trials

    @property
    def shown_size(self) -> str:
        return f"log2({self.size})" if self.log2 else self.size

    @property
    def differs(self) -> bool | None:
        """Whether the omnibus test rejects one common interaction; None when it could not run."""
        p = self.omnibus.get("p_value")
        return None if p is None or math.isnan(p) else bool(p < ALPHA)

    def to_dict(self) -> dict[str, Any]:
        return {
            "diversity": self.diversity, "size": self.size, "log2": self.log2,
            "reference": self.reference, "differs": self.differs, "trials": dict(self.trials),
            "fits": {name: {**fit.to_dict(), "residual_sd": residual_sd(fit)}
                     for name, fit in self.fits.items()},
            "differences": self.differences.to_dict("records"),
            "omnibus": dict(self.omnibus),
            "cells": self.cells.to_dict("records"),
        }


def families(trials: pd.DataFrame) -> list[str]:
    """The capacity families in the table: lora first (the natural reference), then by name."""
    if trials.empty or FAMILY not in trials.columns:
        return []
    names = sorted(str(f) for f in trials[FAMILY].dropna().unique())
    return sorted(names, key=lambda f: (f != REFERENCE, f))


def default_size(trials: pd.DataFrame, capacity: str) -> str:
    """budget_size when every trial was matched to a budget of one kind, else the capacity column.

    Budgets of two kinds ('r16' and 400000) are not on one scale, so they fall back to capacity.
    """
    if trials.empty or BUDGET_SIZE not in trials.columns:
        return capacity
    matched = trials[BUDGET_SIZE].notna().all()
    one_scale = len(budget_kinds(trials["capacity_budget"])) == 1
    return BUDGET_SIZE if matched and one_scale else capacity


def compare_families(trials: pd.DataFrame, diversity: str, size: str,
                     log2: bool = True) -> FamilyComparison:
    """Fit each family, compare each with the reference, and test for one common interaction."""
    names = families(trials)
    groups = {name: trials[trials[FAMILY] == name] for name in names}
    fits = {name: fit_interaction(group, diversity, size, log2) for name, group in groups.items()}
    usable = [name for name in names if fits[name].estimable]
    reference = usable[0] if usable else None  # lora first when it is estimable
    by = [FAMILY, diversity, size]
    return FamilyComparison(
        diversity=diversity, size=size, log2=log2, fits=fits, reference=reference,
        differences=_differences(fits, reference, usable),
        omnibus=omnibus_test(trials[trials[FAMILY].isin(usable)] if usable else trials.iloc[:0],
                             diversity, size, log2, usable),
        cells=cell_means(trials, by) if not trials.empty else pd.DataFrame(),
        trials={name: len(group) for name, group in groups.items()},
    )


def interaction_se(fit: InteractionFit) -> float:
    """Standard error of the fit's interaction coefficient (nan when not estimable)."""
    term = f"{fit.diversity}:{fit.capacity}"
    return float(fit.params.loc[term, "se"]) if fit.estimable else math.nan


def residual_sd(fit: InteractionFit) -> float:
    """sqrt(residual mean square): the spread the family's CI rests on (nan when not estimable)."""
    if not fit.estimable or fit.df_resid <= 0:
        return math.nan
    return math.sqrt(float(fit.anova.loc["Residual", "sum_sq"]) / fit.df_resid)


# ---------------------------------------------------------------------------------------------
# Pairwise: each family against the reference


DIFF_COLUMNS = ["family", "reference", "diff", "se", "df", "ci_low", "ci_high", "p_value"]


def _differences(fits: dict[str, InteractionFit], reference: str | None,
                 usable: list[str]) -> pd.DataFrame:
    rows = [coefficient_diff(fits[name], fits[reference], name, reference)
            for name in usable if name != reference]
    return pd.DataFrame(rows, columns=DIFF_COLUMNS)


def coefficient_diff(fit: InteractionFit, ref: InteractionFit, name: str,
                     ref_name: str) -> dict[str, Any]:
    """fit - ref interaction with a Welch-Satterthwaite t-interval (independent fits)."""
    from scipy import stats as sps

    se_a, se_b = interaction_se(fit), interaction_se(ref)
    diff, se = fit.estimate - ref.estimate, math.hypot(se_a, se_b)
    row = dict(family=name, reference=ref_name, diff=diff, se=se, df=math.nan,
               ci_low=math.nan, ci_high=math.nan, p_value=math.nan)
    if se == 0:  # both fits exact: no spread to build an interval from
        row.update(ci_low=diff, ci_high=diff)
        return row
    df = se**4 / (se_a**4 / fit.df_resid + se_b**4 / ref.df_resid)
    half = float(sps.t.ppf(1 - ALPHA / 2, df)) * se
    row.update(df=df, ci_low=diff - half, ci_high=diff + half,
               p_value=float(2 * sps.t.sf(abs(diff) / se, df)))
    return row


# ---------------------------------------------------------------------------------------------
# Omnibus: one F-test of the three-way terms


def omnibus_test(frame: pd.DataFrame, diversity: str, size: str, log2: bool,
                 names: list[str]) -> dict[str, Any]:
    """F-test that diversity:size has one slope in every family (see the module docstring)."""
    shown = f"log2({size})" if log2 else size
    out = {"families": list(names), "model": f"score ~ C({FAMILY}) * {diversity} * {shown}",
           "F": math.nan, "df_num": math.nan, "df_den": math.nan, "p_value": math.nan,
           "reason": None}
    if len(names) < 2:
        out["reason"] = "fewer than two capacity families with an estimable interaction"
        return out
    import statsmodels.formula.api as smf

    model_frame = pd.DataFrame({"score": frame["score"].astype(float),
                                "diversity": frame[diversity].astype(float),
                                "capacity": capacity_values(frame, size, log2),
                                "family": frame[FAMILY].astype(str)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # exact fits divide by a zero residual
        full = smf.ols(FULL_MODEL, data=model_frame).fit()
        reduced = smf.ols(NO_THREE_WAY, data=model_frame).fit()
        f_value, p_value, df_num = full.compare_f_test(reduced)
    out.update(F=float(f_value), df_num=float(df_num), df_den=float(full.df_resid),
               p_value=float(p_value))
    return out
