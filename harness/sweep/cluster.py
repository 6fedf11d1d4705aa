"""The Ray the sweep runs on: a local one, or an existing cluster, connected and probed first.

    ray = _init_ray(address, num_cpus, results_dir, local_paths(spec), metrics)

An existing cluster (`--address auto`, `host:port`, `ray://host:10001`) is checked with one tiny
task before any trial starts: can a node import the harness, see the results directory and every
file the trials read, and run the evaluation's metrics? Ray Client connections that fail as the
server starts are retried.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from harness.errors import InputError

log = logging.getLogger(__name__)

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
    can still run it and say so, instead of failing to unpickle a function from harness.sweep.cluster."""
    def probe(marker: str | None, wait_s: float, paths: dict[str, str], metrics: list[str]) -> dict[str, Any]:
        import os as _os
        import platform
        import time as _time

        out: dict[str, Any] = {"host": platform.node(), "error": None, "version": None}
        try:
            import harness.sweep.trainable  # noqa: F401 - what the trials import first
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
