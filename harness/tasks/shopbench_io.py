"""Read ShopBench-format benchmark files and JSON-lines response files, with row-precise errors.

    bench = read_shopbench("track1.json")                # JSON array or JSON lines, by content
    bench = read_shopbench("dev.jsonl", skip_bad=True)   # keep the good rows, report the rest
    responses = read_responses("responses.jsonl")        # one {"response": "..."} per line

Every row is checked with `harness.tasks.schema.row_problems` and normalised with `normalise_row`.
Bad rows raise one InputError listing each as `FILE:row N: problem` (JSON array, 1-based position)
or `FILE:line N: problem` (JSON lines), unless skip_bad is set, in which case they are left out and
counted, and their messages kept on the result: nothing is dropped silently. Under skip_bad an
unparseable JSON line is a bad row; an unparseable JSON array is always an error. Rows without a
task_name take their subtask, else the file's stem.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.tasks.schema import mc_range_note, normalise_row, row_problems

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShopBenchFile:
    """The good rows of one benchmark file, and what was skipped."""

    path: Path
    rows: list[dict[str, Any]]
    positions: tuple[int, ...]  # 0-based record index of each kept row (responses align to records)
    n_records: int  # rows in the file, good and bad (blank JSON lines not counted)
    skipped: int
    problems: tuple[str, ...]  # one `FILE:row N: problem` message per skipped row

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class _Record:
    where: str  # "row 3" or "line 7"
    value: Any
    parse_error: str | None = None


def read_shopbench(path: str | Path, *, skip_bad: bool = False) -> ShopBenchFile:
    """Read, validate and normalise every row of a ShopBench JSON array or JSON-lines file."""
    path = Path(path)
    records = list(_records(path, _read_text(path)))
    if not records:
        raise InputError(f"{path}: no rows; expected a JSON array or JSON lines of ShopBench rows")
    rows, positions, problems = [], [], []
    for position, record in enumerate(records):
        phrases = [record.parse_error] if record.parse_error else row_problems(record.value)
        if phrases:
            problems.append(f"{path}:{record.where}: {'; '.join(phrases)}")
        else:
            rows.append(_with_task_name(normalise_row(record.value), path))
            positions.append(position)
    if problems and not skip_bad:
        raise InputError(f"{path}: {len(problems)} bad row(s):\n  " + "\n  ".join(problems)
                         + "\nfix these rows, or skip them with skip_bad (--skip-bad)")
    _report_mc_range(path, records, positions)
    return ShopBenchFile(path, rows, tuple(positions), len(records), len(problems), tuple(problems))


def read_responses(path: str | Path) -> list[str]:
    """The `response` strings of a JSON-lines file, one per non-blank line, in order."""
    path = Path(path)
    responses, problems = [], []
    for number, line in _lines(_read_text(path)):
        response, problem = _response_from_line(line)
        if problem:
            problems.append(f"{path}:line {number}: {problem}")
        else:
            responses.append(response)
    if problems:
        raise InputError(f"{path}: {len(problems)} bad response line(s):\n  " + "\n  ".join(problems)
                         + '\neach line must be a JSON object like {"response": "..."}')
    return responses


def _response_from_line(line: str) -> tuple[str, str | None]:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:
        return "", _json_problem(exc)
    if not isinstance(value, dict) or "response" not in value:
        return "", f'expected an object with a "response" field, got {_preview(value)}'
    if not isinstance(value["response"], str):
        return "", f'"response" must be a string, got {_preview(value["response"])}'
    return value["response"], None


def _report_mc_range(path: Path, records: list[_Record], positions: list[int]) -> None:
    """One warning per file for multiple-choice answers past the options listed (never scorable)."""
    notes = [f"{records[p].where}: {note}" for p in positions
             if (note := mc_range_note(records[p].value)) is not None]
    if notes:
        shown = "; ".join(notes[:5]) + ("; ..." if len(notes) > 5 else "")
        log.warning("%s: %d multiple-choice row(s) can never be answered correctly (%s); fix their "
                    "output_field or options", path, len(notes), shown)


def _json_problem(exc: BaseException) -> str:
    """Why a JSON text was refused: a syntax error, an int past Python's digit limit, or nesting
    past the recursion limit (a 100,000-deep list), in words."""
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "invalid JSON for this file: nested too deeply"
    return f"invalid JSON for this file ({str(exc).split(';')[0]})"


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give the JSON or JSON-lines file itself")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _records(path: Path, text: str) -> Iterator[_Record]:
    """Rows as records: a JSON array when the content starts with '[', else JSON lines."""
    if text.lstrip().startswith("["):
        yield from _array_records(path, text)
        return
    for number, line in _lines(text):
        try:
            yield _Record(f"line {number}", json.loads(line))
        except (ValueError, RecursionError) as exc:
            yield _Record(f"line {number}", None, _json_problem(exc))


def _array_records(path: Path, text: str) -> Iterator[_Record]:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:line {exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno}); "
                         "a file starting with '[' must be one JSON array") from exc
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path}: {_json_problem(exc)}; a file starting with '[' must be one JSON array "
                         "of ShopBench rows") from None
    for number, row in enumerate(rows, start=1):
        yield _Record(f"row {number}", row)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) for every non-blank line.

    Splits on "\n" only: str.splitlines() would also split inside JSON strings holding a raw
    U+2028, which json.dumps(ensure_ascii=False) writes unescaped.
    """
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield number, line


def _with_task_name(row: dict[str, Any], path: Path) -> dict[str, Any]:
    if not row.get("task_name"):
        row["task_name"] = row.get("subtask") or path.stem
    return row


def _preview(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."
