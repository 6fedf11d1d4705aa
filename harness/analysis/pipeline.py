"""compute_analysis: records -> every table, fit and warning the report needs; no files written.

Kept apart from writing so the notebook can walk the same steps inline, and tests can check numbers
without touching the disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pandas.api.types import is_numeric_dtype

from harness.analysis import load
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

    @property
    def sweep(self) -> str:
        return self.loaded.sweep

    @property
    def baseline_score(self) -> float | None:
        """Mean overall score of the base model on this eval set, or None without a baseline."""
        return float(self.baseline["score"].mean()) if not self.baseline.empty else None


def compute_analysis(results_dir: Path, *, eval_set: str | None = None,
                     diversity: str = "n_domains", capacity: str = "lora_rank",
                     log2_capacity: bool = True) -> Analysis:
    """Load results_dir and compute the whole analysis (see the module docstring of stats)."""
    loaded = load.load_sweep(results_dir)
    chosen = load.choose_eval_set(loaded.trials + loaded.baselines, eval_set)
    trials = load.trial_table(loaded.trials, chosen)
    _check_column(trials, diversity, "diversity")
    _check_column(trials, capacity, "capacity")
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
    )
    analysis.warnings = _warnings(analysis)
    return analysis


def _check_column(trials: pd.DataFrame, name: str, role: str) -> None:
    """A clear InputError when the diversity or capacity column is absent or not numeric."""
    if trials.empty:
        return
    numeric = [c for c in trials.columns if is_numeric_dtype(trials[c])]
    if name not in numeric:
        raise InputError(unknown_name_message(f"{role} column", name, numeric))
    if trials[name].isna().any():
        raise InputError(f"{role} column {name!r} is missing in some records; choose another")


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
    if not analysis.loaded.baselines:
        out.append("no baseline record (results/<sweep>/baseline/): cannot say whether training "
                   "beats the base model")
    return out


POOLABLE = ("domains", "subtasks", "n_domains", "n_subtasks", "volume", "lora_rank", "lora_alpha")


def _pooling_notes(trials: pd.DataFrame, by: list[str]) -> list[str]:
    """Say when an analysis cell averages over other factors the sweep varied (e.g. volume)."""
    groups = trials.groupby(by)
    varied = [c for c in POOLABLE if c in trials.columns and c not in by
              and groups[c].nunique(dropna=False).max() > 1]
    if not varied:
        return []
    return [f"each ({', '.join(by)}) cell pools trials that differ in {', '.join(varied)}; "
            "its mean averages over them (the ablation tables split some of these out)"]
