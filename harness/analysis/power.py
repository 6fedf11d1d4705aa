"""Power before a cluster spends hours: what interaction can a planned design detect?

From a pilot sweep's records we estimate two noises of a trial's overall score:
- seed-to-seed: the pooled SD between seeds of one cell (what more seeds average away);
- evaluation: the SE that a finite draw of held-out rows puts on a trial's score (from the task SEs,
  harness.analysis.noise), rescaled to the planned number of held-out rows per subtask. Seeds of a
  cell are judged on the same rows, so this part is taken as shared within a cell: more seeds do
  not shrink it, more held-out rows do.

The interaction is the OLS coefficient of `score ~ diversity * capacity` on the planned trials
(the design matrix of harness.analysis.stats, so power and analysis speak of one coefficient):

    Var(b) = sigma_seed^2 [(X'X)^-1]_int + sum over cells (sum of the cell's weights x sigma_eval)^2

and the smallest interaction detectable at 80% power with a two-sided 5% t-test is the effect at
which the noncentral t (df = trials - 4, noncentrality effect / SE) rejects 80% of the time.

    harness plan sweeps/smoke.yaml --pilot results/smoke --effect 0.01
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis import load
from harness.analysis.noise import coefficient_eval_se, task_noise, trial_overall_se
from harness.analysis.stats import ALPHA, frame_design
from harness.errors import InputError

POWER = 0.80
MAX_SEEDS = 1000  # the search for "seeds needed" stops here


# ---------------------------------------------------------------------------------------------
# The maths (pure functions)


def pooled_within_sd(scores: pd.Series, groups: pd.Series) -> tuple[float, int]:
    """(SD, degrees of freedom) of scores around their group means, pooled over groups."""
    frame = pd.DataFrame({"y": np.asarray(scores, float), "g": np.asarray(groups)})
    centred = frame["y"] - frame.groupby("g")["y"].transform("mean")
    df = int(len(frame) - frame["g"].nunique())
    if df < 1:
        return math.nan, 0
    return float(math.sqrt(float(centred @ centred) / df)), df


def interaction_se(design: np.ndarray, cells: list, sigma_seed: float,
                   sigma_eval: float) -> float:
    """SE of the interaction coefficient on this design (module docstring); nan if singular."""
    gram = design.T @ design
    if np.linalg.matrix_rank(gram) < gram.shape[0]:
        return math.nan
    seed_var = sigma_seed ** 2 * float(np.linalg.inv(gram)[3, 3])
    eval_se = coefficient_eval_se(design, cells, np.full(len(design), sigma_eval))
    return math.sqrt(seed_var + eval_se ** 2)


def power_at(effect: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """Probability that a two-sided t-test at alpha rejects when the interaction is `effect`."""
    from scipy import stats

    if not (se > 0 and df >= 1):
        return math.nan
    crit = stats.t.ppf(1 - alpha / 2, df)
    shift = abs(effect) / se
    upper = float(stats.nct.sf(crit, df, shift))
    lower = float(stats.nct.cdf(-crit, df, shift))  # the wrong-sign tail: tiny, nan far out
    if not math.isfinite(upper):
        upper = 1.0 if shift > crit else 0.0
    return min(upper + (lower if math.isfinite(lower) else 0.0), 1.0)


def minimum_detectable(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest |interaction| detected with the given power (nan when untestable)."""
    from scipy.optimize import brentq

    if not (se > 0 and df >= 1):
        return math.nan
    high = se
    while power_at(high, se, df, alpha) < power:  # grows fast: t tails are finite for df >= 1
        high *= 2
    return float(brentq(lambda e: power_at(e, se, df, alpha) - power, 0.0, high, xtol=se * 1e-6))


def replicate(design: np.ndarray, cells: list, seeds: int) -> tuple[np.ndarray, list]:
    """One row per cell repeated `seeds` times: the planned cells at another seed count."""
    first = pd.Series(range(len(cells))).groupby(pd.Series(cells)).first().to_numpy()
    one = design[first]
    names = [cells[i] for i in first]
    return np.tile(one, (seeds, 1)), names * seeds


def seeds_needed(design: np.ndarray, cells: list, sigma_seed: float, sigma_eval: float,
                 effect: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Fewest seeds per cell at which `effect` is detected with `power`; None if no count will do
    (the evaluation noise alone is too large: more held-out rows are needed, not more seeds)."""
    if abs(effect) <= eval_floor(design, cells, sigma_eval, alpha, power):
        return None
    for k in range(1, MAX_SEEDS + 1):
        x, names = replicate(design, cells, k)
        se = interaction_se(x, names, sigma_seed, sigma_eval)
        if power_at(effect, se, len(x) - x.shape[1], alpha) >= power:
            return k
    return None


def eval_floor(design: np.ndarray, cells: list, sigma_eval: float, alpha: float = ALPHA,
               power: float = POWER) -> float:
    """The detectable interaction with infinitely many seeds: what evaluation noise alone allows."""
    from scipy import stats

    x, names = replicate(design, cells, 1)
    se = coefficient_eval_se(x, names, np.full(len(x), sigma_eval))
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se)


# ---------------------------------------------------------------------------------------------
# The pilot


@dataclass
class PilotNoise:
    """Noise of one trial's overall score, estimated from a pilot sweep's records."""

    results_dir: Path
    sigma_seed: float
    seed_df: int
    sigma_eval: float  # at the pilot's held-out rows per subtask
    eval_rows: float | None  # median held-out rows per task in the pilot
    trials: int
    cells: int
    guessed_tasks: int  # task SEs neither recorded nor boundable (counted at the worst case)


def estimate_noise(results_dir: Path, eval_set: str | None = None) -> PilotNoise:
    """Seed-to-seed SD (pooled within cells) and evaluation SD (RMS over trials) of the pilot."""
    loaded = load.load_results(Path(results_dir))
    chosen = load.choose_eval_set(loaded.trials + loaded.baselines, eval_set)
    trials = load.trial_table(loaded.trials, chosen)
    if trials.empty:
        raise InputError(f"{results_dir}: the pilot has no successful scored trials; "
                         "its noise cannot be estimated")
    sigma_seed, df = pooled_within_sd(trials["score"], trials["cell_id"])
    if df < 1:
        raise InputError(f"{results_dir}: every pilot cell has one seed, so seed-to-seed noise "
                         "cannot be estimated; run the pilot with at least 2 seeds")
    noise = task_noise(loaded.trials, chosen)
    per_trial = trial_overall_se(noise)
    return PilotNoise(
        results_dir=Path(results_dir), sigma_seed=sigma_seed, seed_df=df,
        sigma_eval=float(np.sqrt(np.mean(per_trial["eval_se"] ** 2))),
        eval_rows=float(noise["n"].median()) if not noise.empty else None,
        trials=len(trials), cells=int(trials["cell_id"].nunique()),
        guessed_tasks=int(per_trial["guessed_tasks"].sum()))


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass
class PowerPlan:
    """What the planned design can detect, given the pilot's noise."""

    noise: PilotNoise
    trials: int
    cells: int
    seeds: int  # planned seeds per cell (the most of any cell)
    sigma_eval: float  # rescaled to the planned held-out rows
    se: float  # SE of the interaction under the planned design, both noises
    df: int
    mde: float  # smallest interaction detected with 80% power
    floor: float  # the same with infinitely many seeds
    se_seed: float  # seed noise only: the report's test, which holds the held-out rows fixed
    mde_seed: float
    effect: float | None = None
    power_for_effect: float | None = None
    seeds_for_effect: int | None = None
    seeds_for_effect_seed: int | None = None  # seed noise only
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON (NaN -> None), for `harness plan --pilot ... --json`."""
        out = asdict(self)
        out["noise"]["results_dir"] = str(self.noise.results_dir)
        return {k: _json_value(v) for k, v in out.items()}


def _json_value(value):
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plan_power(planned: pd.DataFrame, noise: PilotNoise, diversity: str = "n_domains",
               capacity: str = "lora_rank", log2: bool = True, effect: float | None = None,
               eval_rows: float | None = None) -> PowerPlan:
    """planned: one row per planned trial with `cell_id`, `seed` and the two factor columns."""
    for name in (diversity, capacity, "cell_id"):
        if name not in planned.columns:
            raise InputError(f"the planned trials have no {name!r} factor; choose another column")
    design = frame_design(planned, diversity, capacity, log2)
    cells = planned["cell_id"].tolist()
    scale = noise.eval_rows / eval_rows if eval_rows and noise.eval_rows else 1.0
    sigma_eval = noise.sigma_eval * math.sqrt(scale)  # SE^2 goes as 1 / rows
    se = interaction_se(design, cells, noise.sigma_seed, sigma_eval)
    se_seed = interaction_se(design, cells, noise.sigma_seed, 0.0)
    df = len(planned) - design.shape[1]
    seeds = int(planned.groupby("cell_id").size().max())
    plan = PowerPlan(noise=noise, trials=len(planned), cells=len(set(cells)), seeds=seeds,
                     sigma_eval=sigma_eval, se=se, df=df, mde=minimum_detectable(se, df),
                     floor=eval_floor(design, cells, sigma_eval) if math.isfinite(se) else math.nan,
                     se_seed=se_seed, mde_seed=minimum_detectable(se_seed, df))
    if effect is not None:
        plan.effect = effect
        plan.power_for_effect = power_at(effect, se, df)
        if math.isfinite(se):
            plan.seeds_for_effect = seeds_needed(design, cells, noise.sigma_seed, sigma_eval,
                                                 effect)
            plan.seeds_for_effect_seed = seeds_needed(design, cells, noise.sigma_seed, 0.0,
                                                      effect)
    plan.notes = _plan_notes(plan, planned, diversity, capacity)
    return plan


def _plan_notes(plan: PowerPlan, planned: pd.DataFrame, diversity: str, capacity: str) -> list[str]:
    notes = []
    if not math.isfinite(plan.se):
        notes.append(f"the planned design cannot estimate the interaction: {diversity} and "
                     f"{capacity} each need at least 2 levels")
    elif plan.df < 1:
        notes.append(f"{plan.trials} planned trials leave no residual degrees of freedom for a "
                     "4-parameter model: add seeds")
    if planned.groupby("cell_id").size().nunique() > 1:
        notes.append("unbalanced plan: seeds-needed assumes every cell gets the same count")
    if plan.noise.seed_df < 10:
        notes.append(f"the pilot's seed noise rests on {plan.noise.seed_df} degrees of freedom: "
                     "treat these numbers as rough (a bigger pilot narrows them)")
    if plan.noise.guessed_tasks:
        notes.append(f"{plan.noise.guessed_tasks} pilot task scores had no SE (pooled NER without "
                     "a recorded se) and were counted at the worst case, 0.5/sqrt(n)")
    return notes


def format_plan(plan: PowerPlan, diversity: str, capacity: str, log2: bool = True) -> list[str]:
    """The power report as lines for the terminal."""
    n = plan.noise
    unit = f"per unit of {diversity} per doubling of {capacity}" if log2 else \
        f"per unit of {diversity} per unit of {capacity}"
    lines = [
        f"power (pilot {n.results_dir}: {n.trials} trials in {n.cells} cells):",
        f"  seed-to-seed noise   sd {n.sigma_seed:.4f} (pooled within cells, df {n.seed_df})",
        f"  evaluation noise     sd {plan.sigma_eval:.4f} per trial (pilot {n.sigma_eval:.4f} at "
        f"{_rows(n.eval_rows)} held-out rows per task)",
        f"  planned design       {plan.trials} trials = {plan.cells} cells x {plan.seeds} seed(s); "
        f"interaction SE {_num(plan.se)}, df {plan.df}",
        f"  detectable at 80% power (two-sided 5%): |interaction| >= {_num(plan.mde)} {unit}",
        f"    with unlimited seeds: >= {_num(plan.floor)} (evaluation noise alone; more held-out "
        "rows lower it)",
        f"    seed noise only (the report's test, held-out rows fixed): >= {_num(plan.mde_seed)}",
    ]
    if plan.effect is not None:
        lines.append(f"  effect {plan.effect:g}: power {_pct(plan.power_for_effect)} as planned; "
                     + _seeds_text(plan))
        lines.append("    seed noise only: " + _seeds_only_text(plan))
    return lines + [f"  note: {note}" for note in plan.notes]


def _seeds_text(plan: PowerPlan) -> str:
    if plan.seeds_for_effect is not None:
        return f"needs {plan.seeds_for_effect} seed(s) per cell for 80% power"
    if math.isfinite(plan.floor) and abs(plan.effect) < plan.floor:
        return ("no number of seeds reaches 80% power: it is below the evaluation-noise floor; "
                "raise eval.per_subtask")
    return f"not reached within {MAX_SEEDS} seeds per cell"


def _seeds_only_text(plan: PowerPlan) -> str:
    if plan.seeds_for_effect_seed is None:
        return f"not reached within {MAX_SEEDS} seeds per cell"
    return f"needs {plan.seeds_for_effect_seed} seed(s) per cell"


def _num(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else "n/a"


def _pct(x: float | None) -> str:
    return f"{100 * x:.0f}%" if x is not None and math.isfinite(x) else "n/a"


def _rows(x: float | None) -> str:
    return f"{x:g}" if x else "?"
