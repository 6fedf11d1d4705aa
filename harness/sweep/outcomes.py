"""What a trial's record means to the driver: done for good or not, the metrics it reports, and the
record of a trial that ended without writing one.

A trial is done when its record says success, or that the ASHA scheduler stopped it on purpose:
neither runs again. `outcome_metrics` is what a finished trial reports to Tune (and Optuna); a
trial that ASHA stopped, or whose worker died, gets its record from Tune's result.
"""

from __future__ import annotations

from typing import Any

from harness.results import TrialRecord, TrialStatus
from harness.spec.schema import TrialSpec
from harness.trial.run import failed_record_for

STOPPED_BY_SCHEDULER = "asha"  # record.meta["stopped_by"] of a trial ASHA stopped: done, not re-run


def is_done(record: TrialRecord) -> bool:
    """Finished for good: a success, or a trial the scheduler stopped on purpose."""
    return record.ok or (record.train.status is TrialStatus.CANCELLED
                         and record.meta.get("stopped_by") == STOPPED_BY_SCHEDULER)


def outcome_metrics(record: TrialRecord) -> dict[str, Any]:
    """The final result a trial reports: status, held-out loss, overall and pooled scores.
    No "step" key: ASHA acts on intermediate reports only."""
    out: dict[str, Any] = {"status": record.train.status.value}
    if record.train.eval_loss is not None:
        out["eval_loss"] = record.train.eval_loss
    for name, res in record.eval.items():
        out.update({f"{name}/{k}": v for k, v in (("overall", res.overall), ("pooled", res.pooled))
                    if v is not None})
    return out


def _record_for_result(spec: TrialSpec, result) -> TrialRecord:
    metrics = result.metrics or {}
    if result.error is None and not metrics.get("harness_done") and "eval_loss" in metrics:
        step, loss = metrics.get("step"), metrics["eval_loss"]
        record = failed_record_for(spec, f"early-stopped by ASHA at step {step}: held-out loss "
                                         f"{loss:.4f} trailed its rung", status=TrialStatus.CANCELLED)
        record.train.steps, record.train.eval_loss = int(step or 0), float(loss)
        record.train.final_loss = metrics.get("train_loss")
        record.meta.update({"stopped_by": STOPPED_BY_SCHEDULER, "host": metrics.get("hostname")})
        return record
    return failed_record_for(spec, "worker died before writing a record" + _error_reason(result.error))


def _error_reason(error: BaseException | None) -> str:
    """': ActorDiedError: The actor died unexpectedly ... (pid 123, ip 10.0.0.2). ... Worker exit
    detail: ...' from Tune's error: Ray's own words, without its generic list of common causes."""
    if error is None:
        return " (killed or crashed)"
    text = str(error).split("Some common causes include", 1)[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    where = [ln for ln in lines if ln.startswith(("pid:", "ip:"))]
    prose = [ln for ln in lines if ":" not in ln.split(" ", 1)[0] or ln.endswith(".")]
    prose = [ln for ln in prose if not ln.startswith(("Failure #", "class_name:", "actor_id:", "namespace:"))]
    summary = " ".join(prose)
    if where and prose:
        summary = f"{prose[0].rstrip('.')} ({', '.join(where)}). " + " ".join(prose[1:])
    return f": {type(error).__name__}: {' '.join(summary.split())[:600]}".rstrip()
