"""The Ray Tune driver: a thin adapter that runs already-expanded TrialSpecs with run_trial.

    harness sweep sweeps/smoke.yaml                      # local Ray, trials in parallel up to the CPUs
    harness sweep sweeps/full_factorial.yaml --address auto        # an existing Ray cluster
    harness sweep sweeps/full_factorial.yaml --address ray://head:10001
    harness sweep sweeps/smoke.yaml --resume             # run only trials without a finished record
    harness sweep sweeps/smoke.yaml --set search.method=optuna --set search.num_samples=4

Records are the source of truth: a trial whose record says success (or that ASHA stopped) is never
run again, and the tidy scores.parquet is rebuilt from the records at the end. So `--resume` works
after the driver was killed at any moment, and after a restart that lost Ray's own state
(`results/<name>/ray/`): it needs the records only. Ray only sees trial ids and factor choices.

On a cluster, `output_dir` must be storage that every node and the driver see (NFS, a shared disk):
workers write records and adapters there, and Tune's `storage_path` is `<output_dir>/<name>/ray`.
The harness must be installed on every node.

Resources (`resources:`): each trial asks for `cpu` CPUs and `gpu` GPUs; a fraction (0.25) packs
four trials on one GPU; `auto` takes a whole GPU when the cluster has one, else runs on CPUs. A
request that no single node can hold is refused before anything starts. A trial on several whole
GPUs (`gpu: 4`) runs data-parallel, one torch.distributed process per GPU (harness.training.ranks);
`resources.ranks: 2` does the same on CPUs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import InputError
from harness.results import TrialStatus, atomic_write_text, load_records, write_scores_table
from harness.spec.expand import baseline_trial, expand_trials
from harness.spec.load import local_paths
from harness.spec.schema import SweepSpec, TrialSpec, search_metric
from harness.sweep.cluster import _init_ray
from harness.sweep.outcomes import _record_for_result, is_done
from harness.sweep.preflight import check_evaluation, evaluation_metrics
from harness.sweep.resources import alive_nodes, trial_resources
from harness.sweep.search import (FACTORS, FactorSampler, _key_text, _scheduler, factor_key, factor_keys,
                                  factor_searcher)
from harness.sweep.trainable import _trainable
from harness.trial.run import failed_record_for, save_record, trial_dir

log = logging.getLogger(__name__)

# Settings the driver's environment passes on to trials (fault injection, W&B mode, caches).
FORWARDED_ENV = ("HARNESS_FAULTS", "HARNESS_CACHE_DIR", "WANDB_MODE", "WANDB_BASE_URL", "HF_HUB_OFFLINE",
                 "HARNESS_MINILM_MODEL", "HARNESS_MULTILINGUAL_ST_MODEL")


@dataclass
class SweepOutcome:
    results_dir: Path
    ran: int
    skipped: int
    failed: list[str]
    cancelled: list[str] = field(default_factory=list)  # stopped early (ASHA)
    unplanned: int = 0  # records in the results folder that match no planned trial (unplanned_note says why)


def planned_trials(spec: SweepSpec) -> list[TrialSpec]:
    trials = expand_trials(spec)
    return ([baseline_trial(spec)] if spec.eval.baseline else []) + trials


def finished_ids(results_dir: Path) -> set[str]:
    """Trial ids whose record says they are done: these are never re-run."""
    records, _ = load_records(results_dir)
    return {r.run.trial_id for r in records if is_done(r)}


def report_unreadable(problems: list[str], todo: list[TrialSpec] | None = None) -> None:
    """One terminal line per record file that could not be read; with `todo`, say which trial it was
    and that it runs again (its unreadable record does not count as done)."""
    again = {t.trial_id for t in todo or []}
    for problem in problems:
        stem = Path(problem.split(": ", 1)[0]).stem
        tail = f"; trial {stem} runs again" if stem in again else ""
        log.warning("skipped unreadable record %s%s", problem, tail)


def unplanned_records(results_dir: Path, trials: list[TrialSpec]) -> list[str]:
    """Trial ids of the records in results_dir that no planned trial has (empty when there are none)."""
    planned = {t.trial_id for t in trials}
    records, _ = load_records(results_dir)
    return sorted({r.run.trial_id for r in records} - planned)


def unplanned_note(count: int, results_dir: Path) -> str | None:
    """Why records can stop matching the plan, for `plan` and `sweep --resume` to say aloud."""
    if not count:
        return None
    return (f"{count} record(s) in {results_dir} match no planned trial: the sweep's design or data changed "
            "since they ran. A trial id hashes everything that shapes the trial, its data included: a "
            "subtask added to a domain gives every cell that trains on that domain new ids, and a new data "
            "source, base model or training setting changes them all. Those records are kept but do not "
            "count as done: their cells run again under the new ids.")


def set_aside_stale(results_dir: Path, records: list, model_id: str) -> set[str]:
    """Done records that another revision of the base model made (builtin:tiny after its world or
    recipe changed: a trial id hashes the spec, not the model it resolves to) are moved, with their
    adapters, to results_dir/stale/<revision>/, so a resumed sweep reruns them instead of reporting
    old and new models as one; returns their trial ids."""
    from harness.model import known_revision

    done = [r for r in records if is_done(r)]
    current = known_revision(model_id) if done else None  # (tiny's fingerprint hashes its corpus)
    if current is None:
        return set()
    stale = [r for r in done if r.meta.get("base_model_revision") not in (None, current)]
    for record in stale:
        old = str(record.meta["base_model_revision"])
        for src in (results_dir / "trials" / f"{record.run.trial_id}.json",
                    results_dir / "baseline" / f"{record.run.trial_id}.json",
                    results_dir / "adapters" / record.run.trial_id):
            if src.exists():
                dest = results_dir / "stale" / old / src.parent.name / src.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
    if stale:
        revisions = sorted({str(r.meta["base_model_revision"]) for r in stale})
        log.warning("%d record(s) in %s were made with %s revision %s; it is now %s (its world or recipe "
                    "changed). Moved them to %s and their trials run again.", len(stale), results_dir,
                    model_id, ", ".join(revisions), current, results_dir / "stale")
    return {r.run.trial_id for r in stale}


def write_resolved_spec(spec: SweepSpec, results_dir: Path) -> None:
    """Keep the resolved spec beside the results; refuse to mix two different sweeps in one dir."""
    path = results_dir / "sweep.yaml"
    text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    old_text = _old_spec_text(path)
    if old_text is not None and old_text != text:
        old = _yaml_or_empty(old_text)
        if old.get("name") not in (None, spec.name):
            raise InputError(f"{results_dir} already holds sweep {old.get('name')!r}; "
                             f"use another output_dir or name")
        atomic_write_text(path.with_name("sweep.previous.yaml"), old_text)
    atomic_write_text(path, text)


def _old_spec_text(path: Path) -> str | None:
    """The resolved spec already there, if any; an unreadable one is kept as sweep.previous.yaml."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("%s is not UTF-8 text; keeping it as sweep.previous.yaml and writing a new one", path)
        return data.decode("utf-8", errors="replace")


def _yaml_or_empty(text: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


# ---------------------------------------------------------------------------------------------
# The driver


def run_sweep(spec: SweepSpec, *, address: str | None = None, resume: bool = False,
              num_cpus: int | None = None) -> SweepOutcome:
    results_dir = spec.results_dir.resolve()
    records, unreadable = load_records(results_dir)
    if resume:
        stale = set_aside_stale(results_dir, records, spec.base_model)
        records = [r for r in records if r.run.trial_id not in stale]
    done = {r.run.trial_id for r in records if is_done(r)}
    if done and not resume:
        raise InputError(f"{results_dir} already has {len(done)} finished trial(s); pass --resume "
                         "to run only the missing ones, or choose another output_dir")
    trials = planned_trials(spec)
    unplanned = len(unplanned_records(results_dir, trials))
    if unplanned:
        log.warning(unplanned_note(unplanned, results_dir))
    todo = [t for t in trials if t.trial_id not in done]
    report_unreadable(unreadable, todo)
    ran = 0
    metrics = evaluation_metrics(check_evaluation(spec)) if todo else []  # before anything launches
    write_resolved_spec(spec, results_dir)
    if todo and _samples_left(spec, trials, done):
        _prepare_base_model(spec)
        _prepare_mixtures(todo, results_dir)
        ray = _init_ray(address, num_cpus, results_dir, local_paths(spec), metrics)
        resources = trial_resources(spec, ray.cluster_resources(), alive_nodes(ray.nodes()))
        ran = _run(spec, trials, todo, done, resources, results_dir)
    write_scores_table(results_dir)
    records, _ = load_records(results_dir)
    status = {r.run.trial_id: r.train.status for r in records}
    return SweepOutcome(results_dir, ran=ran, skipped=len(trials) - len(todo), unplanned=unplanned,
                        failed=[t for t, s in status.items() if s is TrialStatus.FAILED],
                        cancelled=[t for t, s in status.items() if s is TrialStatus.CANCELLED])


def _samples_left(spec: SweepSpec, trials: list[TrialSpec], done: set[str]) -> int:
    """Trials still to run: all missing ones for a grid; for Optuna, num_samples minus the done
    sampled ones (plus the baseline), never more than the grid has left."""
    missing = [t for t in trials if t.trial_id not in done]
    if spec.search.method == "grid":
        return len(missing)
    sampled = sum(1 for t in trials if t.kind == "trial" and t.trial_id in done)
    wanted = max(spec.search.num_samples - sampled, 0)
    return min(wanted, sum(t.kind == "trial" for t in missing)) + sum(t.kind == "baseline" for t in missing)


def _run(spec: SweepSpec, trials: list[TrialSpec], todo: list[TrialSpec], done: set[str],
         resources: dict[str, float], results_dir: Path) -> int:
    since = time.time() - 1  # records written from here on are this run's (1 s of mtime slack)
    if spec.search.method == "grid":
        grid = _fit(spec, todo, resources, results_dir, searcher=None, samples=0)
        _record_outcomes(spec, grid, results_dir, todo, since)
        return len(todo)
    ran = 0
    baseline = [t for t in todo if t.kind == "baseline"]
    if baseline:  # outside the factor space: run it on its own
        grid = _fit(spec, baseline, resources, results_dir, None, 0)
        _record_outcomes(spec, grid, results_dir, baseline, since)
        ran += 1
    samples = _samples_left(spec, [t for t in trials if t.kind == "trial"], done)
    if samples:
        sampler = FactorSampler.for_sweep(spec, trials, load_records(results_dir)[0])
        searcher = factor_searcher(sampler, *search_metric(spec))
        real = [t for t in trials if t.kind == "trial"]
        _record_outcomes(spec, _fit(spec, real, resources, results_dir, searcher, samples), results_dir,
                         [], since)
        ran += samples
    return ran


def _prepare_base_model(spec: SweepSpec) -> None:
    """Build/convert builtin models once in the driver, before trials start together."""
    from harness.model import resolve_model_path

    resolve_model_path(spec.base_model)


def _prepare_mixtures(todo: list[TrialSpec], results_dir: Path) -> None:
    """Build each distinct training mixture once, here and serially, into <results>/mixtures/:
    trials then only read it, and no two trials write the same cache entry at once."""
    from harness.data.cache import prepare_mixtures

    started = time.perf_counter()
    prepared = prepare_mixtures(todo, results_dir / "mixtures")
    log.info("mixtures: built %d, already cached %d (%.1f s)", len(prepared.built),
             len(prepared.cached), time.perf_counter() - started)


def _fit(spec: SweepSpec, trials: list[TrialSpec], resources: dict[str, float], results_dir: Path,
         searcher: Any | None, samples: int):
    """One Tune run: a grid over trial ids, or `samples` draws of the searcher over factor choices."""
    from ray import tune

    table = {"trials": {t.trial_id: t.model_dump(mode="json") for t in trials},
             "keys": {_key_text(k): i for k, i in factor_keys(spec, trials).items()}}
    trainable = tune.with_resources(tune.with_parameters(_trainable, table=table), resources)
    ranks = spec.resources.ranks_per_trial()
    param_space: dict[str, Any] = {
        "results_dir": str(results_dir),
        "ranks": ranks,
        "threads": max(int(resources["cpu"]) // ranks, 1),  # per rank
        "wandb": spec.wandb.model_dump(),
        "env": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ},
    }
    if searcher is None:
        param_space["trial_id"] = tune.grid_search([t.trial_id for t in trials])
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.resources.max_concurrent,
                                    search_alg=searcher, scheduler=_scheduler(spec),
                                    num_samples=samples if searcher is not None else 1,
                                    reuse_actors=True, trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            # a fresh name per driver run: a killed run's leftovers are never read back
            name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
            storage_path=str(results_dir / "ray"), verbose=1,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    )
    with _lenient_metric_checks():
        return tuner.fit()


@contextlib.contextmanager
def _lenient_metric_checks():
    """Intermediate reports carry losses and the final one the scores, so not every result has
    every metric; Tune's strict check (read in the driver) would call that an error."""
    name = "TUNE_DISABLE_STRICT_METRIC_CHECKING"
    before = os.environ.get(name)
    os.environ[name] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


# ---------------------------------------------------------------------------------------------
# After a Tune run: records for trials that ended without writing one


def _record_outcomes(spec: SweepSpec, grid, results_dir: Path, expected: list[TrialSpec],
                     since: float) -> None:
    """A trial that ASHA stopped gets a cancelled record; one whose worker died (killed, segfault)
    a failed one, with Tune's error as the reason. `expected` trials with no record written since
    the Tune run began (`since`, a time.time()) get a failed record too."""
    specs = {t.trial_id: t for t in planned_trials(spec)}
    keys = factor_keys(spec, list(specs.values()))
    have = _written_since(results_dir, since)  # an older record (a failure before a resume) is replaced
    for result in grid:
        trial_id = result.config.get("trial_id") or keys.get(factor_key(result.config, text=False))
        if trial_id is None or trial_id in have or trial_id not in specs:
            continue
        save_record(_record_for_result(specs[trial_id], result), trial_dir(results_dir, specs[trial_id]))
        have.add(trial_id)
    for t in expected:
        if t.trial_id not in have:
            save_record(failed_record_for(t, "worker died before writing a record (killed or crashed)"),
                        trial_dir(results_dir, t))


def _written_since(results_dir: Path, since: float) -> set[str]:
    paths = [*results_dir.glob("trials/*.json"), *results_dir.glob("baseline/*.json")]
    return {p.stem for p in paths if p.stat().st_mtime >= since}


def _trial_name(trial) -> str:
    """Tune's name for a trial: the harness trial id (grid) or its factor choices (Optuna)."""
    config = trial.config
    name = config.get("trial_id") or "-".join(f"{f}{config.get(f)}" for f in FACTORS)
    return f"{name}-{trial.trial_id}"
