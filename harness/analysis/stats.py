"""Statistics for the diversity x capacity question, with statsmodels.

The question: does the gain from more diverse training data grow with adapter capacity? We answer it
with cell means over seeds (t-intervals), the two-way OLS model

    score ~ diversity * log2(capacity)

whose interaction coefficient is the change in the per-level diversity effect per doubling of
capacity, a Type II ANOVA table (right for unbalanced designs' main effects), and the marginal gain
of each added diversity level at each capacity. Every function says, rather than hides, when the
design is too small to support a claim.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

ALPHA = 0.05  # two-sided: 95% intervals throughout
TERM = "diversity:capacity"  # the interaction term in the model frame's own column names


def mean_ci(values: Any, alpha: float = ALPHA) -> tuple[float, float, float]:
    """Mean and t-interval of independent seeds; (mean, nan, nan) when n < 2 (no variance)."""
    from statsmodels.stats.weightstats import DescrStatsW

    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if x.size else math.nan
    if x.size < 2:
        return mean, math.nan, math.nan
    if np.ptp(x) == 0:  # zero spread: statsmodels would divide 0 by 0
        return mean, mean, mean
    low, high = DescrStatsW(x).tconfint_mean(alpha=alpha)
    return mean, float(low), float(high)


def diff_ci(a: Any, b: Any, alpha: float = ALPHA) -> tuple[float, float, float]:
    """mean(a) - mean(b) with a Welch interval (seeds of two cells need not share a variance)."""
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean()) if a.size and b.size else math.nan
    if a.size < 2 or b.size < 2:
        return diff, math.nan, math.nan
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return diff, diff, diff
    low, high = CompareMeans(DescrStatsW(a), DescrStatsW(b)).tconfint_diff(
        alpha=alpha, usevar="unequal")
    return diff, float(low), float(high)


def cell_means(frame: pd.DataFrame, by: list[str], value: str = "score") -> pd.DataFrame:
    """Mean, sd and 95% t-CI of `value` per group of `by`, with n (the number of seeds)."""
    columns = [*by, "n", "mean", "sd", "ci_low", "ci_high"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        mean, low, high = mean_ci(group[value])
        sd = float(group[value].std(ddof=1)) if len(group) > 1 else math.nan
        rows.append([*key, len(group), mean, sd, low, high])
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------------------------
# Design checks


def design_notes(frame: pd.DataFrame, diversity: str, capacity: str) -> list[str]:
    """Plain statements of what this design cannot support, for the report's warnings."""
    if frame.empty:
        return ["no successful trials, so there is nothing to analyse"]
    notes = []
    for name in (diversity, capacity):
        if frame[name].nunique() < 2:
            notes.append(f"{name} has only one level ({frame[name].iloc[0]}), so neither its "
                         "effect nor the diversity x capacity interaction can be estimated")
    per_cell = frame.groupby([diversity, capacity]).size()
    if per_cell.max() < 2:
        notes.append("one seed per cell: there is no within-cell variance, so cell means have no "
                     "confidence intervals and any model CI rests on the linear model alone")
    elif per_cell.min() != per_cell.max():
        notes.append(f"unbalanced design: {per_cell.min()} to {per_cell.max()} seeds per cell; "
                     "cell means differ in precision and Type II sums of squares are used")
    elif per_cell.min() < 3:
        notes.append("only 2 seeds per cell: intervals are wide (t with 1 degree of freedom)")
    return notes


# ---------------------------------------------------------------------------------------------
# The interaction model


@dataclass
class InteractionFit:
    """The diversity x log2(capacity) OLS fit, or why it could not be made (`reason`)."""

    diversity: str
    capacity: str  # as shown, e.g. "log2(lora_rank)"
    n_obs: int
    estimate: float = math.nan  # interaction coefficient
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan
    df_resid: float = math.nan
    r_squared: float = math.nan
    params: pd.DataFrame = field(default_factory=pd.DataFrame)  # coef, se, ci, p per term
    anova: pd.DataFrame = field(default_factory=pd.DataFrame)  # Type II table
    reason: str | None = None

    @property
    def estimable(self) -> bool:
        return self.reason is None

    @property
    def excludes_zero(self) -> bool:
        return self.estimable and (self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "diversity": self.diversity, "capacity": self.capacity, "n_obs": self.n_obs,
            "estimate": self.estimate, "ci_low": self.ci_low, "ci_high": self.ci_high,
            "p_value": self.p_value, "df_resid": self.df_resid, "r_squared": self.r_squared,
            "reason": self.reason,
            "params": self.params.reset_index(names="term").to_dict("records"),
            "anova": self.anova.reset_index(names="term").to_dict("records"),
        }


def capacity_values(frame: pd.DataFrame, capacity: str, log2: bool = True) -> pd.Series:
    """Capacity on the model's scale: log2 by default, since ranks are swept in doublings."""
    values = frame[capacity].astype(float)
    return np.log2(values) if log2 else values


# The model matrix's columns, in the order statsmodels builds them from the formula.
DESIGN_COLUMNS = ("Intercept", "diversity", "capacity", TERM)


def interaction_design(diversity_values: Any, capacity_scaled: Any) -> np.ndarray:
    """The model matrix of `score ~ diversity * capacity`: [1, d, c, d*c] per trial.

    One construction for the fit (tests check it equals statsmodels' own), the permutation
    calibration and the power calculation, so the three speak of the same coefficient.
    capacity_scaled is already on the model's scale (see capacity_values).
    """
    d = np.asarray(diversity_values, dtype=float)
    c = np.asarray(capacity_scaled, dtype=float)
    return np.column_stack([np.ones_like(d), d, c, d * c])


def frame_design(frame: pd.DataFrame, diversity: str, capacity: str,
                 log2: bool = True) -> np.ndarray:
    """interaction_design for a table of trials (analysed records or planned trials)."""
    return interaction_design(frame[diversity], capacity_values(frame, capacity, log2))


def interaction_t(design: np.ndarray, scores: Any) -> tuple[float, float, float, float]:
    """(estimate, se, df, two-sided p) of the interaction by plain least squares.

    The same numbers as fit_interaction without statsmodels' bookkeeping: thousands of refits (the
    permutation calibration) take milliseconds. se and p are nan when the design is singular or the
    fit is exact.
    """
    from scipy import stats as sps

    y = np.asarray(scores, dtype=float)
    coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    df = len(y) - design.shape[1]
    if rank < design.shape[1] or df <= 0:
        return float(coef[3]), math.nan, float(df), math.nan
    resid = y - design @ coef
    sigma2 = float(resid @ resid) / df
    se = math.sqrt(sigma2 * np.linalg.inv(design.T @ design)[3, 3])
    if se == 0:
        return float(coef[3]), 0.0, float(df), math.nan
    return float(coef[3]), se, float(df), float(2 * sps.t.sf(abs(coef[3] / se), df))


def fit_interaction(frame: pd.DataFrame, diversity: str, capacity: str,
                    log2: bool = True) -> InteractionFit:
    """Fit score ~ diversity * capacity and report the interaction term with its CI and p-value."""
    shown = f"log2({capacity})" if log2 else capacity
    fit = InteractionFit(diversity=diversity, capacity=shown, n_obs=len(frame))
    fit.reason = _not_estimable(frame, diversity, capacity)
    if fit.reason:
        return fit
    model_frame = pd.DataFrame({"score": frame["score"].astype(float),
                                "diversity": frame[diversity].astype(float),
                                "capacity": capacity_values(frame, capacity, log2)})
    return _fill_fit(fit, model_frame)


def _not_estimable(frame: pd.DataFrame, diversity: str, capacity: str) -> str | None:
    if frame.empty:
        return "no successful trials"
    for name in (diversity, capacity):
        if frame[name].nunique() < 2:
            return f"{name} has fewer than 2 levels, so no interaction can be estimated"
    if len(frame) <= 4:  # 4 parameters: intercept, two main effects, interaction
        return f"only {len(frame)} trials for a 4-parameter model: no residual degrees of freedom"
    return None


def _fill_fit(fit: InteractionFit, model_frame: pd.DataFrame) -> InteractionFit:
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # exact fits divide by a zero residual
        result = smf.ols("score ~ diversity * capacity", data=model_frame).fit()
        conf = result.conf_int(alpha=ALPHA)
        fit.anova = sm.stats.anova_lm(result, typ=2)
    fit.estimate = float(result.params[TERM])
    fit.ci_low, fit.ci_high = float(conf.loc[TERM, 0]), float(conf.loc[TERM, 1])
    fit.p_value = float(result.pvalues[TERM])
    fit.df_resid, fit.r_squared = float(result.df_resid), float(result.rsquared)
    params = pd.DataFrame({"coef": result.params, "se": result.bse, "ci_low": conf[0],
                           "ci_high": conf[1], "p_value": result.pvalues})
    # Show the user's names, not the model frame's placeholders.
    names = {"diversity": fit.diversity, "capacity": fit.capacity,
             TERM: f"{fit.diversity}:{fit.capacity}"}
    fit.params, fit.anova = params.rename(index=names), fit.anova.rename(index=names)
    return fit


# ---------------------------------------------------------------------------------------------
# Marginal gains


def marginal_gains(frame: pd.DataFrame, diversity: str, capacity: str) -> pd.DataFrame:
    """Gain from each diversity level to the next, at each capacity, with a Welch 95% CI."""
    columns = [capacity, "from", "to", "gain", "ci_low", "ci_high", "n_from", "n_to"]
    rows = []
    for cap, group in (frame.groupby(capacity, sort=True) if not frame.empty else ()):
        levels = sorted(group[diversity].unique())
        for lo, hi in zip(levels, levels[1:]):
            a = group.loc[group[diversity] == hi, "score"]
            b = group.loc[group[diversity] == lo, "score"]
            gain, low, high = diff_ci(a, b)
            rows.append([cap, lo, hi, gain, low, high, len(b), len(a)])
    return pd.DataFrame(rows, columns=columns)
