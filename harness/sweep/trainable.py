"""The trainable: what runs on a Ray worker for each trial of a sweep.

It rebuilds the TrialSpec from the driver's table (by trial id, or by the factor choices Optuna
drew), runs it with run_trial (or reuses its finished record) and reports the outcome to Tune.
Losing the driver mid-trial writes no record, so a resume runs the trial again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.results import TrialRecord, read_record
from harness.spec.schema import TrialSpec, WandbSpec
from harness.sweep.outcomes import is_done, outcome_metrics
from harness.sweep.search import factor_key
from harness.tracking import shutdown_service
from harness.trial.run import run_trial, trial_dir


def _trainable(config: dict[str, Any], table: dict[str, Any] | None = None) -> None:
    """Rebuild the spec, run it (or reuse its finished record), report the outcome to Tune."""
    import ray
    import torch
    from ray import tune

    os.environ.update(config["env"])  # workers may predate the driver's environment
    trial_id = config.get("trial_id") or table["keys"][factor_key(config)]
    spec = TrialSpec.model_validate(table["trials"][trial_id])
    if spec.trial_id != trial_id:  # the record would land under another id, and the driver call it lost
        raise RuntimeError(f"trial {trial_id}: this worker's harness computes id {spec.trial_id} for the same "
                           "spec, so it runs a different harness version than the driver; install the "
                           "same version on every node (and do not edit the code during a sweep)")
    torch.set_num_threads(max(int(config["threads"]), 1))
    results_dir = Path(config["results_dir"])
    tag = {"harness_trial_id": trial_id}
    record = _finished_record(results_dir, spec)
    if record is None:
        def report(metrics: dict[str, Any]) -> None:
            last = spec.train.steps  # None under train.epochs, where ASHA is refused
            if last is not None and metrics.get("step", 0) >= last:  # ASHA acts before the last step only:
                metrics = {k: v for k, v in metrics.items() if k != "eval_loss"}  # never stop a finished run
            try:
                tune.report({**metrics, **tag, "harness_done": False})
            except Exception as exc:  # the driver is gone: write nothing, a resume re-runs the trial
                raise DriverLost(f"cannot report to the Tune driver: {exc}") from exc

        meta = {"ray_node_id": ray.get_runtime_context().get_node_id(),
                "tune_trial_id": tune.get_context().get_trial_id()}
        try:
            record = run_trial(spec, results_dir, reporter=report, ranks=config.get("ranks", 1),
                               wandb=WandbSpec.model_validate(config["wandb"]), meta=meta)
        finally:
            shutdown_service()
    tune.report({**outcome_metrics(record), **tag, "harness_done": True})


class DriverLost(BaseException):
    """Reporting to Tune failed: not an Exception, so run_trial writes no record for it."""


def _finished_record(results_dir: Path, spec: TrialSpec) -> TrialRecord | None:
    """The trial's record when it is already done (an Optuna repeat, a second driver): not re-run."""
    path = trial_dir(results_dir, spec) / f"{spec.trial_id}.json"
    try:
        record = read_record(path) if path.exists() else None
    except InputError:
        return None
    return record if record is not None and is_done(record) else None
