"""`harness sweep --address ray://...` (Ray Client) and `--address auto` against a real, separately
started head node: `ray start --head --ray-client-server-port` on loopback, as a user starts one.

The head runs in its own temp dir and its processes are killed by process tree in teardown (never
`ray stop`, which stops every Ray on the machine, other people's too)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness.results import load_records

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60


@dataclass
class Head:
    gcs_address: str  # host:port, for `--address host:port`
    client_address: str  # ray://127.0.0.1:port
    root: Path  # RAY_TMPDIR of the head: `--address auto` finds it through $RAY_TMPDIR/ray
    env: dict[str, str]


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (bound together, so never the same one twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


# Ray replaces 127.0.0.1 by the machine's outward address (--node-ip-address too) unless clusters are
# "disabled", as on macOS: then every Ray service and connection stays on loopback.
LOOPBACK_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def head_env(root: Path) -> dict[str, str]:
    """The head's environment: loopback only, no auth, its own temp dir, and the checkout on the
    workers' path (the harness must be installed on every node; an editable install may point
    elsewhere)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **LOOPBACK_ENV, "RAY_TMPDIR": str(root), "PYTHONPATH": path}


def driver_env() -> dict[str, str]:
    return {**os.environ, **LOOPBACK_ENV}


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, keep_logs: Path | None = None):
    """A head node with a Ray Client server, all on 127.0.0.1; killed (whole process tree) on exit,
    whatever happened, its logs moved to `keep_logs`. A short temp dir: Ray's unix socket paths
    must stay under 108 bytes."""
    root = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    gcs, client, dashboard, agent = free_ports(4)
    cmd = ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           f"--ray-client-server-port={client}", f"--num-cpus={num_cpus}", "--num-gpus=0",
           "--include-dashboard=false", f"--dashboard-port={dashboard}",
           f"--dashboard-agent-listen-port={agent}", "--disable-usage-stats",
           f"--temp-dir={root / 'ray'}"]
    env = head_env(root)
    log = open(root / "ray-start.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        gcs_address = _wait_for_head(proc, root)
        _wait_for_port(client, proc, root)
        yield Head(gcs_address, f"ray://127.0.0.1:{client}", root, env)
    finally:
        _kill_tree(proc, str(root))
        log.close()
        if keep_logs is not None:
            shutil.move(str(root), str(keep_logs / "ray-head"))  # pytest keeps its last 3 basetemps
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_head(proc: subprocess.Popen, root: Path) -> str:
    """The GCS address, once `ray start` has written it to <temp dir>/ray_current_cluster."""
    address_file = root / "ray" / "ray_current_cluster"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}:\n{_tail(root)}")
        if address_file.exists() and address_file.read_text().strip():
            return address_file.read_text().strip()
        time.sleep(0.2)
    pytest.fail(f"ray start did not come up in {START_TIMEOUT_S} s:\n{_tail(root)}")


def _wait_for_port(port: int, proc: subprocess.Popen, root: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}:\n{_tail(root)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"the Ray Client server never listened on {port}:\n{_tail(root)}")


def _tail(root: Path) -> str:
    path = root / "ray-start.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _kill_tree(proc: subprocess.Popen, marker: str) -> None:
    """SIGKILL `ray start --block` and everything under it (GCS, raylet, agents, workers, the client
    server and its per-client servers), plus any process that names our temp dir and was already
    orphaned. Only our processes: found by parentage or by our unique temp dir, never by name."""
    import psutil

    procs: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        top = psutil.Process(proc.pid)
        procs.update({p.pid: p for p in [top, *top.children(recursive=True)]})
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and marker in " ".join(p.info["cmdline"] or []):
                procs.setdefault(p.pid, p)
    for p in procs.values():
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    psutil.wait_procs(list(procs.values()), timeout=10)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    with ray_head(keep_logs=tmp_path_factory.mktemp("logs")) as h:
        yield h


def write_sweep(tmp_path: Path, shared: Path) -> Path:
    """Two LoRA trials on builtin:tiny, two steps each, scored on a 2-question evaluation file, drawn
    by Optuna: its searcher travels to Tune's controller on the head, which then checks every
    result for the search metric (only the final one has it) unless the client's runtime_env
    relaxes that check there."""
    from harness.tasks import synthetic

    mc = tmp_path / "mc.json"  # a file the cluster must see too: here, the same machine
    mc.write_text(json.dumps(synthetic.generate_rows("unit_price", "heldout", 2)))
    path = tmp_path / "client.yaml"
    path.write_text(yaml.safe_dump({
        "name": "client", "output_dir": str(shared), "data": {"per_subtask": 8},
        "eval": {"sets": [{"path": str(mc), "name": "mc"}], "baseline": False},
        "grid": {"domains": {"each": ["concept"]}, "lora_rank": [2, 4], "seed": [0]},
        "train": {"steps": 2, "micro_batch": 4, "max_seq_len": 128, "log_every": 1, "warmup_steps": 0},
        "search": {"method": "optuna", "num_samples": 2},
        "resources": {"cpu": 1, "gpu": "auto"}, "wandb": {"mode": "disabled"}}))
    return path


def harness_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


def test_sweep_through_ray_client(tmp_path, head):
    """The real command line, as a user on another machine runs it: records come back from the
    cluster's workers to output_dir (storage both sides see), and the table is built from them."""
    from harness.model import resolve_model_path

    resolve_model_path("builtin:tiny")  # built once here, so neither side pays for it in the timing
    shared = tmp_path / "shared"
    sweep = write_sweep(tmp_path, shared)
    started = time.perf_counter()
    proc = harness_cli("sweep", str(sweep), "--address", head.client_address,
                       env=driver_env())
    elapsed = time.perf_counter() - started
    records, problems = load_records(shared / "client") if (shared / "client").exists() else ([], [])
    why = [(r.run.trial_id, r.train.status.value, r.train.reason) for r in records]
    output = f"{why}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0 and "ran 2, already done 0, failed 0" in proc.stdout, output
    assert not problems and len(records) == 2 and all(r.ok for r in records), output
    assert {r.run.factors["lora_rank"] for r in records} == {2, 4}
    assert all(r.meta["ray_node_id"] for r in records)  # ran on the cluster's workers
    assert (shared / "client" / "scores.parquet").exists()
    assert any((shared / "client" / "ray").iterdir())  # Tune's controller wrote there, on the head
    print(f"ray:// sweep of 2 trials: {elapsed:.1f} s")


def test_address_auto_finds_the_running_cluster(head):
    """`--address auto` connects to the cluster `ray start` started (found through RAY_TMPDIR), and
    the pre-launch probe runs there; a cheap check, no sweep."""
    code = ("from harness.sweep.cluster import _init_ray; ray = _init_ray('auto', None); "
            "print('GCS', ray.get_runtime_context().gcs_address)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**head.env, "RAY_ADDRESS": ""}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"GCS {head.gcs_address}" in proc.stdout


def test_cluster_that_cannot_see_output_dir_is_refused(tmp_path, head):
    """A results directory, or a data or evaluation file, that the cluster does not see stops the
    sweep before any trial starts."""
    code = ("import sys; from pathlib import Path; from harness.errors import InputError\n"
            "from harness.sweep import cluster; cluster.SHARED_DIR_WAIT_S = 0.5\n"
            "ray = cluster._init_ray(sys.argv[1], None)\n"
            "try:\n    cluster._probe_cluster(ray, sys.argv[1], Path(sys.argv[2]))\n"
            "except InputError as exc:\n    print('REFUSED', exc)\n"
            "try:\n    cluster._probe_cluster(ray, sys.argv[1], None, {'eval.sets[1].path': '/nowhere/dev.json'})\n"
            "except InputError as exc:\n    print('REFUSED', exc)\n")
    proc = subprocess.run([sys.executable, "-c", code, head.client_address, str(tmp_path / "nowhere")],
                          capture_output=True, text=True, cwd=REPO,
                          env=driver_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REFUSED output_dir:" in proc.stdout and "every node and the driver see" in proc.stdout
    assert "does not see these paths of the sweep:\n  eval.sets[1].path: /nowhere/dev.json" in proc.stdout


# ---------------------------------------------------------------------------------------------
# Connection handling without a cluster


class FakeRay:
    """ray.init that fails with the given errors first, recording its arguments."""

    def __init__(self, *failures: Exception):
        self.failures, self.calls = list(failures), []

    def init(self, **kwargs):
        self.calls.append(kwargs)
        if self.failures:
            raise self.failures.pop(0)


def test_client_connects_again_when_its_server_process_dies_at_start(monkeypatch):
    """ray-project/ray#63202: now and then the proxier's per-client server dies as it starts."""
    from harness.sweep import cluster

    monkeypatch.setattr(cluster.time, "sleep", lambda _s: None)
    fake = FakeRay(ConnectionAbortedError("Initialization failure from server:\nTraceback ..."))
    cluster._connect(fake, "ray://head:10001")
    assert len(fake.calls) == 2
    assert fake.calls[0] == {"address": "ray://head:10001", "runtime_env": {"env_vars": cluster.CLIENT_ENV}}


def test_unreachable_client_server_is_an_input_error_at_once():
    from harness.errors import InputError
    from harness.sweep import cluster

    fake = FakeRay(ConnectionError("ray client connection timeout"))
    with pytest.raises(InputError, match="--address ray://head:1: cannot connect.*ray-client-server-port"):
        cluster._connect(fake, "ray://head:1")
    assert len(fake.calls) == 1


def test_num_cpus_is_refused_for_an_existing_cluster():
    from harness.errors import InputError
    from harness.sweep.cluster import _init_ray

    with pytest.raises(InputError, match="--num-cpus 2 is for a local Ray"):
        _init_ray("ray://head:10001", 2)
