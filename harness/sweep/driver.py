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
from harness.results import (TrialRecord, TrialStatus, atomic_write_text, load_records, read_record,
                             write_scores_table)
from harness.spec.expand import baseline_trial, capacity_grid, data_sets, expand_trials
from harness.spec.load import local_paths
from harness.spec.schema import SweepSpec, TrialSpec, WandbSpec, search_metric
from harness.sweep.preflight import check_evaluation, evaluation_metrics
from harness.tracking import shutdown_service
from harness.trial.run import failed_record_for, run_trial, save_record, trial_dir

log = logging.getLogger(__name__)

# Settings the driver's environment passes on to trials (fault injection, W&B mode, caches).
FORWARDED_ENV = ("HARNESS_FAULTS", "HARNESS_CACHE_DIR", "WANDB_MODE", "WANDB_BASE_URL", "HF_HUB_OFFLINE",
                 "HARNESS_MINILM_MODEL", "HARNESS_MULTILINGUAL_ST_MODEL")
STOPPED_BY_SCHEDULER = "asha"  # record.meta["stopped_by"] of a trial ASHA stopped: done, not re-run


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


def is_done(record: TrialRecord) -> bool:
    """Finished for good: a success, or a trial the scheduler stopped on purpose."""
    return record.ok or (record.train.status is TrialStatus.CANCELLED
                         and record.meta.get("stopped_by") == STOPPED_BY_SCHEDULER)


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
# Resources: pure functions of the cluster's resource dicts, so they are tested without Ray


def alive_nodes(nodes: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The resource totals of the live nodes in a `ray.nodes()` listing."""
    return [dict(n.get("Resources", {})) for n in nodes if n.get("Alive", True)]


def trial_resources(spec: SweepSpec, cluster: dict[str, float],
                    nodes: list[dict[str, float]] | None = None) -> dict[str, float]:
    """What each trial asks Ray for: {"cpu": c, "gpu": g}. Raises InputError for a request that no
    single node can hold (Ray would wait forever): per node, not the cluster sum."""
    nodes = nodes if nodes is not None else [cluster]
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    gpu = spec.resources.gpu
    if gpu == "auto":
        gpu = 1.0 if most_gpus >= 1 else 0.0
    gpu, cpu = float(gpu), float(spec.resources.cpu)
    if gpu > 1 and not gpu.is_integer():
        raise InputError(f"resources.gpu: {gpu:g}: a trial on several GPUs takes whole GPUs (2, 4, 8), "
                         "one data-parallel process each; fractions below 1 pack trials on one GPU")
    if gpu and not cluster.get("GPU", 0):
        raise InputError(f"resources.gpu: {gpu:g} GPU per trial requested but the Ray cluster has no GPU; "
                         "set resources.gpu: 0 (or auto) to run on CPUs")
    if not any(n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu for n in nodes):
        raise InputError(f"resources: no node can hold one trial ({cpu:g} CPU{_and_gpu(gpu)}); the nodes "
                         f"have {describe_nodes(nodes)}; lower resources.cpu or resources.gpu")
    return {"cpu": cpu, "gpu": gpu}


def _and_gpu(gpu: float) -> str:
    return f" + {gpu:g} GPU" if gpu else ""


def describe_nodes(nodes: list[dict[str, float]]) -> str:
    """'2 x (4 CPU, 1 GPU); 1 x (8 CPU)' for an error message."""
    counts: dict[str, int] = {}
    for n in nodes:
        text = f"{n.get('CPU', 0):g} CPU" + (f", {n['GPU']:g} GPU" if n.get("GPU") else "")
        counts[text] = counts.get(text, 0) + 1
    return "; ".join(f"{k} x ({text})" for text, k in counts.items()) or "no live nodes"


CLIENT_SCHEME = "ray://"
# Read by Tune's controller. With Ray Client that controller runs as an actor on the cluster's head,
# where the driver's os.environ (see _lenient_metric_checks) never arrives; the job's runtime_env does.
CLIENT_ENV = {"TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}
CLIENT_CONNECT_TRIES = 3  # see _init_client
PROBE_TIMEOUT_S = 120.0  # a first worker on a busy or freshly scaled cluster can take a while
SHARED_DIR_WAIT_S = 15.0  # NFS attribute caches may hide a file just written for a few seconds


def _init_ray(address: str | None, num_cpus: int | None, results_dir: Path | None = None,
              paths: dict[str, str] | None = None, metrics: list[str] | None = None):
    """A local Ray (no address), or a connection to an existing cluster that is checked first.

    - "auto" or "host:port": this machine is a node of the cluster (or RAY_ADDRESS names it); the
      driver and Tune's controller run here. "auto" finds the cluster that `ray start` last started
      on this machine (its address file under $RAY_TMPDIR/ray, default /tmp/ray).
    - "ray://host:port" (Ray Client): only the driver runs here; Tune's controller runs as an actor
      on the head and trials on the workers, which see nothing of this machine. So the harness must
      be installed on every node, and output_dir and every data or evaluation file must be paths
      that every node sees (the client ships no files; the probe below checks output_dir, every
      data and evaluation file and a local base model, and that the evaluation's metrics run).
    An existing cluster keeps its own resources, so `num_cpus` is for a local Ray only.
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return ray
    if not address:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=True)
        return ray
    if num_cpus:
        raise InputError(f"--num-cpus {num_cpus} is for a local Ray; the cluster at {address} keeps "
                         "its own resources (drop --num-cpus, or --address to run locally)")
    _connect(ray, address)
    _probe_cluster(ray, address, results_dir, paths or {}, metrics or [])
    return ray


def _connect(ray, address: str) -> None:
    """ray.init for an existing cluster: Ray Client takes no local-only arguments (num_cpus,
    include_dashboard) and gets the controller's environment through the job's runtime_env."""
    client = address.startswith(CLIENT_SCHEME)
    try:
        if client:
            _init_client(ray, address)
        else:
            ray.init(address=address, log_to_driver=True)
    except ImportError as exc:  # Ray Client needs grpcio, which a minimal `pip install ray` lacks
        from harness.errors import MissingDependencyError

        raise MissingDependencyError(f"--address {address}: Ray Client needs grpcio ({exc}); "
                                     "pip install 'ray[client]'") from exc
    except ConnectionError as exc:
        hint = ("is a Ray Client server listening there? The head must run `ray start --head "
                "--ray-client-server-port=PORT` with the same Ray and Python versions as here"
                if client else "start the cluster first (`ray start --head`), or give its address "
                "as host:port or ray://host:10001 (or set RAY_ADDRESS)")
        raise InputError(f"--address {address}: cannot connect to a Ray cluster: {exc}; {hint}") from exc


def _init_client(ray, address: str) -> None:
    """Connect through Ray Client, again when the server's process for this client died as it
    started ("Initialization failure from server": ray-project/ray#63202, a few percent of
    connections); that failure is immediate, unlike an unreachable server's 30 s time-out."""
    for attempt in range(1, CLIENT_CONNECT_TRIES + 1):
        try:
            ray.init(address=address, runtime_env={"env_vars": CLIENT_ENV})
            return
        except ConnectionError as exc:
            if attempt == CLIENT_CONNECT_TRIES or "Initialization failure" not in str(exc):
                raise
            log.warning("Ray Client: the server's process for this connection failed to start "
                        "(attempt %d of %d); connecting again", attempt, CLIENT_CONNECT_TRIES)
            time.sleep(1.0)


def _probe_cluster(ray, address: str, results_dir: Path | None, paths: dict[str, str] | None = None,
                   metrics: list[str] | None = None) -> None:
    """One tiny task on the cluster before any trial starts: can a node import the harness, does it
    see the results directory the driver just wrote and every file the trials read, and can it run
    the evaluation's metrics? Otherwise every trial would fail on its worker, or run and leave its
    record where the driver never looks."""
    marker = str(results_dir / "sweep.yaml") if results_dir is not None else None
    probe = ray.remote(num_cpus=0, max_retries=0)(_node_probe())
    try:
        seen = ray.get(probe.remote(marker, SHARED_DIR_WAIT_S, paths or {}, metrics or []),
                       timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        log.warning("cluster %s: no worker answered a probe in %.0f s; starting the sweep unchecked",
                    address, PROBE_TIMEOUT_S)
        return
    where = f"the cluster at {address} (node {seen['host']})"
    if seen.get("error"):
        raise InputError(f"{where} cannot import the harness ({seen['error']}): install "
                         "divcap-harness, at the driver's version, on every node")
    if marker is not None and not seen["sees_results"]:
        raise InputError(f"output_dir: {where} does not see {marker}, which the driver wrote: set "
                         "output_dir to storage that every node and the driver see (NFS, a shared disk)")
    if seen.get("missing"):
        listed = "\n  ".join(f"{field}: {path}" for field, path in seen["missing"].items())
        raise InputError(f"{where} does not see these paths of the sweep:\n  {listed}\nput them on "
                         "storage every node sees (the same absolute path everywhere), then run again")
    if seen.get("metric_problems"):
        raise InputError(f"{where} cannot run the evaluation's metrics:\n  "
                         + "\n  ".join(seen["metric_problems"]))
    from harness import __version__

    if seen["version"] != __version__:
        log.warning("%s runs harness %s; the driver runs %s", where, seen["version"], __version__)


def _node_probe():
    """The probe's body, made in a closure so Ray ships it by value: a node without the harness
    can still run it and say so, instead of failing to unpickle a function from harness.sweep.driver."""
    def probe(marker: str | None, wait_s: float, paths: dict[str, str], metrics: list[str]) -> dict[str, Any]:
        import os as _os
        import platform
        import time as _time

        out: dict[str, Any] = {"host": platform.node(), "error": None, "version": None}
        try:
            import harness.sweep.driver  # noqa: F401 - what the trials import first
            from harness.evaluate.metrics import metric_problems

            out["version"] = harness.__version__
            out["metric_problems"] = metric_problems(metrics)
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            out["error"] = f"{type(exc).__name__}: {exc}"
        out["missing"] = {field: path for field, path in paths.items() if not _os.path.exists(path)}
        deadline = _time.monotonic() + wait_s
        while marker is not None and not _os.path.exists(marker) and _time.monotonic() < deadline:
            _time.sleep(0.5)
        out["sees_results"] = marker is None or _os.path.exists(marker)
        return out

    return probe


# ---------------------------------------------------------------------------------------------
# The trainable (runs on a Ray worker)


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


def _finished_record(results_dir: Path, spec: TrialSpec) -> TrialRecord | None:
    """The trial's record when it is already done (an Optuna repeat, a second driver): not re-run."""
    path = trial_dir(results_dir, spec) / f"{spec.trial_id}.json"
    try:
        record = read_record(path) if path.exists() else None
    except InputError:
        return None
    return record if record is not None and is_done(record) else None


# ---------------------------------------------------------------------------------------------
# The driver


def run_sweep(spec: SweepSpec, *, address: str | None = None, resume: bool = False,
              num_cpus: int | None = None) -> SweepOutcome:
    results_dir = spec.results_dir.resolve()
    records, unreadable = load_records(results_dir)
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


def _scheduler(spec: SweepSpec):
    if spec.search.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    grace = spec.search.grace_period or spec.train.eval_every
    # stop_last_trials=False: a trial that reaches the last step is never stopped before evaluation
    return ASHAScheduler(time_attr="step", metric="eval_loss", mode="min", max_t=spec.train.steps,
                         grace_period=grace, reduction_factor=spec.search.reduction_factor,
                         stop_last_trials=False)


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


def _trial_name(trial) -> str:
    """Tune's name for a trial: the harness trial id (grid) or its factor choices (Optuna)."""
    config = trial.config
    name = config.get("trial_id") or "-".join(f"{f}{config.get(f)}" for f in FACTORS)
    return f"{name}-{trial.trial_id}"


# ---------------------------------------------------------------------------------------------
# Optuna over the grid's factor choices


FACTORS = ("data_set", "volume", "capacity", "seed")


def factor_keys(spec: SweepSpec, trials: list[TrialSpec]) -> dict[tuple, str]:
    """(data-set index, volume, capacity-setting index, seed) -> trial id, for the grid's real trials.
    A capacity setting's index is its place in the grid's capacity x rank (or budget) order, which
    is the same in every data cell even where the setting itself differs (multi_lora's groups)."""
    from harness.capacity.settings import capacity_settings

    sets = [(d, s) for d, s in data_sets(spec)]
    grid = capacity_grid(spec)
    settings = {i: capacity_settings(grid, d, s) for i, (d, s) in enumerate(sets)}
    keys = {}
    for t in trials:
        if t.kind == "trial":
            i = sets.index((t.domains, t.subtasks))
            keys[(i, t.volume, settings[i].index(t.capacity), t.seed)] = t.trial_id
    return keys


def factor_key(config: dict[str, Any], text: bool = True):
    key = tuple(config.get(f) for f in FACTORS)
    return _key_text(key) if text else key


def _key_text(key: tuple) -> str:
    return "|".join(str(k) for k in key)  # object-store friendly (no tuple keys)


def factor_space(spec: SweepSpec) -> dict[str, list]:
    """The choices of each factor: what Optuna samples (indices for the data sets)."""
    return {"data_set": list(range(len(data_sets(spec)))),
            "volume": spec.grid.volume or [spec.data.per_subtask],
            "capacity": list(range(_n_capacity_settings(spec))), "seed": list(spec.grid.seed)}


def _n_capacity_settings(spec: SweepSpec) -> int:
    from harness.capacity.settings import capacity_settings

    return len(capacity_settings(capacity_grid(spec), *data_sets(spec)[0]))


class FactorSampler:
    """Optuna's TPE sampler over the grid's factor choices, every draw a distinct grid trial (Optuna
    only, no Ray: the Tune searcher below is a thin adapter).

    A draw that repeats a trial already drawn is told to Optuna as failed and drawn again (after a
    few tries the first undrawn trial is enqueued), so `num_samples` counts distinct trials and a
    resume draws only what is missing. Finished records warm-start the sampler (`known`)."""

    def __init__(self, space: dict[str, list], keys: dict[tuple, str], mode: str, seed: int,
                 known: list[tuple[tuple, float | None]] = ()):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna, self._keys, self._seen = optuna, keys, set()
        self._dists = {n: optuna.distributions.CategoricalDistribution(c) for n, c in space.items()}
        self._study = optuna.create_study(direction="minimize" if mode == "min" else "maximize",
                                          sampler=optuna.samplers.TPESampler(seed=seed))
        for key, value in known:
            self._seen.add(key)
            self._study.add_trial(optuna.trial.create_trial(
                params=dict(zip(FACTORS, key)), distributions=self._dists, value=value,
                state=self._state(value)))

    def _state(self, value: float | None):
        states = self._optuna.trial.TrialState
        return states.FAIL if value is None else states.COMPLETE

    def draw(self) -> tuple[Any, tuple] | None:
        """(handle, factor key) of a trial not drawn before; None when the grid is exhausted."""
        undrawn = [k for k in self._keys if k not in self._seen]
        if not undrawn:
            return None
        for _ in range(20):
            handle = self._study.ask(self._dists)
            key = tuple(handle.params[f] for f in FACTORS)
            if key in self._keys and key not in self._seen:
                break
            self._study.tell(handle, state=self._state(None))  # a repeat teaches the sampler nothing
        else:
            self._study.enqueue_trial(dict(zip(FACTORS, undrawn[0])))
            handle, key = self._study.ask(self._dists), undrawn[0]
        self._seen.add(key)
        return handle, key

    def tell(self, handle: Any, value: float | None) -> None:
        if value is None:
            self._study.tell(handle, state=self._state(None))
        else:
            self._study.tell(handle, float(value))

    @classmethod
    def for_sweep(cls, spec: SweepSpec, trials: list[TrialSpec], records: list[TrialRecord]):
        try:
            import optuna  # noqa: F401
        except ImportError as exc:
            from harness.errors import MissingDependencyError

            raise MissingDependencyError(f"search.method optuna needs optuna ({exc}); "
                                         "pip install optuna") from exc
        metric, mode = search_metric(spec)
        keys = factor_keys(spec, trials)
        by_id = {i: k for k, i in keys.items()}
        known = [(by_id[r.run.trial_id], outcome_metrics(r).get(metric))
                 for r in records if r.run.trial_id in by_id and is_done(r)]
        return cls(factor_space(spec), keys, mode, spec.search.sampler_seed, known)


def factor_searcher(sampler: FactorSampler, metric: str, mode: str):
    """A Ray Tune Searcher that suggests the sampler's draws as factor choices."""
    from ray.tune.search import Searcher

    class FactorSearch(Searcher):
        def __init__(self):
            super().__init__(metric=metric, mode=mode)
            self._live: dict[str, Any] = {}

        def suggest(self, trial_id: str):
            drawn = sampler.draw()
            if drawn is None:
                return Searcher.FINISHED
            self._live[trial_id] = drawn[0]
            return dict(zip(FACTORS, drawn[1]))

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            handle = self._live.pop(trial_id, None)
            if handle is not None:
                sampler.tell(handle, None if error else (result or {}).get(metric))

    return FactorSearch()
