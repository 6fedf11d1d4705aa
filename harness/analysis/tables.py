"""Paper-style markdown tables: capability ablation, task ablation, LoRA rank, breakdowns, families.

Each builder takes the per-trial table (one row per successful trial, overall score in `score`) and
returns markdown, so the report and the notebook print the same thing. Every mean carries its 95%
t-interval over seeds, or says that it has none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from harness.analysis.family import FamilyComparison, residual_sd
from harness.analysis.load import FAMILY
from harness.analysis.noise import difference_noise, within_noise
from harness.analysis.stats import InteractionFit, cell_means, mean_ci

DASH = "—"


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table; blanks (None, nan) become a dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def fmt_level(x: Any) -> str:
    """A factor level: 4.0 -> '4' (pandas turns int levels into floats in mixed rows)."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def fmt_p(p: Any) -> str:
    """A p-value: three significant digits, so 4.7e-20 does not print as 0.000."""
    return DASH if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.3g}"


def fmt_ci(mean: float, low: float, high: float, n: int | None = None) -> str:
    """'0.712 [0.701, 0.723]', or '0.712 (n=1, no CI)' when there is no variance to go on."""
    if mean is None or math.isnan(mean):
        return DASH
    if math.isnan(low):
        return f"{mean:.3f} (n={n}, no CI)" if n is not None else f"{mean:.3f} (no CI)"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are formatted with fmt unless already strings."""
    def cell(c: Any) -> str:
        text = c if isinstance(c, str) else fmt(c)
        return text.replace("|", "\\|").replace("\n", " ")  # a reason may hold either

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(cell(c) for c in cells) + " |"

    out = [line(headers), "| " + " | ".join("---" for _ in headers) + " |"]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def level_label(name: str, value: Any) -> str:
    """Column label for a capacity level: 'r=16' for LoRA rank, else 'name=value'."""
    return f"r={fmt_level(value)}" if name == "lora_rank" else f"{name}={fmt_level(value)}"


# ---------------------------------------------------------------------------------------------
# Ablation tables: one row per level of a factor, one column per capacity level, plus "all"


def ablation_table(trials: pd.DataFrame, row_keys: list[str], capacity: str,
                   baseline: float | None = None) -> str:
    """Rows = distinct values of row_keys; columns = capacity levels, then all capacities pooled."""
    if trials.empty:
        return "_No successful trials._"
    levels = sorted(trials[capacity].unique())
    cells = cell_means(trials, [*row_keys, capacity]).set_index([*row_keys, capacity])
    pooled = cell_means(trials, row_keys).set_index(row_keys)
    headers = [*row_keys, *(level_label(capacity, v) for v in levels), "all"]
    rows = []
    if baseline is not None:
        rows.append(["base model (no LoRA)", *[""] * (len(row_keys) - 1),
                     *[DASH] * len(levels), fmt(baseline)])
    for key, row in pooled.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        per_cap = [_cell_text(cells, (*key, v)) for v in levels]
        rows.append([*key, *per_cap, fmt_ci(row["mean"], row.ci_low, row.ci_high, row.n)])
    return markdown_table(headers, rows)


def _cell_text(cells: pd.DataFrame, key: tuple) -> str:
    if key not in cells.index:
        return DASH
    row = cells.loc[key]
    return fmt_ci(row["mean"], row.ci_low, row.ci_high, int(row.n))


def capability_table(trials: pd.DataFrame, capacity: str, baseline: float | None) -> str:
    """Capability ablation: rows as whole domains are added (ordered by n_domains)."""
    keys = [k for k in ("n_domains", "domains") if k in trials.columns]
    return ablation_table(trials, keys or ["cell_id"], capacity, baseline)


def task_ablation_table(trials: pd.DataFrame, capacity: str, baseline: float | None) -> str:
    """Task ablation: rows by the number of subtasks trained on."""
    keys = [k for k in ("n_subtasks",) if k in trials.columns]
    return ablation_table(trials, keys or ["cell_id"], capacity, baseline)


def rank_table(trials: pd.DataFrame, tracks: pd.DataFrame, capacity: str,
               baseline: dict[str, float] | None) -> str:
    """LoRA rank table: overall mean [CI] per capacity level, and each track's mean."""
    if trials.empty:
        return "_No successful trials._"
    track_names = sorted(tracks["track"].unique()) if not tracks.empty else []
    headers = [capacity, "trials", "overall", *(f"track {t}" for t in track_names)]
    rows = []
    if baseline:
        rows.append(["base model (no LoRA)", "", fmt(baseline.get("overall")),
                     *(fmt(baseline.get(f"track {t}")) for t in track_names)])
    for level, group in trials.groupby(capacity, sort=True):
        mean, low, high = mean_ci(group["score"])
        by_track = tracks[tracks[capacity] == level].groupby("track")["score"].mean()
        rows.append([level_label(capacity, level), len(group), fmt_ci(mean, low, high, len(group)),
                     *(fmt(by_track.get(t)) for t in track_names)])
    return markdown_table(headers, rows)


def frame_table(frame: pd.DataFrame, formats: dict[str, Any] | None = None) -> str:
    """Any small DataFrame as markdown (ANOVA, coefficients); formats maps column -> formatter."""
    formats = formats or {}
    rows = [[formats.get(c, fmt)(v) for c, v in zip(frame.columns, row)]
            for row in frame.itertuples(index=False)]
    return markdown_table([str(c) for c in frame.columns], rows)


def task_breakdown_table(tasks: pd.DataFrame, baseline_tasks: pd.DataFrame, diversity: str,
                         noise: pd.DataFrame | None = None, floor: dict[str, float] | None = None) -> str:
    """Per task: the base model, then the mean over trials per diversity level (all capacities).

    With `noise` (harness.analysis.noise.task_noise) each mean carries the evaluation noise of one
    trial's task score (± the mean 95% CI half-width over its trials), and a last column gives the
    change from the lowest to the highest level, marked when it is within the evaluation noise.
    """
    if tasks.empty:
        return "_No task scores._"
    levels = sorted(tasks[diversity].unique())
    means = tasks.groupby(["task", diversity])["score"].mean()
    base = (baseline_tasks.groupby("task")["score"].mean() if not baseline_tasks.empty
            else pd.Series(dtype=float))
    meta = tasks.drop_duplicates("task").set_index("task").sort_values(["track", "task"])
    with_noise = noise is not None and not noise.empty and len(levels) > 1
    headers = ["task", "track", "metric", "base", *(f"{diversity}={v}" for v in levels)]
    if not with_noise:
        rows = [[task, str(m.track), str(m.metric), fmt(base.get(task)),
                 *(fmt(means.get((task, v))) for v in levels)] for task, m in meta.iterrows()]
        return markdown_table(headers, rows)
    spread = _task_noise_by_level(noise, diversity)
    headers[3:3] = ["rows"]
    headers[5:5] = ["format floor"] if floor else []
    headers.append(f"{fmt_level(levels[-1])} − {fmt_level(levels[0])}")
    rows = [[task, str(m.track), str(m.metric), fmt_level(m.n), fmt(base.get(task)),
             *([fmt(floor.get(task))] if floor else []),
             *(_mean_pm(means.get((task, v)), spread, (task, v)) for v in levels),
             _change(means, spread, task, levels[0], levels[-1])]
            for task, m in meta.iterrows()]
    return markdown_table(headers, rows)


def _task_noise_by_level(noise: pd.DataFrame, diversity: str) -> pd.DataFrame:
    """Per (task, level): mean 95% half-width of one trial's task score, and its mean se."""
    frame = noise.assign(half=(noise["ci_high"] - noise["ci_low"]) / 2)
    return frame.groupby(["task", diversity]).agg(half=("half", "mean"), se=("se", "mean"))


def _mean_pm(mean: Any, spread: pd.DataFrame, key: tuple) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return DASH
    half = spread["half"].get(key, math.nan)
    return f"{mean:.3f} ±{half:.3f}" if not math.isnan(half) else f"{mean:.3f} (± unknown)"


def _change(means: pd.Series, spread: pd.DataFrame, task: str, low: Any, high: Any) -> str:
    """'+0.125' or '+0.031 (within eval noise ±0.27)' (harness.analysis.noise.difference_noise)."""
    a, b = means.get((task, high)), means.get((task, low))
    if a is None or b is None:
        return DASH
    noise = difference_noise(spread["se"].get((task, high), math.nan),
                             spread["se"].get((task, low), math.nan))
    if math.isnan(noise):
        return f"{a - b:+.3f} (eval noise unknown)"
    return f"{a - b:+.3f}" + (f" (within eval noise ±{noise:.3f})" if within_noise(a - b, noise)
                              else "")


# ---------------------------------------------------------------------------------------------
# Capacity families


def family_table(comparison: FamilyComparison) -> str:
    """One row per capacity family: its own interaction [95% CI], and its difference from the
    reference family (plain LoRA when present) with a Welch 95% CI."""
    if not comparison.fits:
        return "_No successful trials._"
    diffs = comparison.differences.set_index("family") if not comparison.differences.empty else None
    unit = "doubling" if comparison.log2 else "unit"
    headers = ["family", "trials", f"{comparison.size} levels",
               f"interaction per {unit} [95% CI]", "p", "residual SD",
               f"− {comparison.reference or 'reference'} [95% Welch CI]", "p (difference)"]
    rows = [[name, str(comparison.trials.get(name, 0)), _size_levels(comparison, name),
             *_fit_cells(fit), *_diff_cells(diffs, name, comparison.reference)]
            for name, fit in comparison.fits.items()]
    return markdown_table(headers, rows)


def _size_levels(comparison: FamilyComparison, name: str) -> str:
    cells = comparison.cells
    if cells.empty:
        return DASH
    levels = sorted(cells.loc[cells[FAMILY] == name, comparison.size].unique())
    return ", ".join(fmt_level(v) for v in levels) or DASH


def _fit_cells(fit: InteractionFit) -> list[str]:
    if not fit.estimable:
        return [f"not estimable: {fit.reason}", DASH, DASH]
    return [signed_ci(fit.estimate, fit.ci_low, fit.ci_high), fmt_p(fit.p_value),
            fmt(residual_sd(fit), 4)]


def _diff_cells(diffs: pd.DataFrame | None, name: str, reference: str | None) -> list[str]:
    if name == reference:
        return ["(reference)", DASH]
    if diffs is None or name not in diffs.index:
        return [DASH, DASH]
    row = diffs.loc[name]
    return [signed_ci(row["diff"], row.ci_low, row.ci_high), fmt_p(row.p_value)]


def signed_ci(estimate: float, low: float, high: float) -> str:
    """'+0.0301 [+0.0254, +0.0348]': interaction slopes are small and their sign is the point."""
    if math.isnan(low):
        return f"{estimate:+.4f} (no CI)"
    return f"{estimate:+.4f} [{low:+.4f}, {high:+.4f}]"
