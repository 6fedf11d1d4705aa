"""The ShopBench row schema: task types, their metrics, and per-row validation.

Every example, whatever its source (synthetic world, EC-Guide, a CSV, an LLM), is a dict with
    input_field   str: the prompt
    output_field  int (multiple-choice), list[int] (ranking, retrieval), list[str] (NER), str (generation)
    task_type     one of TASK_TYPES
    metric        one of the metrics its task type allows
plus optional task_name, track, and our domain, subtask and row_id columns.
"""

from __future__ import annotations

import math
from typing import Any

from harness.tasks.prompts import count_mc_options

# task type -> the metrics ShopBench uses with it (first = default)
TASK_TYPES: dict[str, tuple[str, ...]] = {
    "multiple-choice": ("accuracy",),
    "ranking": ("ndcg",),
    "retrieval": ("hit rate@3",),
    "named_entity_recognition": ("micro f1",),
    "generation": ("rougel", "sent-transformer", "multilingual-sent-transformer", "bleu", "jp-bleu"),
}

METRIC_NAMES: frozenset[str] = frozenset(m for ms in TASK_TYPES.values() for m in ms)

REQUIRED_FIELDS = ("input_field", "output_field", "task_type", "metric")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def mc_index(output: Any) -> int | None:
    """A multiple-choice answer as an option index: an int, or a string of ASCII digits (EC-Guide carries
    a few as "2"); None for anything else, including digits past int()'s limit or "²"."""
    if _is_int(output):
        return output
    text = output.strip() if isinstance(output, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


def _mc_problem(output: Any) -> str | None:
    index = mc_index(output)
    if index is None:
        return f"multiple-choice output_field must be an int option index, got {_short(output)}"
    if index < 0:  # -1 is what the parser gives an unparseable response: it must never score correct
        return f"multiple-choice output_field {index} is negative; options are numbered from 0"
    return None


def mc_range_note(row: dict[str, Any]) -> str | None:
    """For a valid multiple-choice row whose answer is past the options its input_field lists (EC-Guide
    has a few): what to report. Such a row can never be answered correctly; it is kept (the data is
    the user's) but said out loud."""
    if row.get("task_type") != "multiple-choice" or not isinstance(row.get("input_field"), str):
        return None
    index, n = mc_index(row.get("output_field")), count_mc_options(row["input_field"])
    if index is None or not n or index < n:
        return None
    return f"answer {index} is not one of the {n} options 0..{n - 1} its input_field lists"


def _weights_problem(output: Any) -> str | None:
    # One relevance weight per candidate; ShopBench files carry floats such as [1.0, 0.01, ...].
    if not (isinstance(output, list) and output and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in output)):
        return f"ranking output_field must be a non-empty list of relevance weights, got {_short(output)}"
    if not all(math.isfinite(v) for v in output):
        return (f"ranking output_field holds a weight that is not a finite number ({_short(output)}); "
                "NaN or infinite relevance makes NDCG meaningless: give finite weights")
    return None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _output_problem(task_type: str, output: Any) -> str | None:
    """Why `output` is the wrong type for `task_type`, or None when it is fine."""
    if task_type == "multiple-choice":
        return _mc_problem(output)
    if task_type == "ranking":
        return _weights_problem(output)
    if task_type == "retrieval":
        if isinstance(output, list) and output and all(_is_int(v) for v in output):
            return None
        return f"retrieval output_field must be a non-empty list of ints, got {_short(output)}"
    if task_type == "named_entity_recognition":
        if isinstance(output, list) and all(isinstance(v, str) for v in output):
            return None
        return f"NER output_field must be a list of strings, got {_short(output)}"
    if task_type == "generation":
        if isinstance(output, str) or (isinstance(output, list) and output
                                       and all(isinstance(v, str) for v in output)):
            return None
        return f"generation output_field must be a string (or list of reference strings), got {_short(output)}"
    return None


def row_problems(row: Any) -> list[str]:
    """Every problem with one row, as short phrases naming the field; [] when the row is valid."""
    if not isinstance(row, dict):
        return [f"row must be a JSON object, got {type(row).__name__}"]
    problems = [f"missing field {f!r}" for f in REQUIRED_FIELDS if f not in row]
    if problems:
        return problems
    if not isinstance(row["input_field"], str) or not row["input_field"].strip():
        problems.append("input_field must be a non-empty string")
    task_type, metric = row["task_type"], row["metric"]
    if task_type not in TASK_TYPES:
        from harness.errors import unknown_name_message

        problems.append(unknown_name_message("task_type", str(task_type), TASK_TYPES))
        return problems
    if metric not in METRIC_NAMES:
        from harness.errors import unknown_name_message

        problems.append(unknown_name_message("metric", str(metric), METRIC_NAMES))
    elif metric not in TASK_TYPES[task_type]:
        problems.append(f"metric {metric!r} does not apply to task_type {task_type!r} "
                        f"(use one of {', '.join(TASK_TYPES[task_type])})")
    out_problem = _output_problem(task_type, row["output_field"])
    if out_problem:
        problems.append(out_problem)
    return problems


def normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    """A copy with ShopBench's types made exact (digit-string MC answers become ints)."""
    row = dict(row)
    if row["task_type"] == "multiple-choice" and isinstance(row["output_field"], str):
        row["output_field"] = mc_index(row["output_field"])
    return row
