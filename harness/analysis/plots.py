"""Figures for the report and notebook, drawn on matplotlib's Agg canvas.

We build `Figure` objects directly with an Agg canvas instead of going through pyplot: no global
backend state is touched (so a notebook's inline backend keeps working), nothing needs a display,
and figures are freed with their last reference. Each function returns the Figure; `save_figure`
writes the PNG.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.analysis.load import FAMILY, record_row
from harness.analysis.tables import level_label
from harness.results import TrialRecord, atomic_write

DPI = 120  # sharp enough for a README, small enough to commit
TITLE_WIDTH = 34  # characters per panel-title line: two 4-inch panels side by side stay apart


def new_figure(width: float = 6.4, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))  # a full disk leaves no half PNG
    return path


def _interaction_lines(ax, cells: pd.DataFrame, diversity: str, capacity: str) -> None:
    """One line per capacity level, score against diversity, with its CI band where there is one."""
    for level, group in cells.groupby(capacity, sort=True):
        group = group.sort_values(diversity)
        x, y = group[diversity].to_numpy(float), group["mean"].to_numpy(float)
        (line,) = ax.plot(x, y, marker="o", label=level_label(capacity, level))
        low, high = group["ci_low"].to_numpy(float), group["ci_high"].to_numpy(float)
        if np.isfinite(low).any():
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
    levels = np.sort(cells[diversity].unique().astype(float))
    if len(levels) <= 12 and np.all(levels == np.round(levels)):  # counts: integer ticks only
        ax.set_xticks(levels, [str(int(v)) for v in levels])
    ax.set_xlabel(diversity)
    ax.set_ylabel("score")


def interaction_figure(cells: pd.DataFrame, diversity: str, capacity: str,
                       baseline: float | None = None, title: str = "") -> Figure:
    """Cell means vs diversity, one line per capacity; the base model as a dashed line."""
    fig = new_figure()
    ax = fig.add_subplot()
    _interaction_lines(ax, cells, diversity, capacity)
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", label="base model")
    ax.set_title(title or f"Overall score by {diversity} and {capacity} (95% CI)")
    ax.legend(title=capacity, fontsize="small")
    return fig


def heatmap_figure(cells: pd.DataFrame, diversity: str, capacity: str) -> Figure:
    """Cell means as a diversity x capacity grid, annotated with the values."""
    grid = cells.pivot_table(index=capacity, columns=diversity, values="mean")
    fig = new_figure(1.6 + 1.1 * grid.shape[1], 1.4 + 0.7 * grid.shape[0])
    ax = fig.add_subplot()
    image = ax.imshow(grid.to_numpy(float), cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [level_label(capacity, v) for v in grid.index])
    for (i, j), value in np.ndenumerate(grid.to_numpy(float)):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xlabel(diversity)
    ax.set_ylabel(capacity)
    fig.colorbar(image, ax=ax, label="mean score")
    return fig


def panels_figure(cells: pd.DataFrame, panel: str, diversity: str, capacity: str,
                  title: str = "{panel} {value}", sharey: bool = False) -> Figure:
    """One interaction panel per level of `panel` (a track, a capacity family), two to a row."""
    values = sorted(cells[panel].unique(), key=str)
    prefix, names = shared_prefix([str(v) for v in values])
    cols = min(len(values), 2)
    rows = -(-len(values) // cols)
    fig = new_figure(4.0 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=sharey)
    for ax, value, name in zip(axes.flat, values, names):
        _interaction_lines(ax, cells[cells[panel] == value], diversity, capacity)
        ax.set_title(textwrap.fill(title.format(panel=panel, value=name), TITLE_WIDTH),
                     fontsize="medium")
    if prefix:
        fig.suptitle(f"{panel}: {prefix}…")
    for ax in list(axes.flat)[len(values):]:
        ax.set_visible(False)
    axes.flat[0].legend(title=capacity, fontsize="small")
    return fig


def shared_prefix(names: list[str]) -> tuple[str, list[str]]:
    """('amazon-kdd-cup-24-', the names without it) when every name shares a prefix that ends at a
    '-', '_', ' ' or '/' and leaves each name something; ('', names) otherwise. Long track names
    differ only at their ends, and their panel titles would run into each other."""
    if len(names) < 2:
        return "", names
    common = os.path.commonprefix(names)
    cut = max(common.rfind(sep) for sep in "-_ /") + 1
    if cut == 0 or any(len(n) == cut for n in names):
        return "", names
    return common[:cut], [n[cut:] for n in names]


def track_panels_figure(track_cells: pd.DataFrame, diversity: str, capacity: str) -> Figure:
    """One interaction panel per track, so a track that drives (or hides) the effect shows."""
    return panels_figure(track_cells, "track", diversity, capacity, "track {value}")


def family_panels_figure(family_cells: pd.DataFrame, diversity: str, size: str) -> Figure:
    """One interaction panel per capacity family on a shared score axis: slopes compare by eye."""
    return panels_figure(family_cells, FAMILY, diversity, size, "{value}", sharey=True)


def training_curves_figure(records: list[TrialRecord], diversity: str, capacity: str) -> Figure:
    """Training loss against step, one panel per diversity level, coloured by capacity.

    Failed trials' partial curves are drawn dashed: a diverging loss is often why they failed.
    """
    curves = _curve_rows(records, diversity, capacity)
    panels = sorted({row[0] for row in curves})
    levels = sorted({row[1] for row in curves})
    colours = {c: f"C{i % 10}" for i, c in enumerate(levels)}
    fig = new_figure(3.6 * max(len(panels), 1), 3.2)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False, sharey=True)[0]
    for ax, panel in zip(axes, panels):
        for d, c, curve, ok in curves:
            if d == panel:  # failed trials' partial curves dashed
                ax.plot(*zip(*curve), color=colours[c], alpha=0.6, linewidth=1,
                        linestyle="-" if ok else "--")
        ax.set_title(f"{diversity}={panel}")
        ax.set_xlabel("step")
    axes[0].set_ylabel("train loss")
    for c in levels:
        axes[-1].plot([], [], color=colours[c], label=level_label(capacity, c))
    axes[-1].legend(fontsize="small")
    return fig


def has_curves(records: list[TrialRecord], diversity: str, capacity: str) -> bool:
    """Whether any record carries a loss curve that can be placed on the figure."""
    return bool(_curve_rows(records, diversity, capacity))


def _curve_rows(records: list[TrialRecord], diversity: str, capacity: str) -> list[tuple]:
    # Diversity may be a factor (n_domains) or a data measure (div_entropy).
    rows = []
    for record in records:
        if not record.train.loss_curve:
            continue
        values = record_row(record)  # factors (capacity keys filled), div_*, train columns
        if values.get(diversity) is not None and values.get(capacity) is not None:
            rows.append((values[diversity], values[capacity], record.train.loss_curve, record.ok))
    return rows
