"""Readers that turn external data into ShopBench rows, each mapped onto one domain and subtask.

    spec = SourceSpec(kind="shopbench", path="../shared/data/ec_guide/EC-Guide/MCQ/SPA.json",
                      domain="concept", subtask="ec_spa")
    data = load_source(spec)     # SourceData(rows, skipped, messages, fingerprint)

In a sweep YAML a source reads `{kind: shopbench, path: ..., domain: concept, subtask: ec_spa}`.
Kinds:
    shopbench   ShopBench JSON array or JSON lines (read by harness.tasks.shopbench_io)
    mmlu_csv    Shopping-MMLU-style CSV: `question`, `choices` (a JSON or Python list) or option columns
                (A, B, C, D / option_a ... / choice_0 ...), `answer` (0-based index, letter, or the option
                text). A file without a header row is read in the MMLU layout: question, options..., answer.
    ecinstruct  ECInstruct-style records (JSON array or JSON lines): instruction, input, output, options?;
                with options -> multiple-choice (ShopBench layout), else generation scored by ROUGE-L
    hf          a directory saved with `Dataset.save_to_disk`, a local folder of data files, or a
                Hugging Face hub id, with a column mapping in `fields`
`fields` renames the columns a reader looks for (e.g. `{input_field: question, output_field: label}`);
`where` keeps only records whose fields equal the given values (e.g. `{task: Sentiment_Analysis}`).

Every row comes out with exactly: input_field, output_field, task_type, metric, task_name (= subtask),
track (the domain's ShopBench track, from the registry), domain, subtask, row_id
(`<subtask>:<record number>`) and source (`<kind>:<path>`). Bad rows (missing
field, wrong output type for the task type, unparseable JSON line or CSV record) are reported as
`FILE:row N` / `FILE:line N`; by default one InputError lists them all, with `skip_bad: true` they are
left out, counted in `skipped`, and described in `messages`. Nothing is dropped silently.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationError, field_validator, model_validator

from harness.errors import InputError, MissingDependencyError, did_you_mean, unknown_name_message
from harness.strict_model import StrictModel
from harness.tasks.prompts import format_mc_prompt
from harness.tasks.schema import METRIC_NAMES, TASK_TYPES, normalise_row, row_problems

READER_VERSION = 1  # bump when a reader's output changes for the same input, so fingerprints change
HUB_PROBE_TIMEOUT_S = 3.0  # seconds to wait for a TCP connection to the hub before calling it offline

# The columns each kind lets `fields` rename (our name -> the source's column).
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "shopbench": (),
    "mmlu_csv": ("question", "choices", "answer"),
    "ecinstruct": ("instruction", "input", "output", "options"),
    "hf": ("input_field", "output_field", "options", "task_type", "metric"),
}

SourceKind = Literal["shopbench", "mmlu_csv", "ecinstruct", "hf"]


def known_domains() -> list[str]:
    """Domain ids from the task registry (DESIGN.md section 3)."""
    from harness.tasks import registry

    return [d.id for d in registry.all_domains()]


def track_of(domain: str) -> str:
    """The ShopBench track name a domain's rows carry, as synthetic rows do, so scores aggregate alike."""
    from harness.tasks import registry

    return registry.get_domain(domain).track


def check_domain(value: str) -> str:
    """A capability domain id, or a ValueError with did-you-mean (shared by every spec that names one)."""
    domains = known_domains()
    if value not in domains:
        raise ValueError(unknown_name_message("domain", value, domains))
    return value


def check_subtask_name(value: str) -> str:
    """Subtask names stay override-safe: no spaces, no '=' (they appear in `a.b=c` paths and ids)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        raise ValueError(f"{value!r}: use letters, digits, '_', '.' and '-' (e.g. ec_spa)")
    return value


class SourceSpec(StrictModel):
    """One external data source mapped onto one domain and subtask."""

    # StrictModel: unknown keys, booleans for numbers and nan / inf are refused

    kind: SourceKind = "shopbench"  # which reader
    path: str  # file, directory, or (kind hf) a hub dataset id
    domain: str  # one of the capability domains: concept, reasoning, behavior, multilingual
    subtask: str  # free name the sweep uses for these rows, e.g. ec_spa
    task_type: str | None = None  # override the rows' task type (mmlu_csv: always multiple-choice)
    metric: str | None = None  # override the metric (default: the task type's first metric)
    split: str | None = None  # hf: dataset split (default train); ecinstruct: keep records of this split
    fields: dict[str, str] = Field(default_factory=dict)  # our column name -> the source's column name
    where: dict[str, str | int | bool] = Field(default_factory=dict)  # keep records with these field values
    skip_bad: bool = False  # skip malformed rows (counted and reported) instead of stopping
    limit: int | None = Field(default=None, ge=1)  # read at most this many usable rows, in file order

    @field_validator("path")
    @classmethod
    def _path_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a file, a directory or a dataset id")
        return value

    @field_validator("domain")
    @classmethod
    def _known_domain(cls, value: str) -> str:
        return check_domain(value)

    @field_validator("subtask")
    @classmethod
    def _subtask_name(cls, value: str) -> str:
        return check_subtask_name(value)

    @field_validator("task_type")
    @classmethod
    def _known_task_type(cls, value: str | None) -> str | None:
        if value is not None and value not in TASK_TYPES:
            raise ValueError(unknown_name_message("task_type", value, TASK_TYPES))
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None and value not in METRIC_NAMES:
            raise ValueError(unknown_name_message("metric", value, METRIC_NAMES))
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SourceSpec":
        problems = _cross_field_problems(self)
        if problems:
            raise ValueError("\n".join(problems))  # each line names its field; source_problems splits them
        return self

    @classmethod
    def parse(cls, raw: Any, where: str = "source") -> "SourceSpec":
        """Validate a mapping; one InputError lists every problem as `where.field: message`."""
        problems = source_problems(raw, where)
        if problems:
            raise InputError(f"{len(problems)} problem(s) in {where}:\n" +
                             "\n".join(f"  - {p}" for p in problems))
        return cls.model_validate(raw)


def _cross_field_problems(spec: SourceSpec) -> list[str]:
    problems = []
    allowed = FIELD_NAMES[spec.kind]
    for key in spec.fields:
        if key not in allowed:
            hint = f"; {spec.kind} maps {', '.join(allowed)}" if allowed else f"; {spec.kind} takes no mapping"
            problems.append(f"fields.{key}: not a column kind {spec.kind} reads{did_you_mean(key, allowed)}{hint}")
    if spec.task_type and spec.metric and spec.metric not in TASK_TYPES[spec.task_type]:
        problems.append(f"metric: {spec.metric!r} does not apply to task_type {spec.task_type!r} "
                        f"(use one of {', '.join(TASK_TYPES[spec.task_type])})")
    if spec.kind == "mmlu_csv" and spec.task_type not in (None, "multiple-choice"):
        problems.append(f"task_type: mmlu_csv rows are multiple-choice, not {spec.task_type!r}")
    if spec.split is not None and spec.kind not in ("hf", "ecinstruct"):
        problems.append(f"split: only hf and ecinstruct sources have splits, not {spec.kind}")
    return problems


def source_problems(raw: Any, where: str = "source") -> list[str]:
    """Every problem with a source mapping, as `where.field: message` lines ([] when valid)."""
    try:
        SourceSpec.model_validate(raw)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key" + did_you_mean(str(err["loc"][-1]), SourceSpec.model_fields)
            if not loc and ": " in msg:  # cross-field problems already carry their field names
                out += [f"{where}.{part}" for part in msg.split("\n")]
            else:
                out.append(f"{where}.{loc}: {msg}" if loc else f"{where}: {msg}")
        return out
    return []


@dataclass(frozen=True)
class SourceData:
    """The usable rows of one source, what was skipped, and a fingerprint of content + mapping."""

    rows: list[dict[str, Any]]
    skipped: int  # bad rows left out under skip_bad (always 0 otherwise: bad rows raise)
    messages: tuple[str, ...]  # one line per skipped row, plus notes on filtering, limits, layouts
    fingerprint: str  # sha256 hex over the file bytes (or dataset fingerprint) and the mapping
    path: str = ""


@dataclass(frozen=True)
class _Record:
    where: str  # "row 3" (JSON array) or "line 7" (JSON lines, CSV)
    value: Any
    parse_error: str | None = None
    ordinal: int | None = None  # 1-based record number in the file, when records arrive pre-filtered


# A builder turns one raw record into (row with input_field/output_field/task_type/metric, problems).
Builder = Callable[[Any], tuple[dict[str, Any], list[str]]]


def load_source(spec: SourceSpec) -> SourceData:
    """Read one source into ShopBench rows; raises InputError listing bad rows unless skip_bad."""
    reader = {"shopbench": _load_shopbench, "mmlu_csv": _load_csv,
              "ecinstruct": _load_ecinstruct, "hf": _load_hf}[spec.kind]
    return reader(spec)


# ---------------------------------------------------------------------------------------------
# The shared loop: filter, build, validate, stamp, collect problems


def _collect(spec: SourceSpec, label: str, records: Iterator[_Record], build: Builder,
             content_digest: str, notes: list[str] | None = None, skipped_before: int = 0) -> SourceData:
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    notes = list(notes or [])
    filtered = seen = 0
    for number, rec in enumerate(records, start=1):
        seen = number
        if rec.parse_error is None and spec.where and not _matches(rec.value, spec.where):
            filtered += 1
            continue
        row, phrases = (None, [rec.parse_error]) if rec.parse_error else _build_row(spec, rec.value, build)
        if row is None:
            problems.append(f"{label}:{rec.where}: {'; '.join(phrases)}")
            continue
        rows.append(_stamp(row, spec, rec.ordinal or number))
        if spec.limit is not None and len(rows) >= spec.limit:
            notes.append(f"{label}: limit {spec.limit} reached at {rec.where}; later records not read")
            break
    if problems and not spec.skip_bad:
        raise InputError(f"{label}: {len(problems)} bad row(s):\n  " + "\n  ".join(problems)
                         + "\nfix these rows, or set `skip_bad: true` on this source to skip them "
                           "(skipped rows are counted and reported)")
    if filtered:
        notes.append(f"{label}: {filtered} record(s) left out by where={spec.where}")
    if not rows:
        raise InputError(f"{label}: no usable rows (records: {seen}, left out by where: {filtered}, "
                         f"bad: {len(problems) + skipped_before})")
    messages = [f"{p} (skipped)" for p in problems] + notes
    return SourceData(rows, skipped_before + len(problems), tuple(messages),
                      _fingerprint(content_digest, spec), spec.path)


def _build_row(spec: SourceSpec, value: Any, build: Builder) -> tuple[dict[str, Any] | None, list[str]]:
    """(the validated, normalised row, []) or (None, the problems that stop it)."""
    if not isinstance(value, dict):
        return None, [f"record must be an object, got {type(value).__name__}"]
    row, phrases = build(value)
    if phrases:
        return None, phrases
    row = _resolve_task(row, spec)
    phrases = row_problems(row)
    return (None, phrases) if phrases else (normalise_row(row), [])


def _resolve_task(row: dict[str, Any], spec: SourceSpec) -> dict[str, Any]:
    """Apply the spec's task_type / metric overrides; default the metric from the task type."""
    task_type = spec.task_type or row.get("task_type")
    metric = spec.metric or row.get("metric")
    if task_type in TASK_TYPES and metric not in TASK_TYPES[task_type] and not spec.metric:
        metric = TASK_TYPES[task_type][0]
    return {**row, "task_type": task_type, "metric": metric}


def _stamp(row: dict[str, Any], spec: SourceSpec, number: int) -> dict[str, Any]:
    return {"input_field": row["input_field"], "output_field": row["output_field"],
            "task_type": row["task_type"], "metric": row["metric"], "task_name": spec.subtask,
            "track": track_of(spec.domain), "domain": spec.domain, "subtask": spec.subtask,
            "row_id": f"{spec.subtask}:{number}",
            "source": f"{spec.kind}:{spec.path}"}


def _matches(value: Any, where: dict[str, Any]) -> bool:
    return isinstance(value, dict) and all(value.get(k) == v for k, v in where.items())


def _fingerprint(content_digest: str, spec: SourceSpec) -> str:
    mapping = spec.model_dump(exclude={"path"})  # moving a file does not change its rows
    mapping["reader_version"] = READER_VERSION
    blob = json.dumps(mapping, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{content_digest}\n{blob}".encode()).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _existing_file(spec: SourceSpec) -> Path:
    path = Path(spec.path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (source {spec.subtask!r}, field path)")
    return path


# ---------------------------------------------------------------------------------------------
# Output values and multiple-choice options


def coerce_output(task_type: str, value: Any) -> Any:
    """Best-effort conversion of a source's answer to the task type's type; row_problems judges it."""
    if task_type == "multiple-choice" and isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if task_type in ("ranking", "retrieval"):
        if isinstance(value, str):
            text = value.strip()
            if re.fullmatch(r"\d+(\s*,\s*\d+)*", text):
                return [int(v) for v in text.split(",")]
            value = _literal(text, value)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v.strip().isdigit() or
                                                    isinstance(v, int) and not isinstance(v, bool)
                                                    for v in value):
            return [int(v) for v in value]
    if task_type == "named_entity_recognition" and isinstance(value, str):
        parsed = _literal(value.strip(), value)
        return list(parsed) if isinstance(parsed, (list, tuple)) else value
    return value


def _literal(text: str, fallback: Any) -> Any:
    """A JSON or Python literal from text, else `fallback`."""
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return fallback


def parse_options(value: Any) -> tuple[list[str] | None, str | None]:
    """Options from a list or a list-literal / one-per-line string; (None, None) when there are none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, str):
        parsed = _literal(value.strip(), None)
        value = parsed if isinstance(parsed, (list, tuple)) else value.strip().split("\n")
    if not isinstance(value, (list, tuple)):
        return None, f"options must be a list, got {type(value).__name__}"
    options = [str(v).strip() for v in value]
    while options and not options[-1]:
        options.pop()  # trailing empty option columns (a 3-option question in a 4-column file)
    if len(options) < 2:
        return None, f"need at least 2 options, got {len(options)}"
    if any(not o for o in options):
        return None, "an option is empty"
    return options, None


_LABEL = re.compile(r"^\s*(?:\(([A-Za-z0-9]+)\)|([A-Za-z0-9]+)[:.)])\s*")


def strip_labels(options: list[str]) -> list[str]:
    """Drop 'A: ' / '(b) ' / '1. ' prefixes when every option carries its own label in order."""
    for first in ("A", "a", "0", "1"):
        expected = [chr(ord(first) + i) if first.isalpha() else str(int(first) + i) for i in range(len(options))]
        matches = [_LABEL.match(o) for o in options]
        if all(m and (m.group(1) or m.group(2)) == e for m, e in zip(matches, expected)):
            return [o[m.end():].strip() or o for o, m in zip(options, matches)]
    return options


def mc_answer_index(answer: Any, options: list[str], clean: list[str]) -> tuple[int | None, str | None]:
    """The 0-based option index an answer names: an index, a letter label, or the option's text."""
    n = len(options)
    if isinstance(answer, bool):
        return None, f"answer must name an option, got {answer!r}"
    if isinstance(answer, int) or (isinstance(answer, str) and answer.strip().isdigit()):
        index = int(answer)
        return (index, None) if 0 <= index < n else (None, f"answer {index} is not a 0-based index of the {n} options")
    text = str(answer).strip()
    for i, (raw, plain) in enumerate(zip(options, clean)):
        if text.casefold() in (raw.casefold(), plain.casefold()):
            return i, None
    label = re.match(r"^\(?([A-Za-z])(?:\)|[:.)]|$)", text)
    if label and ord(label.group(1).upper()) - ord("A") < n:
        return ord(label.group(1).upper()) - ord("A"), None
    return None, f"answer {text[:60]!r} names none of the {n} options (give an index, a letter, or the option text)"


def _mc_row(question: str, raw_options: Any, answer: Any) -> tuple[dict[str, Any], list[str]]:
    options, problem = parse_options(raw_options)
    if problem or options is None:
        return {}, [problem or "multiple-choice needs options"]
    clean = strip_labels(options)
    index, problem = mc_answer_index(answer, options, clean)
    if problem:
        return {}, [problem]
    return {"input_field": format_mc_prompt(question, clean), "output_field": index,
            "task_type": "multiple-choice"}, []


# ---------------------------------------------------------------------------------------------
# shopbench


def _load_shopbench(spec: SourceSpec) -> SourceData:
    from harness.tasks.shopbench_io import read_shopbench

    path = _existing_file(spec)
    bench = read_shopbench(path, skip_bad=spec.skip_bad)
    wheres = _shopbench_wheres(path, bench.positions)
    records = (_Record(where, row, None, pos + 1) for where, row, pos in zip(wheres, bench.rows, bench.positions))
    notes = [f"{p} (skipped)" for p in bench.problems]
    return _collect(spec, str(path), records, lambda row: (dict(row), []), _file_digest(path),
                    notes, skipped_before=bench.skipped)


def _shopbench_wheres(path: Path, positions: tuple[int, ...]) -> list[str]:
    """`row N` (JSON array) or `line N` (JSON lines) for each kept record, as shopbench_io words it."""
    from harness.tasks.shopbench_io import _lines, _read_text

    text = _read_text(path)
    if text.lstrip().startswith("["):
        return [f"row {pos + 1}" for pos in positions]
    line_numbers = [number for number, _ in _lines(text)]
    return [f"line {line_numbers[pos]}" for pos in positions]


# ---------------------------------------------------------------------------------------------
# ecinstruct


def _load_ecinstruct(spec: SourceSpec) -> SourceData:
    from harness.tasks.shopbench_io import _read_text, _records  # the one JSON / JSON-lines reader

    path = _existing_file(spec)
    records = _records(path, _read_text(path))
    if spec.split is not None:
        spec_where = {**spec.where, "split": spec.split}
        spec = spec.model_copy(update={"where": spec_where})
    cols = {name: spec.fields.get(name, name) for name in FIELD_NAMES["ecinstruct"]}
    return _collect(spec, str(path), (_Record(r.where, r.value, r.parse_error) for r in records),
                    lambda rec: _ecinstruct_row(rec, cols, spec.task_type), _file_digest(path))


def _ecinstruct_row(rec: dict[str, Any], cols: dict[str, str], task_type: str | None):
    missing = [f"missing field {cols[k]!r}" for k in ("instruction", "output") if cols[k] not in rec]
    if missing:
        return {}, missing
    instruction, extra = rec[cols["instruction"]], rec.get(cols["input"], "")
    if not isinstance(instruction, str) or not instruction.strip():
        return {}, [f"{cols['instruction']!r} must be a non-empty string"]
    if not isinstance(extra, str):
        extra = json.dumps(extra, ensure_ascii=False)  # structured inputs become their JSON text
    prompt = instruction.strip() + (f"\n{extra.strip()}" if extra and extra.strip() else "")
    # Options given at all make the row multiple-choice: a one-option list is refused by _mc_row,
    # never quietly turned into a generation row.
    options_given = parse_options(rec.get(cols["options"])) != (None, None)
    task_type = task_type or ("multiple-choice" if options_given else "generation")
    if task_type == "multiple-choice":
        return _mc_row(prompt, rec.get(cols["options"]), rec[cols["output"]])
    return {"input_field": prompt + "\nOutput: ", "task_type": task_type,
            "output_field": coerce_output(task_type, rec[cols["output"]])}, []


# ---------------------------------------------------------------------------------------------
# mmlu_csv


def _load_csv(spec: SourceSpec) -> SourceData:
    path = _existing_file(spec)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    lines = list(_csv_records(text))
    if not lines:
        raise InputError(f"{path}: empty CSV file")
    header_row = lines[0][1] or []
    layout, notes = _csv_layout(path, header_row, spec.fields)
    body = lines[1:] if layout.header else lines
    records = (_csv_record(number, cells, error, layout) for number, cells, error in body)
    return _collect(spec, str(path), records, layout.build, _file_digest(path), notes)


def _csv_records(text: str) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(line number where the record starts, cells, csv error) for every non-blank record."""
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the reader resumes at the next line after an error
            yield start, None, f"unparseable CSV ({exc})"
            start = reader.line_num + 1
            continue
        if any(c.strip() for c in cells):
            yield start, cells, None
        start = reader.line_num + 1


@dataclass(frozen=True)
class _CsvLayout:
    header: bool
    columns: tuple[str, ...]  # names given to the cells of a record
    question: str
    answer: str
    choices: str | None  # a column holding the whole option list
    option_columns: tuple[str, ...]  # else: one column per option

    def build(self, rec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        if not str(rec[self.question]).strip():
            return {}, [f"empty {self.question!r}"]
        options = rec[self.choices] if self.choices else [rec[c] for c in self.option_columns]
        return _mc_row(rec[self.question], options, rec[self.answer].strip())


_OPTION_COLUMN = re.compile(r"^(?:(?:option|choice)[ _]?)?([a-j]|\d)$", re.IGNORECASE)


def _csv_layout(path: Path, first: list[str], fields: dict[str, str]) -> tuple[_CsvLayout, list[str]]:
    names = [c.strip() for c in first]
    lower = {n.lower(): n for n in names}
    question = fields.get("question", "question")
    if question.lower() not in lower:
        if fields:
            raise InputError(f"{path}: no column {question!r} in the header row ({', '.join(names)}); "
                             "check fields.question")
        if len(names) < 4:
            raise InputError(f"{path}: no header row with a 'question' column, and {len(names)} columns are "
                             "too few for the MMLU layout (question, options..., answer)")
        cols = tuple(["question"] + [f"option_{i}" for i in range(len(names) - 2)] + ["answer"])
        return (_CsvLayout(False, cols, "question", "answer", None, cols[1:-1]),
                [f"{path}: no header row; read in the MMLU layout (question, {len(names) - 2} options, answer)"])
    answer = lower.get(fields.get("answer", "answer").lower())
    if answer is None:
        raise InputError(f"{path}: no {fields.get('answer', 'answer')!r} column in the header row "
                         f"({', '.join(names)}); name it, or map yours with fields: {{answer: ...}}")
    if "choices" in fields:
        choices = lower.get(fields["choices"].lower())
        if choices is None:
            raise InputError(f"{path}: no column {fields['choices']!r} (fields.choices) in the header row "
                             f"({', '.join(names)})")
    else:
        choices = lower.get("choices") or lower.get("options")
    option_cols = tuple(n for n in names if _OPTION_COLUMN.match(n) and n not in (answer, lower[question.lower()]))
    if choices is None and len(option_cols) < 2:
        raise InputError(f"{path}: no 'choices' column and no option columns (A, B, C, D / option_a ... / "
                         f"choice_0 ...) in the header row ({', '.join(names)})")
    return _CsvLayout(True, tuple(names), lower[question.lower()], answer, choices, option_cols), []


def _csv_record(number: int, cells: list[str] | None, error: str | None, layout: _CsvLayout) -> _Record:
    where = f"line {number}"
    if error is not None or cells is None:
        return _Record(where, None, error or "unparseable CSV record")
    if len(cells) != len(layout.columns):
        return _Record(where, None, f"expected {len(layout.columns)} columns, got {len(cells)}")
    return _Record(where, dict(zip(layout.columns, cells)))


# ---------------------------------------------------------------------------------------------
# hf (datasets)


def _load_hf(spec: SourceSpec) -> SourceData:
    dataset, fingerprint, notes = _open_dataset(spec)
    columns = list(dataset.column_names)
    cols = _hf_columns(spec, columns)
    label = spec.path if spec.split is None else f"{spec.path}[{spec.split}]"
    records = (_Record(f"row {i + 1}", rec) for i, rec in enumerate(dataset))
    return _collect(spec, label, records, lambda rec: _hf_row(rec, cols, spec.task_type), fingerprint, notes)


def _hf_columns(spec: SourceSpec, columns: list[str]) -> dict[str, str]:
    cols = {k: v for k, v in spec.fields.items()}
    for name in FIELD_NAMES["hf"]:
        if name not in cols and name in columns:
            cols[name] = name
    missing = [f"{v!r} (fields.{k})" for k, v in cols.items() if v not in columns]
    for need in ("input_field", "output_field"):
        if need not in cols:
            missing.append(f"{need!r} (map it with fields.{need})")
    if not spec.task_type and "task_type" not in cols:
        missing.append("'task_type' (set task_type on the source, or map a column with fields.task_type)")
    if missing:
        raise InputError(f"{spec.path}: dataset lacks column(s) {', '.join(missing)}; "
                         f"its columns: {', '.join(columns)}")
    return cols


def _hf_row(rec: dict[str, Any], cols: dict[str, str], task_type: str | None):
    task_type = task_type or rec.get(cols.get("task_type", ""))
    prompt, answer = rec[cols["input_field"]], rec[cols["output_field"]]
    if task_type == "multiple-choice" and "options" in cols and rec.get(cols["options"]) is not None:
        if not isinstance(prompt, str):
            return {}, [f"{cols['input_field']!r} must be a string, got {type(prompt).__name__}"]
        return _mc_row(prompt, rec[cols["options"]], answer)
    row = {"input_field": prompt, "output_field": coerce_output(str(task_type), answer), "task_type": task_type}
    if "metric" in cols:
        row["metric"] = rec.get(cols["metric"])
    return row, []


_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def _open_dataset(spec: SourceSpec):
    """(Dataset of the chosen split, fingerprint, notes) for a saved dir, a data folder or file, or a hub id."""
    try:
        import datasets
    except ImportError as exc:
        raise MissingDependencyError("kind hf needs the `datasets` package: pip install datasets") from exc
    path = Path(spec.path)
    if not path.exists():
        return _pick_split(spec, _load_hub(spec.path), None)
    try:
        if path.is_dir() and any((path / f).exists() for f in ("state.json", "dataset_dict.json")):
            return _pick_split(spec, datasets.load_from_disk(str(path)), None)
        if path.is_dir():
            return _pick_split(spec, datasets.load_dataset(str(path)), None)  # a folder of data files
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise InputError(f"{path}: kind hf reads {', '.join(sorted(_FILE_BUILDERS))} files or dataset "
                             "directories; for ShopBench JSON use kind shopbench")
        # A single file: fingerprint its bytes (the datasets cache key depends on path and mtime).
        return _pick_split(spec, datasets.load_dataset(builder, data_files=str(path)), _file_digest(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise InputError(f"{path}: could not load the dataset ({type(exc).__name__}: {exc})") from exc


def _load_hub(name: str):
    import datasets

    _check_hub_id(name)
    try:
        return datasets.load_dataset(name)
    except (FileNotFoundError, ValueError, OSError) as exc:  # ConnectionError is an OSError
        offline = " with HF_HUB_OFFLINE set, only the local cache is read" if datasets.config.HF_HUB_OFFLINE else ""
        raise InputError(f"{name}: could not load this hub dataset{offline} ({type(exc).__name__}: {exc}). "
                         "Offline, point `path` at a directory written by Dataset.save_to_disk.") from exc


def _pick_split(spec: SourceSpec, loaded: Any, content_digest: str | None):
    notes: list[str] = []
    if hasattr(loaded, "keys"):  # DatasetDict
        splits = list(loaded.keys())
        split = spec.split or ("train" if "train" in splits else splits[0] if len(splits) == 1 else None)
        if split not in splits:
            asked = f"split {spec.split!r} not found" if spec.split else "several splits and no `split` given"
            raise InputError(f"{spec.path}: {asked}{did_you_mean(str(spec.split), splits) if spec.split else ''}; "
                             f"splits: {', '.join(splits)}")
        loaded = loaded[split]
    elif spec.split:
        notes.append(f"{spec.path}: a single saved split; `split: {spec.split}` not applied")
    return loaded, content_digest or f"hf:{loaded._fingerprint}", notes


def _check_hub_id(name: str) -> None:
    """Fail fast, with a fix, when a hub dataset cannot be fetched (instead of minutes of retries)."""
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise InputError(f"{name}: no such file or directory, and not a dataset id like 'org/name' (field path)")
    import datasets

    if datasets.config.HF_HUB_OFFLINE:
        return  # offline mode reads the local cache only, and fails at once when it is not there
    endpoint = hub_endpoint()
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise InputError(
            f"{name}: not a local path, and the Hugging Face hub ({endpoint}) is unreachable ({exc}). "
            "Offline, point `path` at a directory written by Dataset.save_to_disk, or set HF_HUB_OFFLINE=1 "
            "to read a copy already in the local datasets cache.") from exc


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT
