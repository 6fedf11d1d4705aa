"""Trial records: the schema, atomic writes, and the tidy scores table derived from them.

Records are the source of truth (`results/<sweep>/trials/<trial_id>.json`); `scores.parquet` and the
W&B runs are derived from them. This module imports neither torch nor ray, so analysis can use it.

Record layout (schema_version 1), one JSON document per trial:
    run   trial_id, cell_id, kind ("trial" | "baseline"), sweep, factors {domains, subtasks, n_domains,
          n_subtasks, volume, lora_rank, lora_alpha, seed, ...}
    data  fingerprint, examples/tokens per subtask, diversity measures, contamination count
    train status (success | failed | cancelled) + reason, steps, tokens, losses, wall time, memory, curve
    eval  {eval_set_name: {tasks: {name: {score, metric, n, track}}, tracks: {track: score}, overall, pooled}}
    meta  package versions, git commit and dirty flag, device, base-model id and revision
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import InputError

SCHEMA_VERSION = 1


class TrialStatus(str, enum.Enum):
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


class _Model(BaseModel):
    # Records from newer minor versions may carry extra keys; keep them rather than fail.
    model_config = ConfigDict(extra="allow")


class RunInfo(_Model):
    trial_id: str
    cell_id: str
    kind: str = "trial"  # "trial" (a LoRA fine-tune) or "baseline" (the untrained base model)
    sweep: str
    factors: dict[str, Any]


class DataInfo(_Model):
    fingerprint: str = ""
    examples: dict[str, int] = Field(default_factory=dict)  # rows per subtask
    tokens: dict[str, int] = Field(default_factory=dict)  # the mixture's tokens per subtask (prompt + answer)
    diversity: dict[str, float] = Field(default_factory=dict)  # n_domains, n_subtasks, entropy, ...
    contaminated_removed: int = 0
    skipped_rows: dict[str, int] = Field(default_factory=dict)  # bad rows skipped, per source file


class TrainInfo(_Model):
    status: TrialStatus
    reason: str | None = None  # why it failed or was cancelled
    steps: int = 0
    tokens: int = 0  # supervised (response) tokens seen
    final_loss: float | None = None
    eval_loss: float | None = None
    wall_s: float = 0.0
    tokens_per_s: float = 0.0
    peak_mem_mb: float = 0.0
    trainable_params: int = 0
    adapter_bytes: int = 0  # the saved adapter's size on disk (0: not saved)
    loss_curve: list[tuple[int, float]] = Field(default_factory=list)  # (step, train loss)
    retries: list[str] = Field(default_factory=list)  # e.g. "oom: micro_batch 8 -> 4"
    # How the steps ran: micro_batch, grad_accum, grad_checkpointing, packing, attention (what the
    # auto settings and any out-of-memory retry chose; none of it changes what is learnt)
    layout: dict[str, Any] = Field(default_factory=dict)


class TaskResult(_Model):
    score: float
    metric: str
    n: int
    track: str
    se: float | None = None  # standard error over the task's rows (evaluation noise; absent before v2 records)
    ci95: list[float] | None = None  # score +- 1.96 se


class EvalResult(_Model):
    tasks: dict[str, TaskResult] = Field(default_factory=dict)
    tracks: dict[str, float] = Field(default_factory=dict)
    overall: float | None = None  # mean of track scores (ShopBench "Track 5")
    pooled: float | None = None  # mean over all tasks


class TrialRecord(_Model):
    schema_version: int = SCHEMA_VERSION
    run: RunInfo
    data: DataInfo = Field(default_factory=DataInfo)
    train: TrainInfo
    eval: dict[str, EvalResult] = Field(default_factory=dict)  # keyed by evaluation-set name
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.train.status is TrialStatus.SUCCESS


# ---------------------------------------------------------------------------------------------
# Writing and reading


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half a file."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """`write(tmp)` fills a uniquely named temp file beside `path`, which then replaces `path` in one
    rename: readers never see half a file, two writers never share a temp name, and a failure (a full
    disk) leaves the old file as it was and no temp file behind. An OSError names `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def write_record(record: TrialRecord, trials_dir: Path) -> Path:
    path = Path(trials_dir) / f"{record.run.trial_id}.json"
    atomic_write_text(path, record.model_dump_json(indent=2))
    return path


def read_record(path: Path) -> TrialRecord:
    """Parse one record; a clear InputError names the file when it is not a record we understand."""
    path = Path(path)
    raw = _record_json(path)
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise InputError(
            f"{path}: record schema_version {version!r} is not supported (this harness reads "
            f"version {SCHEMA_VERSION}); re-run the trial or use the harness version that wrote it"
        )
    try:
        return TrialRecord.model_validate(raw)
    except ValidationError as exc:
        raise InputError(f"{path}: malformed trial record: {exc}") from exc


def _record_json(path: Path) -> Any:
    """A record file's JSON; InputError with the reason (unreadable, not UTF-8, truncated, too deep)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"{path}: not a readable trial record ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a trial record: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not a readable JSON trial record ({exc.msg} at line {exc.lineno}; "
                         "truncated or edited by hand?)") from None
    except (ValueError, RecursionError) as exc:  # an int past the digit limit, or nesting past the recursion limit
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InputError(f"{path}: not a readable JSON trial record ({reason})") from None


def load_records(results_dir: Path) -> tuple[list[TrialRecord], list[str]]:
    """All records under results_dir/trials (and baseline/), plus one message per unreadable file.

    Unreadable files are reported, not fatal: one bad file must not hide the rest of a sweep.
    """
    results_dir = Path(results_dir)
    records, problems = [], []
    for sub in ("trials", "baseline"):
        for path in sorted((results_dir / sub).glob("*.json")):
            try:
                records.append(read_record(path))
            except InputError as exc:
                problems.append(str(exc))
    return records, problems


# ---------------------------------------------------------------------------------------------
# The tidy table


def _factor_value(value: Any) -> Any:
    # Lists become "a+b" strings so that they group and compare in pandas.
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value)
    return value


def score_rows(record: TrialRecord) -> list[dict[str, Any]]:
    """One tidy row per (eval set, task) of a successful record; failed trials have no rows."""
    if not record.ok:
        return []
    base = {
        "trial_id": record.run.trial_id,
        "cell_id": record.run.cell_id,
        "kind": record.run.kind,
        "sweep": record.run.sweep,
        "data_fingerprint": record.data.fingerprint,
    }
    base.update({k: _factor_value(v) for k, v in record.run.factors.items()})
    base.update({f"div_{k}": v for k, v in record.data.diversity.items()})
    rows = []
    for set_name, result in record.eval.items():
        for task, ts in result.tasks.items():
            rows.append(
                {**base, "eval_set": set_name, "task": task, "track": ts.track,
                 "metric": ts.metric, "n": ts.n, "score": ts.score}
            )
    return rows


def write_scores_table(results_dir: Path) -> Path:
    """Rebuild scores.parquet from the records (idempotent: it is derived, never appended to)."""
    import pandas as pd

    results_dir = Path(results_dir)
    records, _ = load_records(results_dir)
    rows = [row for rec in records for row in score_rows(rec)]
    frame = pd.DataFrame(rows)
    path = results_dir / "scores.parquet"
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return path
