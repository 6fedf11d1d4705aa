"""Text layouts for building rows: the ShopBench multiple-choice prompt, and the two prompt styles
used to ask an LLM for new training rows, with the parsers that read its completions back.

    format_mc_prompt("Which is a fruit?", ["car", "apple"])   # 'Which is a fruit?\\n0. car\\n1. apple\\nAnswer: '
    messages = build_messages("delimited", task, seed_rows, k=5)
    pairs, rejects = parse_completion("delimited", completion_text)
    value, problem = parse_output("retrieval", "3, 1, 7")      # ([3, 1, 7], None)

The two styles exist so the study can test whether format-constrained prompts give more usable data:
    plain      seed examples as `Input:` / `Output:` blocks and "write k more like these"
    delimited  every example between <input>...</input><output>...</output>, with the task type's
               output format spelled out (MC: one integer index; retrieval: comma-separated ints;
               ranking: a permutation; NER: a Python list of strings; generation: one line)
Both styles are parsed back with the same `parse_output`, so their acceptance rates compare fairly.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Style = Literal["plain", "delimited"]
STYLES: tuple[str, ...] = ("plain", "delimited")

# Reject reasons a completion can produce before row-level checks (see generate.REJECT_REASONS).
UNPARSEABLE = "unparseable"
MISSING_FIELDS = "missing_fields"
WRONG_OUTPUT_TYPE = "wrong_output_type"

# What the delimited style asks the model to put inside <output>, per task type.
OUTPUT_FORMATS: dict[str, str] = {
    "multiple-choice": "a single integer: the 0-based index of the correct option, e.g. 2",
    "retrieval": "comma-separated integers: the numbers of the matching items, e.g. 1, 4, 7",
    "ranking": "a permutation of the item numbers 1..n, comma-separated, best first, e.g. 3, 1, 2, 5, 4",
    "named_entity_recognition": "a Python list of strings with the extracted phrases, e.g. ['red', 'cotton shirt']",
    "generation": "one line of text (no line breaks)",
}

SYSTEM_PROMPT = "You write new, realistic training examples for an e-commerce shopping assistant."


def format_mc_prompt(question: str, options: Sequence[str]) -> str:
    """The ShopBench multiple-choice layout: question, numbered options from 0, then 'Answer: '."""
    lines = [question.rstrip()] + [f"{i}. {str(opt).strip()}" for i, opt in enumerate(options)]
    return "\n".join(lines) + "\nAnswer: "


def count_mc_options(prompt: str) -> int:
    """How many '0. ', '1. ', ... option lines a multiple-choice prompt lists (consecutive from 0)."""
    numbers = {int(m) for m in re.findall(r"(?m)^\s*(\d{1,3})\.\s", prompt)}  # bounded: no huge ints
    n = 0
    while n in numbers:
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Outputs as text, and back


def render_output(task_type: str, value: Any) -> str:
    """A row's output_field as the text a generated example should carry."""
    if task_type == "multiple-choice":
        return str(int(value))
    if task_type in ("ranking", "retrieval"):
        return ", ".join(str(int(v)) for v in value)
    if task_type == "named_entity_recognition":
        return repr([str(v) for v in value])
    text = value[0] if isinstance(value, list) else str(value)
    return " ".join(text.split("\n"))  # generation outputs are one line


def parse_output(task_type: str, text: str) -> tuple[Any, str | None]:
    """(value, None) when `text` is a well-formed output for the task type, else (None, why)."""
    text = text.strip()
    if task_type == "multiple-choice":
        if re.fullmatch(r"\d+", text):
            return int(text), None
        return None, f"multiple-choice output must be one integer index, got {_preview(text)}"
    if task_type in ("ranking", "retrieval"):
        return _parse_int_list(task_type, text)
    if task_type == "named_entity_recognition":
        return _parse_str_list(text)
    if not text:
        return None, "generation output is empty"
    if "\n" in text:
        return None, "generation output must be one line, got several"
    return text, None


def _parse_int_list(task_type: str, text: str) -> tuple[Any, str | None]:
    if not re.fullmatch(r"\d+(\s*,\s*\d+)*", text):
        return None, f"{task_type} output must be comma-separated integers, got {_preview(text)}"
    values = [int(v) for v in text.split(",")]
    if task_type == "ranking" and sorted(values) != list(range(1, len(values) + 1)):
        return None, f"ranking output must be a permutation of 1..{len(values)}, got {_preview(text)}"
    return values, None


def _parse_str_list(text: str) -> tuple[Any, str | None]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value, None
    return None, f"NER output must be a Python list of strings, got {_preview(text)}"


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# ---------------------------------------------------------------------------------------------
# Generation prompts


@dataclass(frozen=True)
class TaskBrief:
    """What a generation prompt says about the task."""

    subtask: str
    task_type: str
    metric: str
    description: str = ""  # optional one-line description of the subtask


def build_messages(style: str, task: TaskBrief, seeds: Sequence[dict[str, Any]], k: int) -> list[dict[str, str]]:
    """Chat messages asking for `k` new examples of `task`, showing `seeds` (ShopBench rows)."""
    builder = _plain_prompt if style == "plain" else _delimited_prompt
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": builder(task, seeds, k)}]


def _task_line(task: TaskBrief) -> str:
    line = f"Task: {task.subtask} ({task.task_type}, scored by {task.metric})."
    return f"{line} {task.description.strip()}" if task.description.strip() else line


def _plain_prompt(task: TaskBrief, seeds: Sequence[dict[str, Any]], k: int) -> str:
    shown = "\n\n".join(f"Input: {r['input_field']}\nOutput: {render_output(task.task_type, r['output_field'])}"
                        for r in seeds)
    return (f"{_task_line(task)}\nHere are examples of the task:\n\n{shown}\n\n"
            f"Write {k} new examples of this task, different from the examples above and from each "
            "other, in the same Input: / Output: layout.")


def _delimited_prompt(task: TaskBrief, seeds: Sequence[dict[str, Any]], k: int) -> str:
    shown = "\n".join(f"<input>\n{r['input_field']}\n</input>\n"
                      f"<output>{render_output(task.task_type, r['output_field'])}</output>" for r in seeds)
    mc_note = ("\nThe input lists the options as lines '0. ...', '1. ...' and ends with 'Answer: '."
               if task.task_type == "multiple-choice" else "")
    return (f"{_task_line(task)}\n"
            "Each example is an <input> element holding the complete prompt, followed by an <output> "
            "element holding the answer.\n"
            f"Format of <output>: {OUTPUT_FORMATS[task.task_type]}. Put nothing else inside <output>."
            f"{mc_note}\n\nExamples:\n{shown}\n\n"
            f"Write {k} new examples, different from the examples above and from each other. Reply with "
            f"exactly {k} <input>...</input><output>...</output> pairs and nothing else.")


# ---------------------------------------------------------------------------------------------
# Completions back into (input, output text) pairs


@dataclass(frozen=True)
class ParseReject:
    reason: str  # UNPARSEABLE or MISSING_FIELDS
    detail: str


def parse_completion(style: str, text: str) -> tuple[list[tuple[str, str]], list[ParseReject]]:
    """The (input text, output text) pairs a completion holds, and one reject per broken example."""
    return _parse_plain(text) if style == "plain" else _parse_delimited(text)


def _parse_delimited(text: str) -> tuple[list[tuple[str, str]], list[ParseReject]]:
    chunks = text.split("<input>")
    if len(chunks) == 1:
        return [], [ParseReject(UNPARSEABLE, "no <input> element in the completion")]
    pairs, rejects = [], []
    for chunk in chunks[1:]:
        body, closed, rest = chunk.partition("</input>")
        out = re.match(r"\s*<output>(.*?)</output>", rest, re.DOTALL) if closed else None
        if not closed:
            rejects.append(ParseReject(MISSING_FIELDS, "<input> without a closing </input>"))
        elif out is None:
            rejects.append(ParseReject(MISSING_FIELDS, "<input> without an <output>...</output> after it"))
        elif not body.strip():
            rejects.append(ParseReject(MISSING_FIELDS, "empty <input>"))
        else:
            pairs.append((body.strip("\n"), out.group(1)))
    return pairs, rejects


_PLAIN_INPUT = re.compile(r"(?m)^[ \t]*\**Input:\**[ \t]*")
_PLAIN_OUTPUT = re.compile(r"(?m)^[ \t]*\**Output:\**[ \t]*")
_PLAIN_HEADING = re.compile(r"\n[ \t]*#*[ \t]*\**Example[ \t]*\d*\**[ \t]*:?\**[ \t]*\Z")


def _parse_plain(text: str) -> tuple[list[tuple[str, str]], list[ParseReject]]:
    blocks = _PLAIN_INPUT.split(text)
    if len(blocks) == 1:
        return [], [ParseReject(UNPARSEABLE, "no 'Input:' line in the completion")]
    pairs, rejects = [], []
    for block in blocks[1:]:
        block = _PLAIN_HEADING.sub("", block.rstrip()).rstrip()  # a trailing "Example 3:" heads the next block
        outputs = list(_PLAIN_OUTPUT.finditer(block))
        if not outputs:
            rejects.append(ParseReject(MISSING_FIELDS, "'Input:' without an 'Output:' line after it"))
            continue
        last = outputs[-1]  # ShopBench prompts may themselves end in "Output:"; the answer follows the last
        body = block[: last.start()].strip("\n")
        if not body.strip():
            rejects.append(ParseReject(MISSING_FIELDS, "empty 'Input:'"))
        else:
            pairs.append((body, block[last.end():]))
    return pairs, rejects
