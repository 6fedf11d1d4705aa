"""Two sweeps side by side: the same headline cells, each sweep's mean, and their difference.

Cells are matched on their (diversity, capacity) levels, not on cell_id: a cell id hashes the whole
trial spec, so two sweeps that differ in anything (base model, data, steps) never share one.
"""

from __future__ import annotations

import pandas as pd

from harness.analysis.pipeline import Analysis
from harness.analysis.stats import diff_ci
from harness.analysis.tables import fmt, fmt_ci, fmt_level, markdown_table


def compare_cells(a: Analysis, b: Analysis) -> pd.DataFrame:
    """One row per cell in either sweep: both means with CIs and a - b with a Welch CI."""
    by = [a.diversity, a.capacity]
    merged = a.cells.merge(b.cells, on=by, how="outer", suffixes=("_a", "_b")).sort_values(by)
    diffs = [_cell_diff(a, b, tuple(key)) for key in merged[by].itertuples(index=False)]
    merged[["diff", "diff_ci_low", "diff_ci_high"]] = pd.DataFrame(diffs, index=merged.index)
    return merged.reset_index(drop=True)


def _cell_diff(a: Analysis, b: Analysis, key: tuple) -> tuple[float, float, float]:
    def scores(x: Analysis) -> pd.Series:
        if x.trials.empty:
            return x.trials.get("score", pd.Series(dtype=float))
        mask = (x.trials[x.diversity] == key[0]) & (x.trials[x.capacity] == key[1])
        return x.trials.loc[mask, "score"]

    return diff_ci(scores(a), scores(b))


def comparison_markdown(a: Analysis, b: Analysis) -> str:
    """The side-by-side headline table, the baselines and the two interaction estimates."""
    if a.diversity != b.diversity or a.capacity != b.capacity:
        return "_The two analyses use different diversity or capacity columns; not comparable._"
    table = compare_cells(a, b)
    if table.empty:
        return "_Neither sweep has successful trials to compare._"
    headers = [a.diversity, a.capacity, f"A: {a.sweep}", f"B: {b.sweep}", "A − B [95% Welch CI]"]
    rows = [[fmt_level(r[a.diversity]), fmt_level(r[a.capacity]), _side(r, "a"), _side(r, "b"),
             fmt_ci(r["diff"], r.diff_ci_low, r.diff_ci_high)] for _, r in table.iterrows()]
    shared = int(table[["mean_a", "mean_b"]].notna().all(axis=1).sum())
    lines = [
        f"A = `{a.sweep}` ({a.loaded.results_dir}), B = `{b.sweep}` ({b.loaded.results_dir}); "
        f"{shared} shared cells. Cells present in only one sweep show a dash for the other.",
        "",
        markdown_table(headers, rows),
        "",
        markdown_table(["", "A", "B"], [
            ["base model", fmt(a.baseline_score), fmt(b.baseline_score)],
            ["trained trials", str(len(a.trials)), str(len(b.trials))],
            ["interaction", _fit_text(a), _fit_text(b)],
        ]),
    ]
    if shared:
        diff = table["diff"].dropna()
        lines += ["", f"Mean difference over shared cells (A − B): {diff.mean():+.3f}."]
    return "\n".join(lines)


def _side(row: pd.Series, suffix: str) -> str:
    n = row[f"n_{suffix}"]
    n = None if pd.isna(n) else int(n)
    return fmt_ci(row[f"mean_{suffix}"], row[f"ci_low_{suffix}"], row[f"ci_high_{suffix}"], n)


def _fit_text(x: Analysis) -> str:
    if not x.fit.estimable:
        return f"not estimable ({x.fit.reason})"
    return f"{fmt_ci(x.fit.estimate, x.fit.ci_low, x.fit.ci_high)}, p={x.fit.p_value:.3g}"
