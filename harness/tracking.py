"""Weights & Biases logging for one trial: best effort, never at the cost of local results.

One run per trial: id derived from the trial id (a re-run resumes the same run instead of creating a
duplicate), named from the factors, grouped and tagged by the sweep (`harness analyze --wandb` puts
the analysis run in the same group; harness.analysis.wandb_log), with the kind (trial, baseline,
analysis) as its job type. Offline by default (no account needed); `WANDB_MODE` in the environment
overrides the sweep's mode. Any W&B failure is logged as a warning and the run becomes a no-op.

What a run holds, under names that stay the same from sweep to sweep so that W&B's parallel
coordinates, scatter and line panels work from the project page without setup:

- config (trial_config): every factor under its own name (domains and subtasks joined with "+", as
  in scores.parquet, so they group), plus sweep, kind, trial_id, cell_id, base_model.
- history: train/loss and eval/loss per step; the last step also holds (score_row) `overall`,
  `pooled`, `track/<track>` and the numeric factors as `factor/<name>`, the x-axes a line panel
  needs (W&B plots lines only against logged values, not config).
- summary (record_summary): that row, `task/<task>`, `diversity/<measure>`, for every eval set
  `<set>/overall`, `<set>/pooled`, `<set>/track/<track>`, `<set>/<task>`, and status, reason, losses.
  The unprefixed scores are the eval set the analysis reads by default (`eval_set`: the first name
  in sorted order), so a panel and report.md show the same number.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.results import TrialRecord

log = logging.getLogger(__name__)

MAX_RUN_ID = 64  # W&B's limit on a run id
# Numeric factors also logged as history values (`factor/<name>`): a line panel's x-axis.
AXIS_FACTORS = ("n_domains", "n_subtasks", "volume", "lora_rank", "lora_alpha", "adapter_params",
                "seed")


class TrialLogger:
    def __init__(self, run: Any = None):
        self._run = run

    @property
    def active(self) -> bool:
        return self._run is not None

    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        self._call("log", data, step=step)

    def summary(self, data: dict[str, Any]) -> None:
        if self._run is not None:
            try:
                self._run.summary.update(data)
            except Exception as exc:  # noqa: BLE001 - tracking must never fail a trial
                self._disable(exc)

    def log_record(self, record: TrialRecord) -> None:
        """The finished trial's scores (into the last history step) and its whole summary."""
        if self._run is None:
            return
        try:
            row, summary = score_row(record), record_summary(record)
        except Exception as exc:  # noqa: BLE001 - an odd record must not fail the trial either
            self._disable(exc)
            return
        if row:
            self.log(row)
        self.summary(summary)

    def finish(self, exit_code: int = 0) -> None:
        self._call("finish", exit_code=exit_code)
        self._run = None

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        if self._run is None:
            return
        try:
            getattr(self._run, name)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self._disable(exc)

    def _disable(self, exc: Exception) -> None:
        log.warning("W&B logging disabled for this trial: %s", exc)
        self._run = None


def wandb_run_id(sweep: str, suffix: str) -> str:
    """`<sweep>-<suffix>` (suffix: a trial id, or "analysis"); a sweep name too long for W&B's 64
    characters is cut and given a hash of the whole name, so the suffix, which tells runs apart,
    is never cut off."""
    run_id = f"{sweep}-{suffix}"
    if len(run_id) <= MAX_RUN_ID:
        return run_id
    digest = hashlib.sha256(sweep.encode()).hexdigest()[:8]
    keep = MAX_RUN_ID - len(suffix) - len(digest) - 2
    return f"{sweep[:keep]}-{digest}-{suffix}"


def wandb_mode(mode: str) -> str:
    """The sweep's mode unless WANDB_MODE in the environment says otherwise."""
    return os.environ.get("WANDB_MODE", mode)


def trial_config(factors: dict[str, Any], **ids: Any) -> dict[str, Any]:
    """A trial run's config: every factor (lists joined with "+") and the ids given (sweep, kind,
    trial_id, cell_id, base_model)."""
    flat = {k: "+".join(map(str, v)) if isinstance(v, (list, tuple)) else v
            for k, v in factors.items()}
    return {**flat, **ids}


def primary_eval_set(record: TrialRecord) -> str | None:
    """The eval set the analysis reads by default: the first name in sorted order."""
    return min(record.eval) if record.eval else None


def score_row(record: TrialRecord) -> dict[str, Any]:
    """The last history values of a scored trial: overall, pooled, per-track scores and the numeric
    factors; empty when the trial has no scores (failed before evaluation)."""
    name = primary_eval_set(record)
    if name is None:
        return {}
    res = record.eval[name]
    row = {"overall": res.overall, "pooled": res.pooled,
           **{f"track/{t}": v for t, v in res.tracks.items()}}
    factors = record.run.factors
    row.update({f"factor/{k}": factors[k] for k in AXIS_FACTORS
                if isinstance(factors.get(k), (int, float))})
    return {k: v for k, v in row.items() if v is not None}


def record_summary(record: TrialRecord) -> dict[str, Any]:
    """A finished trial's summary (see the module docstring for the names)."""
    out: dict[str, Any] = {"eval_set": primary_eval_set(record), **score_row(record)}
    if out["eval_set"] is not None:
        out.update({f"task/{t}": s.score for t, s in record.eval[out["eval_set"]].tasks.items()})
    for name, res in record.eval.items():
        out.update({f"{name}/overall": res.overall, f"{name}/pooled": res.pooled,
                    **{f"{name}/track/{t}": v for t, v in res.tracks.items()},
                    **{f"{name}/{t}": s.score for t, s in res.tasks.items()}})
    out.update({f"diversity/{k}": v for k, v in record.data.diversity.items()})
    train = record.train
    out.update({"status": train.status.value, "reason": train.reason,
                "train/final_loss": train.final_loss, "eval/loss": train.eval_loss,
                "train/steps": train.steps, "train/tokens_per_s": train.tokens_per_s,
                "train/wall_s": train.wall_s, "trainable_params": train.trainable_params})
    return {k: v for k, v in out.items() if v is not None}  # W&B keeps no nulls in a summary


def start_trial_run(*, sweep: str, trial_id: str, cell_id: str, name: str, config: dict[str, Any],
                    project: str, entity: str | None, mode: str, root: Path,
                    init_timeout: float = 90.0, kind: str = "trial") -> TrialLogger:
    """A W&B run for one trial, or a no-op logger when W&B is disabled, missing or unreachable.

    cell_id is in the config (group the runs table by it to average a cell's seeds); the run's group
    is the sweep. init_timeout (seconds) bounds how long an unreachable server can hold the trial up."""
    mode = wandb_mode(mode)
    if mode == "disabled":
        return TrialLogger()
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed (pip install wandb); trial logs stay local")
        return TrialLogger()
    root.mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(
            project=project, entity=entity, id=wandb_run_id(sweep, trial_id), resume="allow",
            group=sweep, job_type=kind, name=name, tags=[sweep, kind],
            config={"cell_id": cell_id, **config}, mode=mode, dir=str(root),
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", init_timeout=init_timeout,
                                    login_timeout=init_timeout),
        )
    except Exception as exc:  # noqa: BLE001 - unreachable server, bad key, ...: keep going
        log.warning("W&B init failed (%s); the trial goes on and its record is written locally", exc)
        return TrialLogger()
    return TrialLogger(run)


def shutdown_service() -> None:
    """Stop this process's W&B service now, while it is still reachable. A Ray worker that leaves it to
    wandb's exit hook prints "ConnectionResetError: Connection lost" at teardown (the service is gone
    by then), which reads like a failed trial. No-op where wandb was never imported."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is None:
        return
    try:
        wandb.teardown()
    except Exception as exc:  # noqa: BLE001 - logging must never fail a trial
        log.debug("wandb.teardown failed: %s", exc)
