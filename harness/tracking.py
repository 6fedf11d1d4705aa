"""Weights & Biases logging for one trial: best effort, never at the cost of local results.

One run per trial: id derived from the trial id (a re-run resumes the same run instead of creating a
duplicate), grouped by cell, named from the factors, tagged with the sweep name. Offline by default
(no account needed); `WANDB_MODE` in the environment overrides the sweep's mode. Any W&B failure is
logged as a warning and the run becomes a no-op.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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


def wandb_run_id(sweep: str, trial_id: str) -> str:
    return f"{sweep}-{trial_id}"[:64]


def start_trial_run(*, sweep: str, trial_id: str, cell_id: str, name: str, config: dict[str, Any],
                    project: str, entity: str | None, mode: str, root: Path,
                    init_timeout: float = 90.0) -> TrialLogger:
    """A W&B run for one trial, or a no-op logger when W&B is disabled, missing or unreachable.

    init_timeout (seconds) bounds how long an unreachable server can hold the trial up."""
    mode = os.environ.get("WANDB_MODE", mode)
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
            group=cell_id, name=name, tags=[sweep], config=config, mode=mode, dir=str(root),
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
