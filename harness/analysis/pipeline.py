"""compute_analysis: records -> every table, fit and warning the report needs; no files written.

Kept apart from writing so the notebook can walk the same steps inline, and tests can check numbers
without touching the disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pandas.api.types import is_numeric_dtype

from harness.analysis import load, noise
from harness.analysis.calibration import PermutationResult, permutation_fpr
from harness.analysis.family import FamilyComparison, compare_families, default_size, families
from harness.analysis.load import BUDGET_SIZE, FAMILY
from harness.analysis.stats import (InteractionFit, cell_means, design_notes, fit_interaction,
                                    marginal_gains, mean_ci)
from harness.analysis.tables import fmt_level
from harness.errors import InputError, unknown_name_message

# The CLI's --diversity choices; the library takes any numeric column of the trial table.
DIVERSITY_CHOICES = ("n_domains", "n_subtasks", "div_entropy")


@dataclass
class Analysis:
    """Everything derived from one sweep's records for one eval set."""

    loaded: load.LoadedSweep
    eval_set: str | None
    diversity: str
    capacity: str
    log2_capacity: bool
    trials: pd.DataFrame  # one row per successful trial: factors + overall `score`
    baseline: pd.DataFrame  # the same for baseline records
    tracks: pd.DataFrame  # trial x track
    tasks: pd.DataFrame  # trial x task
    baseline_tracks: pd.DataFrame
    baseline_tasks: pd.DataFrame
    cells: pd.DataFrame  # mean [CI] per (diversity, capacity)
    track_cells: pd.DataFrame  # mean [CI] per (track, diversity, capacity)
    fit: InteractionFit
    track_fits: dict[str, InteractionFit]
    gains: pd.DataFrame
    failed: pd.DataFrame
    versus_baseline: pd.DataFrame  # per eval set: base model vs trained
    warnings: list[str] = field(default_factory=list)
    families: FamilyComparison | None = None  # per capacity family, when by_family is on
    task_noise: pd.DataFrame = field(default_factory=pd.DataFrame)  # trial x task, with se and CI
    eval_se: pd.DataFrame = field(default_factory=pd.DataFrame)  # per trial: overall's eval SE
    calibration: PermutationResult | None = None  # the interaction test under permuted residuals
    format_floor: dict[str, float] = field(default_factory=dict)  # task -> a constant well-formed answer's score

    @property
    def sweep(self) -> str:
        return self.loaded.sweep

    @property
    def budget(self) -> dict:
        """The compute budget sweep.yaml declared: {'kind': 'epochs' | 'steps' | None, 'value'}.

        `train.epochs` set means steps followed each mixture's size; otherwise `train.steps` held
        in every cell (sweeps from before epochs existed are steps budgets).
        """
        train = self.loaded.spec.get("train") or {}
        if train.get("epochs") is not None:
            return {"kind": "epochs", "value": train["epochs"]}
        if train.get("steps") is not None:
            return {"kind": "steps", "value": train["steps"]}
        return {"kind": None, "value": None}

    @property
    def baseline_score(self) -> float | None:
        """Mean overall score of the base model on this eval set, or None without a baseline."""
        return float(self.baseline["score"].mean()) if not self.baseline.empty else None


def compute_analysis(results_dir: Path, *, eval_set: str | None = None,
                     diversity: str = "n_domains", capacity: str = "lora_rank",
                     log2_capacity: bool = True, by_family: bool | None = None,
                     family_size: str | None = None) -> Analysis:
    """Load results_dir and compute the whole analysis (see the module docstring of stats).

    by_family: fit the interaction per capacity family and test whether it differs (harness.analysis
    .family); None (the default) turns it on when the trials hold more than one family, so families
    are never pooled silently. family_size: the size column of those fits (default: budget_size
    when every trial was matched to a parameter budget, else `capacity`).
    """
    loaded = load.load_results(results_dir)
    chosen = load.choose_eval_set(loaded.trials + loaded.baselines, eval_set)
    trials = load.trial_table(loaded.trials, chosen)
    _check_column(trials, diversity, "diversity")
    _check_column(trials, capacity, "capacity", log2_capacity)
    tracks = load.track_table(loaded.trials, chosen)
    by = [diversity, capacity]
    analysis = Analysis(
        loaded=loaded, eval_set=chosen, diversity=diversity, capacity=capacity,
        log2_capacity=log2_capacity, trials=trials,
        baseline=load.trial_table(loaded.baselines, chosen), tracks=tracks,
        tasks=load.task_table(loaded.trials, chosen),
        baseline_tracks=load.track_table(loaded.baselines, chosen),
        baseline_tasks=load.task_table(loaded.baselines, chosen),
        cells=cell_means(trials, by),
        track_cells=cell_means(tracks, ["track", *by]),
        fit=fit_interaction(trials, diversity, capacity, log2_capacity),
        track_fits=_track_fits(tracks, diversity, capacity, log2_capacity),
        gains=marginal_gains(trials, diversity, capacity),
        failed=load.failed_table(loaded.trials),
        versus_baseline=versus_baseline(loaded, by),
        families=_family_comparison(trials, diversity, capacity, log2_capacity, by_family,
                                    family_size),
    )
    analysis.task_noise = noise.task_noise(loaded.trials, chosen)
    analysis.format_floor = format_floor_of(loaded.baselines, chosen)
    analysis.eval_se = noise.trial_overall_se(analysis.task_noise)
    if analysis.fit.estimable:
        analysis.calibration = permutation_fpr(trials, diversity, capacity, log2=log2_capacity,
                                               n_perm=CALIBRATION_PERMUTATIONS)
    analysis.warnings = _warnings(analysis)
    return analysis


# Residual permutations behind the report's calibration line: milliseconds with interaction_t.
CALIBRATION_PERMUTATIONS = 200


def _family_comparison(trials: pd.DataFrame, diversity: str, capacity: str, log2: bool,
                       by_family: bool | None, size: str | None) -> FamilyComparison | None:
    """Per-family fits when asked, or by default when more than one family is in the trials."""
    if by_family is False or (by_family is None and len(families(trials)) < 2):
        return None
    size = size or default_size(trials, capacity)
    _check_column(trials, size, "family size", log2)
    return compare_families(trials, diversity, size, log2)


# Why a capacity-like column cannot be used as it is, and what to use instead.
COLUMN_HINTS = {
    "capacity_budget": "it holds budget labels like 'r16'; use budget_size (the same budget as a "
                       "number)",
    "capacity": "it holds labels like 'mole-e4k2-r4'; use lora_rank or adapter_params, and "
                "--by-family to split families",
    FAMILY: "it is a category; use --by-family to fit the interaction per family",
    BUDGET_SIZE: "only trials of a sweep with capacity.match_params have a budget; use lora_rank "
                 "or adapter_params",
    "adapter_params": "their parameters were neither counted from the model shape nor measured; "
                      "use lora_rank",
}


def _check_column(trials: pd.DataFrame, name: str, role: str, log2: bool = False) -> None:
    """A clear InputError when a diversity or capacity column is absent, not numeric, missing in
    some records, not positive where it goes on a log2 scale, or budgets on two scales."""
    if trials.empty:
        return
    numeric = [c for c in trials.columns if is_numeric_dtype(trials[c])]
    hint = f": {COLUMN_HINTS[name]}" if name in COLUMN_HINTS else "; choose another"
    if name not in trials.columns:
        raise InputError(unknown_name_message(f"{role} column", name, numeric))
    missing = int(trials[name].isna().sum())
    if missing:
        raise InputError(f"{role} column {name!r} is missing in {missing} of {len(trials)} "
                         f"trials{hint}")
    if name not in numeric:
        raise InputError(f"{role} column {name!r} is not numeric{hint}")
    if log2 and (trials[name] <= 0).any():
        raise InputError(f"{role} column {name!r} is 0 or negative in some trials, so it has no "
                         "log2; choose another column (or log2_capacity=False)")
    if name == BUDGET_SIZE and len(load.budget_kinds(trials["capacity_budget"])) > 1:
        raise InputError(f"{role} column {name!r} mixes rank budgets ('r16') and parameter-count "
                         "budgets, which are not on one scale; use adapter_params")


def _track_fits(tracks: pd.DataFrame, diversity: str, capacity: str,
                log2: bool) -> dict[str, InteractionFit]:
    if tracks.empty:
        return {}
    return {track: fit_interaction(group, diversity, capacity, log2)
            for track, group in tracks.groupby("track", sort=True)}


def versus_baseline(loaded: load.LoadedSweep, by: list[str]) -> pd.DataFrame:
    """Per eval set: base model score, trained mean [CI], best cell, and cells above the base."""
    rows = []
    for name in load.eval_sets(loaded.trials + loaded.baselines):
        trials = load.trial_table(loaded.trials, name)
        base = load.trial_table(loaded.baselines, name)
        rows.append(_versus_row(name, trials, base, by))
    return pd.DataFrame(rows)


def _versus_row(name: str, trials: pd.DataFrame, base: pd.DataFrame, by: list[str]) -> dict:
    base_score = float(base["score"].mean()) if not base.empty else None
    row = {"eval_set": name, "baseline": base_score, "trials": len(trials)}
    if trials.empty or not set(by) <= set(trials.columns):
        return row
    row["mean"], row["ci_low"], row["ci_high"] = mean_ci(trials["score"])
    cells = cell_means(trials, by).sort_values("mean", ascending=False)
    best = cells.iloc[0]
    row.update(best_cell=", ".join(f"{k}={fmt_level(best[k])}" for k in by), best_mean=best["mean"],
               best_ci_low=best.ci_low, best_ci_high=best.ci_high, cells=len(cells))
    if base_score is not None:
        # A cell "beats" the base model when its whole CI is above it (its mean, with one seed).
        bound = cells["ci_low"].fillna(cells["mean"])
        row["cells_above"] = int((bound > base_score).sum())
    return row


def _warnings(analysis: Analysis) -> list[str]:
    """Loader problems, then what the design cannot support, then what is missing."""
    out = list(analysis.loaded.warnings)
    if not analysis.loaded.successful:
        out.append("no successful trials: only the run summary, baseline and failures are shown")
    elif analysis.trials.empty:
        out.append(f"no successful trial has scores on eval set {analysis.eval_set!r}")
    else:
        out.extend(design_notes(analysis.trials, analysis.diversity, analysis.capacity))
        out.extend(_pooling_notes(analysis.trials, [analysis.diversity, analysis.capacity]))
        out.extend(_family_notes(analysis))
    if not analysis.loaded.baselines:
        out.append("no baseline record (results/<sweep>/baseline/): cannot say whether training "
                   "beats the base model")
    return out


# Factors a cell may silently average over. Capacity keys are compared within one family (pooling
# families is its own note), so e.g. a mole and a lora trial at the same rank do not also read as
# "differ in capacity, adapter_params"; within a family they follow from rank or budget.
POOLABLE = ("domains", "subtasks", "n_domains", "n_subtasks", "volume", "lora_rank", "lora_alpha",
            "capacity", "adapter_params", "capacity_budget")


def _pooling_notes(trials: pd.DataFrame, by: list[str]) -> list[str]:
    """Say when an analysis cell averages over other factors the sweep varied (e.g. volume)."""
    notes = _family_pooling_note(trials, by)
    within = by + [FAMILY] if FAMILY in trials.columns and FAMILY not in by else by
    groups = trials.groupby(within, dropna=False)
    varied = [c for c in POOLABLE if c in trials.columns and c not in by
              and groups[c].nunique(dropna=False).max() > 1]
    if varied:
        notes.append(f"each ({', '.join(by)}) cell pools trials that differ in "
                     f"{', '.join(varied)}; its mean averages over them (the ablation tables "
                     "split some of these out)")
    return notes


def _family_pooling_note(trials: pd.DataFrame, by: list[str]) -> list[str]:
    """Different adapter families in one cell: its mean blends different kinds of capacity."""
    if FAMILY not in trials.columns or FAMILY in by:
        return []
    mixed = trials.groupby(by, dropna=False)[FAMILY].nunique()
    if mixed.max() < 2:
        return []
    return [f"{int((mixed > 1).sum())} of {len(mixed)} ({', '.join(by)}) cells pool trials of "
            f"different capacity families ({', '.join(families(trials))}); their means blend "
            "different adapters. The per-family section keeps them apart; capacity=adapter_params "
            "(or budget_size) separates them in these cells where their sizes differ"]


def _family_notes(analysis: Analysis) -> list[str]:
    """The headline fit pools families; say so, and say when they differ."""
    names = families(analysis.trials)
    fam = analysis.families
    notes = []
    if len(names) > 1:
        where = ("'Interaction by capacity family' fits each on its own" if fam is not None
                 else "rerun with --by-family (by_family=True) to fit each on its own")
        notes.append(f"the trials span {len(names)} capacity families ({', '.join(names)}): the "
                     f"headline interaction pools them into one fit; {where}")
    if fam is not None and fam.differs:
        p = fam.omnibus["p_value"]
        notes.append(f"the diversity x capacity interaction differs between capacity families "
                     f"(F-test of {analysis.diversity}:{fam.shown_size}:C({FAMILY}), p = {p:.3g}): "
                     "read the per-family estimates, not the pooled one")
    if fam is not None and fam.size != analysis.capacity:
        by = [FAMILY, analysis.diversity, fam.size]
        notes.extend(n for n in _pooling_notes(analysis.trials, by) if n not in notes)
    return notes


def format_floor_of(baselines: list, eval_set: str) -> dict[str, float]:
    """task -> what the answer format alone scores (the baseline record's meta.format_floor)."""
    for record in baselines:
        floor = (record.meta or {}).get("format_floor", {}).get(eval_set)
        if floor:
            return dict(floor)
    return {}
