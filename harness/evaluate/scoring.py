"""Score raw responses against ShopBench rows: parse, apply each task's metric, aggregate.

    report = score_responses(rows, responses)   # rows: ShopBench dicts; responses: raw strings
    report.to_dict()    # {"tasks": {...}, "tracks": {...}, "overall": x, "pooled": y}

Rows group into tasks by `task_name`, else `subtask`, else `default_task_name`; a task belongs to
its rows' `track`, else their `domain`, else "default". The metric belongs to the row, as in the
organisers' evaluator: each row is scored with its own `metric`, and one task may mix metrics (their
translation task mixes `bleu` and `jp-bleu` rows; its metric then reads "bleu/jp-bleu"). A task's
score is the mean of its rows' scores (NER: micro-F1 pooled over the task's rows), a track's the
unweighted mean of its tasks, `overall` the mean of the tracks (ShopBench's Track 5 when the four
tracks are present) and `pooled` the unweighted mean over all tasks (what the organisers' local
script printed). Per-sample values stay on each TaskScore for debugging and bootstraps:
`aggregate_samples(metrics, values)` re-aggregates a resample.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.data.prompting import render_answer
from harness.errors import InputError
from harness.evaluate.metrics import get_metric
from harness.evaluate.parsers import parse_response
from harness.tasks.schema import normalise_row, row_problems

DEFAULT_TRACK = "default"


@dataclass(frozen=True)
class TaskScore:
    """One task's score and the per-sample detail behind it."""

    name: str
    metric: str  # the rows' metrics in order of appearance, joined by "/" ("bleu/jp-bleu")
    track: str
    score: float
    row_indices: tuple[int, ...]  # positions of this task's rows in the scored sequence
    predictions: tuple[Any, ...]  # parsed responses
    sample_values: tuple[Any, ...]  # per-sample metric values (NerCounts for micro f1)
    sample_scores: tuple[float, ...]  # per-sample floats (for micro f1, each sample's own F1)
    sample_metrics: tuple[str, ...] = ()  # each row's own metric

    @property
    def n(self) -> int:
        return len(self.row_indices)

    @property
    def se(self) -> float:
        """Standard error of the score from its rows: the sample standard deviation over sqrt(n) for
        a mean of per-row scores; for pooled metrics (NER micro-F1) the sd of a seeded row bootstrap."""
        if self.n < 2:
            return float("nan")
        metric = get_metric(self.metric.split("/")[0])
        if metric.aggregation != "mean":
            return _bootstrap_se(metric, self.sample_values)
        mean = sum(self.sample_scores) / self.n
        var = sum((x - mean) ** 2 for x in self.sample_scores) / (self.n - 1)
        return math.sqrt(var / self.n)

    @property
    def ci95(self) -> tuple[float, float]:
        """Normal-approximation 95% interval of the score (evaluation noise only, not seed noise)."""
        half = 1.96 * self.se
        return (self.score - half, self.score + half)


@dataclass(frozen=True)
class ScoreReport:
    """Task, track, overall and pooled scores for one set of responses."""

    tasks: dict[str, TaskScore]
    tracks: dict[str, float]
    overall: float
    pooled: float
    skipped: tuple[str, ...] = ()  # one message per benchmark row left out (read with skip_bad)

    def to_dict(self) -> dict[str, Any]:
        """The `harness score --json` document."""
        return {
            "tasks": {name: {"score": t.score, "metric": t.metric, "n": t.n, "track": t.track,
                             **_noise(t)} for name, t in self.tasks.items()},
            "tracks": dict(self.tracks),
            "overall": self.overall,
            "pooled": self.pooled,
        }


@dataclass
class _TaskRows:
    track: str
    indices: list[int] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)  # each row's metric, in row order


def score_responses(rows: Sequence[Mapping[str, Any]], responses: Sequence[str], *,
                    default_task_name: str = "default") -> ScoreReport:
    """Score `responses[i]` against `rows[i]` for every i; InputError on bad rows or inputs."""
    rows = _checked_rows(rows)
    _check_responses(rows, responses)
    groups = _group_tasks(rows, default_task_name)
    tasks = {name: _score_task(name, group, rows, responses) for name, group in groups.items()}
    return _report(tasks)


def format_floor(rows: Sequence[Mapping[str, Any]], *, default_task_name: str = "default") -> dict[str, float]:
    """task -> the score of answering every row with the task's most common answer, well formed:
    what a model earns from the answer format and the answer prior alone, knowing nothing of the
    question (multiple-choice: the commonest option; generation: the commonest reference text)."""
    checked = _checked_rows(rows)
    responses = [""] * len(checked)
    for group in _group_tasks(checked, default_task_name).values():
        answers = [render_answer(checked[i]) for i in group.indices]
        commonest = max(answers, key=answers.count)
        for i in group.indices:
            responses[i] = commonest
    report = score_responses(checked, responses, default_task_name=default_task_name)
    return {name: task.score for name, task in report.tasks.items()}


def _checked_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    problems = [f"row {i}: {'; '.join(p)}" for i, row in enumerate(rows, start=1)
                if (p := row_problems(row))]
    if problems:
        raise InputError("cannot score: bad benchmark rows\n  " + "\n  ".join(problems))
    if not rows:
        raise InputError("cannot score: no benchmark rows")
    return [normalise_row(dict(row)) for row in rows]


def _check_responses(rows: Sequence[Any], responses: Sequence[str]) -> None:
    if len(responses) != len(rows):
        raise InputError(f"cannot score: {len(responses)} responses for {len(rows)} benchmark rows; "
                         "give exactly one response per row, in row order")
    bad = [f"response {i}: expected a string, got {type(r).__name__}"
           for i, r in enumerate(responses, start=1) if not isinstance(r, str)]
    if bad:
        raise InputError("cannot score: bad responses\n  " + "\n  ".join(bad))


def _group_tasks(rows: list[dict[str, Any]], default_task_name: str) -> dict[str, _TaskRows]:
    groups: dict[str, _TaskRows] = {}
    for index, row in enumerate(rows):
        name = str(row.get("task_name") or row.get("subtask") or default_task_name)
        track = str(row.get("track") or row.get("domain") or DEFAULT_TRACK)
        group = groups.setdefault(name, _TaskRows(track))
        _check_consistent(name, group, track, index)
        group.indices.append(index)
        group.metrics.append(row["metric"])
    for name, group in groups.items():
        _check_aggregation(name, group)
    return groups


def _check_aggregation(name: str, group: _TaskRows) -> None:
    """A pooled metric (NER micro-F1) has no per-row score to average with other metrics' rows."""
    kinds = {get_metric(m).aggregation for m in group.metrics}
    if len(kinds) > 1:
        raise InputError(f"task {name!r} mixes {' and '.join(sorted(set(group.metrics)))}: micro-F1 is "
                         "pooled over a task's rows and cannot be averaged with per-row scores; give "
                         "those rows their own task_name")


def _check_consistent(name: str, group: _TaskRows, track: str, index: int) -> None:
    if track != group.track:
        raise InputError(f"task {name!r} spans tracks ({group.track!r} and {track!r} at row "
                         f"{index + 1}); a task belongs to one track")


def _score_task(name: str, group: _TaskRows, rows: list[dict[str, Any]],
                responses: Sequence[str]) -> TaskScore:
    predictions = [parse_response(rows[i]["task_type"], responses[i]) for i in group.indices]
    truths = [rows[i]["output_field"] for i in group.indices]
    values = _values_by_row_metric(group.metrics, predictions, truths)
    return TaskScore(name=name, metric="/".join(dict.fromkeys(group.metrics)), track=group.track,
                     score=aggregate_samples(group.metrics, values), row_indices=tuple(group.indices),
                     predictions=tuple(predictions), sample_values=tuple(values),
                     sample_scores=tuple(get_metric(m).sample_score(v) for m, v in zip(group.metrics, values)),
                     sample_metrics=tuple(group.metrics))


def _values_by_row_metric(metrics: list[str], predictions: list[Any], truths: list[Any]) -> list[Any]:
    """Per-row metric values, each row scored by its own metric (one batch call per metric, so the
    embedding metrics still encode in batches)."""
    values: list[Any] = [None] * len(metrics)
    for name in dict.fromkeys(metrics):
        at = [i for i, m in enumerate(metrics) if m == name]
        scored = get_metric(name).score_samples([predictions[i] for i in at], [truths[i] for i in at])
        for i, value in zip(at, scored, strict=True):
            values[i] = value
    return values


def aggregate_samples(metrics: Sequence[str], values: Sequence[Any]) -> float:
    """A task's score from its rows' metrics and values: pooled micro-F1 when the rows' metric pools
    (NER), else the mean of the rows' own scores (a mixed bleu/jp-bleu task included)."""
    first = get_metric(metrics[0])
    if first.aggregation == "pooled-f1":
        return float(first.aggregate(values))
    return _mean(get_metric(m).sample_score(v) for m, v in zip(metrics, values, strict=True))


def _report(tasks: dict[str, TaskScore]) -> ScoreReport:
    by_track: dict[str, list[float]] = {}
    for task in tasks.values():
        by_track.setdefault(task.track, []).append(task.score)
    tracks = {track: _mean(scores) for track, scores in by_track.items()}
    return ScoreReport(tasks=tasks, tracks=tracks, overall=_mean(tracks.values()),
                       pooled=_mean(t.score for t in tasks.values()))


BOOTSTRAP_RESAMPLES = 200


def _bootstrap_se(metric: Any, values: Sequence[Any]) -> float:
    """Seeded row bootstrap of a pooled metric (same rows -> same SE)."""
    rng = random.Random(len(values))
    stats = [float(metric.aggregate([values[rng.randrange(len(values))] for _ in values]))
             for _ in range(BOOTSTRAP_RESAMPLES)]
    mean = sum(stats) / len(stats)
    return math.sqrt(sum((x - mean) ** 2 for x in stats) / (len(stats) - 1))


def _noise(task: TaskScore) -> dict[str, Any]:
    """The record's evaluation-noise fields: se and ci95, or nothing when a task has one row."""
    se = task.se
    if not math.isfinite(se):
        return {}
    lo, hi = task.ci95
    return {"se": se, "ci95": [lo, hi]}


def _mean(values: Any) -> float:
    values = list(values)
    return float(sum(values) / len(values))
