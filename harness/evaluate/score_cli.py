"""The library side of `harness score BENCH RESPONSES [--json]`: read both files, score, format.

    report = score_files("track1.json", "responses.jsonl")
    print(format_report(report))            # a table; report.to_dict() is the --json document

Responses align with the benchmark file's rows, in order, one per row. With skip_bad, bad benchmark
rows are left out together with their responses, so the remaining pairs stay aligned, and
`report.skipped` lists them (format_report prints them; `to_dict()` keeps the fixed --json shape).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.errors import InputError
from harness.evaluate.scoring import ScoreReport, score_responses
from harness.tasks.shopbench_io import read_responses, read_shopbench

SCORE_FORMAT = "{:.4f}"


def score_files(bench_path: str | Path, responses_path: str | Path, *,
                skip_bad: bool = False) -> ScoreReport:
    """Score a JSON-lines responses file against a ShopBench benchmark file."""
    bench = read_shopbench(bench_path, skip_bad=skip_bad)
    responses = read_responses(responses_path)
    if len(responses) != bench.n_records:
        raise InputError(f"{responses_path} has {len(responses)} responses but {bench_path} has "
                         f"{bench.n_records} rows; give exactly one response per benchmark row, "
                         "in the same order")
    kept = [responses[position] for position in bench.positions]
    report = score_responses(bench.rows, kept, default_task_name=Path(bench_path).stem)
    return dataclasses.replace(report, skipped=bench.problems)


def format_report(report: ScoreReport) -> str:
    """A plain-text table: one line per task, then the track scores, overall and pooled."""
    task_rows = [(name, t.track, t.metric, str(t.n), SCORE_FORMAT.format(t.score))
                 for name, t in report.tasks.items()]
    lines = _table(("task", "track", "metric", "n", "score"), task_rows)
    lines += ["", *_table(("track", "score"), [(track, SCORE_FORMAT.format(score))
                                               for track, score in report.tracks.items()])]
    lines += ["", f"overall  {SCORE_FORMAT.format(report.overall)}  (mean of track scores)",
              f"pooled   {SCORE_FORMAT.format(report.pooled)}  (mean of task scores)"]
    if report.skipped:
        lines += ["", f"skipped {len(report.skipped)} bad benchmark row(s) and their responses:",
                  *(f"  {message}" for message in report.skipped)]
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned text columns, right-aligned numeric ones (n, score), two spaces apart."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    numeric = [name in ("n", "score") for name in header]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(cells, widths, numeric, strict=True)).rstrip()

    return [line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)]
