"""Evaluation noise: how far a score could move with another draw of held-out rows.

Seed-to-seed CIs treat the held-out rows as fixed. Each task is judged on n rows, so its score has a
standard error of its own: the record's `se` (and `ci95`) when the evaluator wrote them, else a
conservative bound. A task score that is the mean of per-row values in [0, 1] has variance at most
s(1 - s) / n (a [0, 1] variable with mean s has variance at most s(1 - s), the Bernoulli case), so

    se <= sqrt(s (1 - s) / n)

with s held at least 1/(2n) from 0 and 1, so that a task where every row scored 0 is not called
noiseless. Pooled NER micro-F1 is not a row mean: without a recorded SE it is "unknown".

    noise = task_noise(records, "synthetic-heldout")   # one row per trial x task, with se
    overall_se(noise[noise.trial_id == tid])            # the trial's overall score's eval SE
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.load import record_row
from harness.results import TrialRecord

Z95 = 1.959963984540054  # two-sided 95% normal quantile
# Task scores that are means of per-row values in [0, 1] (harness.evaluate.metrics, aggregation
# "mean"); "micro f1" is pooled over the task, so the bound does not apply to it.
ROW_MEAN_METRICS = frozenset({"accuracy", "hit rate@3", "ndcg", "rougel", "bleu", "jp-bleu",
                              "sent-transformer", "multilingual-sent-transformer"})
SOURCES = ("record", "bound", "unknown")  # where a task's se came from


def bounded_se(score: float, n: int) -> float:
    """The largest SE a mean of n values in [0, 1] with mean `score` can have (module docstring)."""
    if not n or n < 1:
        return math.nan
    s = min(max(float(score), 0.5 / n), 1 - 0.5 / n)
    return math.sqrt(s * (1 - s) / n)


def is_row_mean(metric: str) -> bool:
    """Whether the bound applies: every part of a mixed label like 'bleu/jp-bleu' is a row mean."""
    parts = str(metric).split("/")
    return all(p.strip() in ROW_MEAN_METRICS for p in parts)


def task_se(score: float, metric: str, n: int, recorded: Any = None) -> tuple[float, str]:
    """(se, source): the recorded SE when there is one, else the bound, else (nan, 'unknown').

    A recorded SE of 0 on a row mean (every row scored alike, e.g. 0 of 16 right) says the score
    cannot move, which n rows cannot show; the bound stands in for it.
    """
    zero_on_row_mean = _finite(recorded) and float(recorded) == 0 and is_row_mean(metric)
    if recorded is not None and _finite(recorded) and not zero_on_row_mean:
        return float(recorded), "record"
    if is_row_mean(metric):
        return bounded_se(score, n), "bound"
    return math.nan, "unknown"


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def task_noise(records: list[TrialRecord], eval_set: str | None) -> pd.DataFrame:
    """One row per successful record x task on eval_set: factors, score, n, se, ci_low/high, source.

    The CI is the record's ci95 when present, else score +- 1.96 se clipped to [0, 1].
    """
    rows = []
    for record in records:
        result = record.eval.get(eval_set) if record.ok and eval_set else None
        if result is None:
            continue
        base = record_row(record)
        for task, ts in result.tasks.items():
            rows.append({**base, "task": task, "track": str(ts.track), "metric": ts.metric,
                         "n": ts.n, "score": float(ts.score), **_task_interval(ts)})
    return pd.DataFrame(rows)


def _task_interval(ts: Any) -> dict[str, Any]:
    """se, source and 95% CI of one TaskResult (records keep unknown keys, so se may be there)."""
    se, source = task_se(ts.score, ts.metric, ts.n, getattr(ts, "se", None))
    ci = getattr(ts, "ci95", None) if source == "record" else None
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(map(_finite, ci)):
        low, high = float(ci[0]), float(ci[1])
    elif math.isfinite(se):
        low, high = max(ts.score - Z95 * se, 0.0), min(ts.score + Z95 * se, 1.0)
    else:
        low = high = math.nan
    return {"se": se, "se_source": source, "ci_low": low, "ci_high": high}


def overall_se(tasks: pd.DataFrame) -> tuple[float, int]:
    """One trial's overall score's evaluation SE from its tasks' SEs, and how many were guessed.

    overall = mean over tracks of (mean over the track's tasks); tasks are judged on different rows,
    so their errors are independent and the variances add with weights 1 / (tracks x tasks in
    track). A task with an unknown SE counts at the worst case for a [0, 1] score, 0.5 / sqrt(n).
    """
    if tasks.empty:
        return math.nan, 0
    n_tracks = tasks["track"].nunique()
    per_track = tasks.groupby("track")["task"].transform("count")
    weights = 1.0 / (n_tracks * per_track.to_numpy(float))
    se = tasks["se"].to_numpy(float)
    unknown = ~np.isfinite(se)
    se = np.where(unknown, 0.5 / np.sqrt(tasks["n"].to_numpy(float)), se)
    return float(math.sqrt(np.sum((weights * se) ** 2))), int(unknown.sum())


def trial_overall_se(noise: pd.DataFrame) -> pd.DataFrame:
    """Per trial: its overall score's eval SE and the count of tasks whose SE was guessed."""
    rows = []
    for trial_id, tasks in (noise.groupby("trial_id") if not noise.empty else ()):
        se, guessed = overall_se(tasks)
        rows.append({"trial_id": trial_id, "eval_se": se, "guessed_tasks": guessed})
    return pd.DataFrame(rows, columns=["trial_id", "eval_se", "guessed_tasks"])


def difference_noise(se_a: float, se_b: float) -> float:
    """95% half-width of the evaluation noise in a difference of two scores.

    Adds the variances as if the two were judged on independent rows. Trials judged on the same
    rows share part of their error, which cancels in a difference, so this errs on the wide side.
    """
    return Z95 * math.sqrt(se_a ** 2 + se_b ** 2)


def within_noise(difference: float, half_width: float) -> bool:
    """Whether a difference is smaller than the evaluation noise's 95% half-width."""
    return math.isfinite(half_width) and abs(difference) < half_width


def cell_eval_se(trials: pd.DataFrame, eval_se: pd.DataFrame, by: list[str]) -> pd.Series:
    """Per analysis cell: the evaluation SE of its mean score.

    The mean of the trials' SEs, not divided by sqrt(seeds): the seeds of a cell are judged on the
    same rows and tend to err on the same ones, so averaging seeds need not average this noise away.
    """
    merged = trials.merge(eval_se, on="trial_id", how="left")
    return merged.groupby(by)["eval_se"].mean()


def coefficient_eval_se(design: np.ndarray, cells: Any, cell_se: Any, column: int = 3) -> float:
    """Evaluation SE of one OLS coefficient (the interaction by default).

    The coefficient is a weighted sum a'y of the trials' scores, a = row `column` of
    (X'X)^-1 X'. Evaluation error is taken as shared by every trial of a cell and independent
    between cells (conservative both ways, see cell_eval_se and difference_noise), so its variance
    is the sum over cells of (sum of the cell's weights x the cell's SE)^2.
    """
    weights = np.linalg.pinv(design)[column]
    frame = pd.DataFrame({"cell": list(cells), "w": weights, "se": np.asarray(cell_se, float)})
    per_cell = frame.groupby("cell").agg(w=("w", "sum"), se=("se", "mean"))
    return float(math.sqrt(np.sum((per_cell["w"] * per_cell["se"]) ** 2)))
