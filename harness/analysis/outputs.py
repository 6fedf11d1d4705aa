"""analyze(): compute the analysis and write report.md, summary.json and figures/*.png.

    from harness.analysis import analyze
    summary = analyze(Path("results/smoke"), diversity="n_domains")
    print(summary.report_path)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis import plots
from harness.analysis.compare import compare_cells
from harness.analysis.pipeline import Analysis, compute_analysis
from harness.analysis.report import render_report
from harness.results import atomic_write_text


@dataclass
class AnalysisSummary:
    """What analyze() wrote and its headline numbers, for the CLI to print."""

    results_dir: Path
    sweep: str
    eval_set: str | None
    n_trials: int
    n_successful: int
    n_failed: int
    n_baseline: int
    interaction: dict[str, Any]
    report_path: Path
    summary_path: Path
    figures: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    compare_sweep: str | None = None
    families: dict[str, Any] | None = None  # the per-family fits and test, when computed


def analyze(results_dir: Path, *, compare: Path | None = None, eval_set: str | None = None,
            diversity: str = "n_domains", capacity: str = "lora_rank",
            log2_capacity: bool = True, by_family: bool | None = None,
            family_size: str | None = None) -> AnalysisSummary:
    """Analyse one sweep (optionally against another) and write the report into results_dir.

    Raises InputError when results_dir holds no readable records; every lesser problem (failed
    trials, foreign or unreadable records, a design too small for a claim) becomes a warning.
    by_family and family_size: see compute_analysis (per-capacity-family fits).
    """
    results_dir = Path(results_dir)
    options = dict(eval_set=eval_set, diversity=diversity, capacity=capacity,
                   log2_capacity=log2_capacity, by_family=by_family, family_size=family_size)
    a = compute_analysis(results_dir, **options)
    other = None
    if compare is not None:
        other = compute_analysis(Path(compare), **_compare_options(a, compare, options))
    figures = write_figures(a, results_dir / "figures")
    relative = {name: f"figures/{path.name}" for name, path in figures.items()}
    report_path = results_dir / "report.md"
    atomic_write_text(report_path, render_report(a, relative, other))
    summary_path = results_dir / "summary.json"
    atomic_write_text(summary_path, json.dumps(summary_dict(a, other, relative), indent=2))
    return AnalysisSummary(
        results_dir=results_dir, sweep=a.sweep, eval_set=a.eval_set,
        n_trials=len(a.loaded.trials), n_successful=len(a.loaded.successful),
        n_failed=len(a.loaded.failed), n_baseline=len(a.loaded.baselines),
        interaction=_clean(a.fit.to_dict()), report_path=report_path, summary_path=summary_path,
        figures=list(figures.values()), warnings=list(a.warnings),
        compare_sweep=other.sweep if other else None,
        families=_clean(a.families.to_dict()) if a.families is not None else None)


def _compare_options(a: Analysis, compare: Path, options: dict) -> dict:
    """Analyse the other sweep on the same eval set when it has one, so the cells line up."""
    from harness.analysis.load import eval_sets, load_results

    loaded = load_results(Path(compare))
    names = eval_sets(loaded.trials + loaded.baselines)
    same = a.eval_set if a.eval_set in names else None
    return {**options, "eval_set": same}


def write_figures(a: Analysis, folder: Path) -> dict[str, Path]:
    """Draw each figure the data allows; returns name -> written path."""
    figures: dict[str, Any] = {}
    if not a.cells.empty:
        figures["interaction"] = plots.interaction_figure(a.cells, a.diversity, a.capacity,
                                                          a.baseline_score)
        figures["heatmap"] = plots.heatmap_figure(a.cells, a.diversity, a.capacity)
    if not a.track_cells.empty:
        figures["tracks"] = plots.track_panels_figure(a.track_cells, a.diversity, a.capacity)
    if a.families is not None and not a.families.cells.empty:
        figures["families"] = plots.family_panels_figure(a.families.cells, a.diversity,
                                                         a.families.size)
    if plots.has_curves(a.loaded.trials, a.diversity, a.capacity):
        figures["training_curves"] = plots.training_curves_figure(a.loaded.trials, a.diversity,
                                                                  a.capacity)
    return {name: plots.save_figure(fig, folder / f"{name}.png") for name, fig in figures.items()}


# ---------------------------------------------------------------------------------------------
# summary.json


def summary_dict(a: Analysis, other: Analysis | None = None,
                 figures: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything in the report as plain JSON (NaN -> null), for scripts and dashboards."""
    out = {
        "sweep": a.sweep, "results_dir": str(a.loaded.results_dir), "eval_set": a.eval_set,
        "diversity": a.diversity, "capacity": a.capacity, "log2_capacity": a.log2_capacity,
        "counts": {"trials": len(a.loaded.trials), "successful": len(a.loaded.successful),
                   "failed": len(a.loaded.failed), "baseline": len(a.loaded.baselines),
                   "cells": len({r.run.cell_id for r in a.loaded.trials})},
        "baseline_score": a.baseline_score,
        "versus_baseline": _records(a.versus_baseline),
        "interaction": a.fit.to_dict(),
        "track_interactions": {t: f.to_dict() for t, f in a.track_fits.items()},
        "family_interactions": a.families.to_dict() if a.families is not None else None,
        "cells": _records(a.cells), "track_cells": _records(a.track_cells),
        "marginal_gains": _records(a.gains),
        "trials": _records(a.trials), "failed": _records(a.failed),
        "warnings": list(a.warnings), "figures": dict(figures or {}),
        "compute_budget": a.budget,
        "evaluation_noise": {"trials": _records(a.eval_se),
                             "tasks": _records(a.task_noise[_NOISE_COLUMNS])
                             if not a.task_noise.empty else []},
        "calibration": a.calibration.to_dict() if a.calibration is not None else None,
    }
    if other is not None:
        out["compare"] = {"sweep": other.sweep, "results_dir": str(other.loaded.results_dir),
                          "interaction": other.fit.to_dict(),
                          "cells": _records(compare_cells(a, other))}
    return _clean(out)


# Per trial x task: enough to rebuild the report's noise statements without the records.
_NOISE_COLUMNS = ["trial_id", "task", "track", "metric", "n", "score", "se", "se_source",
                  "ci_low", "ci_high"]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict("records") if not frame.empty else []


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value
