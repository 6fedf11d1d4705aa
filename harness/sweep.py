"""The Ray Tune driver: a thin adapter that runs already-expanded TrialSpecs with run_trial.

    harness sweep sweeps/smoke.yaml                 # local Ray, trials in parallel up to the CPUs
    harness sweep sweeps/full.yaml --address auto   # an existing Ray cluster
    harness sweep sweeps/smoke.yaml --resume        # skip trials that already have a record

Records are the source of truth: a trial whose record says success is never run again, and the tidy
scores.parquet is rebuilt from the records at the end. Ray only sees trial specs as plain dicts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.config import SweepSpec, TrialSpec, baseline_trial, expand_trials
from harness.errors import InputError
from harness.results import TrialStatus, load_records, write_record, write_scores_table
from harness.trial import failed_record_for, run_trial, trial_dir

log = logging.getLogger(__name__)

# Settings the driver's environment passes on to trials (fault injection, W&B mode, caches).
FORWARDED_ENV = ("HARNESS_FAULTS", "HARNESS_CACHE_DIR", "WANDB_MODE", "HF_HUB_OFFLINE",
                 "HARNESS_MINILM_MODEL", "HARNESS_MULTILINGUAL_ST_MODEL")


@dataclass
class SweepOutcome:
    results_dir: Path
    ran: int
    skipped: int
    failed: list[str]


def planned_trials(spec: SweepSpec) -> list[TrialSpec]:
    trials = expand_trials(spec)
    return ([baseline_trial(spec)] if spec.eval.baseline else []) + trials


def finished_ids(results_dir: Path) -> set[str]:
    """Trial ids whose record says success: these are never re-run."""
    records, _ = load_records(results_dir)
    return {r.run.trial_id for r in records if r.ok}


def write_resolved_spec(spec: SweepSpec, results_dir: Path) -> None:
    """Keep the resolved spec beside the results; refuse to mix two different sweeps in one dir."""
    path = results_dir / "sweep.yaml"
    text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    if path.exists() and path.read_text() != text:
        old = yaml.safe_load(path.read_text()) or {}
        if old.get("name") != spec.name:
            raise InputError(f"{results_dir} already holds sweep {old.get('name')!r}; "
                             f"use another output_dir or name")
        path.with_name("sweep.previous.yaml").write_text(path.read_text())
    results_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ---------------------------------------------------------------------------------------------
# Resources


def trial_resources(spec: SweepSpec, cluster: dict[str, float]) -> dict[str, float]:
    """What each trial asks Ray for. Never a resource the cluster lacks: Ray would wait forever."""
    gpus_available = cluster.get("GPU", 0)
    gpu = spec.resources.gpu
    if gpu == "auto":
        gpu = 1 if gpus_available else 0
    if gpu and not gpus_available:
        raise InputError(f"resources.gpu: {gpu} GPU per trial requested but the Ray cluster has no GPU; "
                         "set resources.gpu: 0 (or auto) to run on CPUs")
    if gpu > gpus_available:
        raise InputError(f"resources.gpu: {gpu} GPUs per trial but the cluster has {gpus_available:g}")
    if spec.resources.cpu > cluster.get("CPU", 0):
        raise InputError(f"resources.cpu: {spec.resources.cpu:g} CPUs per trial but the cluster has "
                         f"{cluster.get('CPU', 0):g}")
    return {"cpu": spec.resources.cpu, "gpu": float(gpu)}


def _init_ray(address: str | None, num_cpus: int | None):
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return ray
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=True)
    return ray


# ---------------------------------------------------------------------------------------------
# The trainable


def _trainable(config: dict[str, Any]) -> None:
    """Runs on a Ray worker: rebuild the spec, run it, report the outcome to Tune."""
    import torch
    from ray import tune

    spec = TrialSpec.model_validate(config["trial"])
    torch.set_num_threads(max(int(config["threads"]), 1))
    os.environ.update(config["env"])  # workers may predate the driver's environment

    def report(metrics: dict[str, Any]) -> None:
        tune.report({**metrics, "done": False})

    record = run_trial(spec, Path(config["results_dir"]), reporter=report,
                       wandb_mode=config["wandb"]["mode"], wandb_project=config["wandb"]["project"],
                       wandb_entity=config["wandb"]["entity"])
    overall = {f"{k}/overall": v.overall for k, v in record.eval.items()}
    tune.report({"status": record.train.status.value, "done": True, **overall})


def run_sweep(spec: SweepSpec, *, address: str | None = None, resume: bool = False,
              num_cpus: int | None = None) -> SweepOutcome:
    from ray import tune

    results_dir = spec.results_dir.resolve()
    existing = finished_ids(results_dir)
    if existing and not resume:
        raise InputError(f"{results_dir} already has {len(existing)} finished trial(s); pass --resume "
                         "to run only the missing ones, or choose another output_dir")
    write_resolved_spec(spec, results_dir)
    trials = planned_trials(spec)
    todo = [t for t in trials if t.trial_id not in existing]
    if todo:
        _prepare_base_model(spec)
        ray = _init_ray(address, num_cpus)
        resources = trial_resources(spec, ray.cluster_resources())
        _run_tuner(spec, todo, resources, results_dir)
        _record_lost_trials(todo, results_dir)
    write_scores_table(results_dir)
    records, _ = load_records(results_dir)
    failed = [r.run.trial_id for r in records if r.train.status is not TrialStatus.SUCCESS]
    return SweepOutcome(results_dir, ran=len(todo), skipped=len(trials) - len(todo), failed=failed)


def _prepare_base_model(spec: SweepSpec) -> None:
    """Build/convert builtin models once in the driver, before trials start together."""
    from harness.model import resolve_model_path

    resolve_model_path(spec.base_model)


def _run_tuner(spec: SweepSpec, todo: list[TrialSpec], resources: dict[str, float], results_dir: Path):
    from ray import tune

    trainable = tune.with_resources(_trainable, resources)
    param_space = {
        "trial": tune.grid_search([t.model_dump(mode="json") for t in todo]),
        "results_dir": str(results_dir),
        "threads": max(int(resources["cpu"]), 1),
        "wandb": spec.wandb.model_dump(),
        "env": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ},
    }
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.resources.max_concurrent),
        run_config=tune.RunConfig(name="tune", storage_path=str(results_dir / "ray"), verbose=1,
                                  failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    )
    return tuner.fit()


def _record_lost_trials(todo: list[TrialSpec], results_dir: Path) -> None:
    """A trial whose worker died (killed, segfault) wrote no record: write a failed one for it."""
    have = {r.run.trial_id for r in load_records(results_dir)[0]}
    for spec in todo:
        if spec.trial_id not in have:
            record = failed_record_for(spec, "worker died before writing a record (killed or crashed)")
            write_record(record, trial_dir(results_dir, spec))
