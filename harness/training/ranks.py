"""Data-parallel trials on several processes of one node (torch.distributed), for models that need
more than one GPU's worth of throughput.

    with launch_ranks(2, entry="harness.trial.run:train_rank", payload={...}, device="cuda") as dist:
        result = train_adapter(model, ..., dist=dist)      # this process is rank 0
    # here the helpers have exited and the process group is gone; a failure on any rank was raised

The calling process is rank 0: it is the Ray trial, so it alone reports to Tune, logs to W&B,
evaluates, saves the adapter and writes the record, exactly as a one-process trial does. Ranks
1..W-1 are helper processes (`python -m harness.training.ranks`, fresh interpreters: no fork of a
process that holds CUDA or Ray state, no multiprocessing re-import of Ray's worker script) that run
`entry(payload, dist)`: build the same data and model and train in lockstep, then exit.

How a step stays the one-process step: every rank draws the same global micro-batches (same seed),
takes a disjoint contiguous slice (`DistContext.local_batch`), and weights its loss by its share of
the micro-batch's supervised tokens, so DDP's gradient average equals the one-process token mean.
Logged loss and token counts are summed over ranks (`reduce_step`).

Failures: a helper writes its exception to an error file before it exits. Gloo fails rank 0's
pending collective as soon as a peer's sockets close; for NCCL a watchdog thread aborts the process
group. Whatever rank 0 was doing, leaving `launch_ranks` kills the helpers that are left, destroys
the process group, and raises DistributedError naming the rank that failed first and its reason.
Helpers also die with rank 0's thread (PR_SET_PDEATHSIG), so a killed trial leaves none behind.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from harness.errors import InputError

T = TypeVar("T")
IGNORE_INDEX = -100  # the label of tokens without loss, as harness.training.losses (not imported: it imports torch)
READY_KEY = "harness/ready"  # helpers add 1 to it on the rendezvous store once connected
RENDEZVOUS_TIMEOUT_S = 300.0  # helpers start Python and import torch before they check in
COLLECTIVE_TIMEOUT_S = 1800.0  # ranks wait for each other this long (rank 0 may be evaluating)
JOIN_TIMEOUT_S = 120.0  # after training, helpers get this long to tear down and exit
POLL_S = 0.2


class DistributedError(RuntimeError):
    """A rank of a data-parallel trial failed; the message names the rank and its reason."""


# ---------------------------------------------------------------------------------------------
# What the training loop sees


@dataclass
class DistContext:
    """One rank's view of a data-parallel run. `DistContext.single()` is the one-process case:
    every method is then the identity, so a training loop can always take a context."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    backend: str | None = None  # None: no process group (world 1)

    @classmethod
    def single(cls, device: str = "cpu") -> DistContext:
        return cls(device=device)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that evaluates, reports, logs to W&B and saves."""
        return self.rank == 0

    def wrap(self, model: Any, find_unused_parameters: bool = False) -> Any:
        """DDP around the (peft) model; gradients of the trainable (adapter) weights are averaged
        across ranks. DDP copies rank 0's weights to all ranks first, so even a differently
        seeded adapter starts identical everywhere. `find_unused_parameters`: for families where
        a micro-batch leaves some adapter weights out (multi_lora routes one group at a time)."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [int(self.device.split(":")[1])] if self.device.startswith("cuda:") else None
        return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True,
                                       find_unused_parameters=find_unused_parameters)

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous slice of a global micro-batch: near-equal, disjoint, in order
        (the first len % world ranks take one more), so the slices joined are the micro-batch.
        Empty when the micro-batch has fewer items than there are ranks."""
        base, extra = divmod(len(items), self.world)
        start = self.rank * base + min(self.rank, extra)
        return list(items[start : start + base + (self.rank < extra)])

    def local_batch(self, examples: Sequence[Any], collate: Callable[[list[Any]], dict]) -> dict:
        """The collated slice of a global micro-batch of harness.training.batching.Example, plus "loss_weight":
        this rank's share of the micro-batch's supervised tokens times the world size. The model's
        mean loss times that weight, averaged by DDP over ranks, is the one-process mean over the
        whole micro-batch. A rank with nothing to do runs one example at weight 0 (DDP needs every
        rank in every backward)."""
        import torch

        local = self.shard(examples)
        if self.world == 1:
            return collate(local)
        total = sum(loss_terms(e) for e in examples)
        weight = self.world * sum(loss_terms(e) for e in local) / total if total and local else 0.0
        batch = collate(local or list(examples[:1]))
        batch["loss_weight"] = torch.tensor(weight, dtype=torch.float32)
        return batch

    def local_tokens(self, examples: Sequence[Any]) -> tuple[int, int]:
        """(tokens, supervised tokens) of this rank's slice of a global micro-batch, for throughput and
        the record: real tokens, whatever padding the layout adds (a rank with nothing to do, which
        runs a weight-0 stand-in, counts none)."""
        local = self.shard(examples)
        return (sum(len(e.input_ids) for e in local),
                sum(1 for e in local for label in e.labels if label != IGNORE_INDEX))

    def micro_loss(self, model: Any, batch: dict) -> Any:
        """Forward one micro-batch from `local_batch` and return the loss to backpropagate: the
        model's mean loss times the batch's weight. At weight 0 (nothing of this rank's counts; the
        stand-in is one real example, so its loss is finite) that is a zero through the same graph
        as a real batch: DDP gets a backward over exactly the weights the forward used, and with
        find_unused_parameters (multi_lora) it marks the other groups' weights itself; a zero that
        touched every weight directly would mark those twice."""
        weight = batch.get("loss_weight")
        out = model(**{k: v for k, v in batch.items() if k != "loss_weight"}, use_cache=False)
        if weight is None:
            return out.loss
        return out.loss * weight.to(out.loss.device)

    def accumulate(self, model: Any, index: int, count: int):
        """Context for micro-batch `index` of `count` in one optimiser step: gradients are
        all-reduced on the last one only (DDP's no_sync), the sum being the same."""
        if self.world == 1 or index == count - 1 or not hasattr(model, "no_sync"):
            return contextlib.nullcontext()
        return model.no_sync()

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Elementwise sums over ranks (float64 on the wire; one collective for all values)."""
        if self.world == 1:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        device = self.device if self.backend == "nccl" else "cpu"
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def reduce_step(self, loss: float, tokens: int, supervised: int) -> tuple[float, int, int]:
        """One step's logged numbers for the whole run: the loss averaged over ranks (each rank's
        is already weighted, so this is the global token mean), token counts summed. Every rank
        gets the same values, so a NaN check after it fails on all ranks alike."""
        if self.world == 1:
            return loss, tokens, supervised
        total_loss, total_tokens, total_sup = self.all_reduce_sum([loss / self.world, tokens, supervised])
        return total_loss, int(round(total_tokens)), int(round(total_sup))

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def loss_terms(example: Any) -> int:
    """Tokens that carry loss in a causal LM, which predicts token t from tokens before it: the
    labelled positions after the first (the first is a prompt token in harness.training.batching)."""
    return sum(1 for label in example.labels[1:] if label != IGNORE_INDEX)


# ---------------------------------------------------------------------------------------------
# Rank 0: launch the helpers, join the process group, supervise, tear down


@dataclass
class _Helper:
    rank: int
    proc: subprocess.Popen
    log: Path
    error_file: Path

    def failure(self) -> dict[str, Any] | None:
        """{rank, reason, time} when this helper failed (exited non-zero or was killed)."""
        code = self.proc.poll()
        if code is None or code == 0:
            return None
        try:
            report = json.loads(self.error_file.read_text())
        except (OSError, ValueError):
            report = {"reason": _exit_reason(code, self.log), "time": None}  # killed: when is unknown
        return {"rank": self.rank, **report}


@dataclass
class _Launch:
    helpers: list[_Helper] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)  # noticed by the watchdog
    stop: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def launch_ranks(world: int, *, entry: str, payload: dict[str, Any], device: str = "cpu",
                 threads: int | None = None, backend: str | None = None,
                 rendezvous_timeout_s: float = RENDEZVOUS_TIMEOUT_S,
                 collective_timeout_s: float = COLLECTIVE_TIMEOUT_S,
                 join_timeout_s: float = JOIN_TIMEOUT_S) -> Iterator[DistContext]:
    """Start ranks 1..world-1 running `entry` ("module:function", called as fn(payload, dist))
    and make this process rank 0 of a process group with them; yields rank 0's DistContext.

    world 1 starts nothing and yields DistContext.single(device). `payload` must be JSON
    (a TrialSpec's model_dump(mode="json"), say): it is written to a file the helpers read.
    `threads`: torch threads per rank (CPU). Raises DistributedError for a helper's failure."""
    if world <= 1:
        yield DistContext.single(_rank_device(device, 0))
        return
    backend = backend or ("nccl" if device.startswith("cuda") else "gloo")
    _check_entry(entry)
    workdir = Path(tempfile.mkdtemp(prefix="harness-ranks-"))
    state = _Launch()
    restore = _rank_settings(threads)
    try:
        store = _store(world, rendezvous_timeout_s)
        (workdir / "payload.json").write_text(json.dumps(payload))
        state.helpers = [_start_helper(r, world, entry, workdir, store.port, backend, device, threads,
                                       collective_timeout_s) for r in range(1, world)]
        _await_helpers(store, state, world, rendezvous_timeout_s)
        ctx = _join_group(0, world, backend, device, store, collective_timeout_s)
        watchdog = threading.Thread(target=_watch, args=(state, backend), daemon=True)
        watchdog.start()
        try:
            yield ctx
            ctx.barrier()  # nobody leaves while another rank still reads its last message
        except Exception as exc:
            cause = _root_cause(exc, state)
            if cause is exc:
                raise
            raise cause from exc
        _finish_helpers(state, join_timeout_s)
    finally:
        state.stop.set()
        _teardown(state)
        restore()
        _remove(workdir)


def _check_entry(entry: str) -> None:
    module, _, name = entry.partition(":")
    if not module or not name:
        raise InputError(f"entry {entry!r}: give 'module:function' (e.g. harness.trial.run:train_rank)")


def _rank_device(device: str, rank: int) -> str:
    """cuda -> cuda:<rank> (Ray's CUDA_VISIBLE_DEVICES lists the trial's GPUs; rank r takes the
    r-th), cpu stays cpu."""
    return f"cuda:{rank}" if device.startswith("cuda") else "cpu"


def _rank_settings(threads: int | None) -> Callable[[], None]:
    """Rank 0's torch threads and the loopback interface for gloo (all ranks share one node;
    without it gloo binds the address the host name resolves to). Returns the undo."""
    import torch

    before_threads, before_ifname = torch.get_num_threads(), os.environ.get("GLOO_SOCKET_IFNAME")
    if threads:
        torch.set_num_threads(threads)
    os.environ["GLOO_SOCKET_IFNAME"] = before_ifname or loopback_interface()

    def restore() -> None:
        torch.set_num_threads(before_threads)
        if before_ifname is None:
            os.environ.pop("GLOO_SOCKET_IFNAME", None)
    return restore


def loopback_interface() -> str:
    """The name of the interface that holds 127.0.0.1 ('lo' on Linux, 'lo0' on macOS)."""
    try:
        import psutil

        for name, addrs in psutil.net_if_addrs().items():
            if any(getattr(a, "address", None) == "127.0.0.1" for a in addrs):
                return name
    except ImportError:
        pass
    return "lo0" if sys.platform == "darwin" else "lo"


def _store(world: int, timeout_s: float):
    """The rendezvous store, served by rank 0 on a free loopback port."""
    from torch.distributed import TCPStore

    return TCPStore("127.0.0.1", 0, world, True, timeout=datetime.timedelta(seconds=timeout_s),
                    wait_for_workers=False)


def _start_helper(rank: int, world: int, entry: str, workdir: Path, port: int, backend: str,
                  device: str, threads: int | None, timeout_s: float) -> _Helper:
    log, error_file = workdir / f"rank-{rank}.log", workdir / f"rank-{rank}.error.json"
    cmd = [sys.executable, "-m", "harness.training.ranks", "--entry", entry, "--workdir", str(workdir),
           "--rank", str(rank), "--world", str(world), "--port", str(port), "--backend", backend,
           "--device", device, "--timeout-s", str(timeout_s), "--parent", str(os.getpid())]
    if threads:
        cmd += ["--threads", str(threads)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=_helper_env(threads))
    return _Helper(rank, proc, log, error_file)


def _helper_env(threads: int | None) -> dict[str, str]:
    """Helpers import what rank 0 imports (its sys.path: a Ray runtime_env, a checkout)."""
    paths = [p or os.getcwd() for p in sys.path]
    paths = [p for p in paths if os.path.isdir(p)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _await_helpers(store, state: _Launch, world: int, timeout_s: float) -> None:
    """Wait until every helper has connected to the store; a helper that dies first (cannot
    import, bad payload) fails the launch at once instead of after the timeout."""
    deadline = time.monotonic() + timeout_s
    while store.add(READY_KEY, 0) < world - 1:
        failed = [f for f in (h.failure() for h in state.helpers) if f]
        exited = [h for h in state.helpers if h.proc.poll() == 0]
        if failed or exited:
            raise _error(failed[0] if failed else {"rank": exited[0].rank,
                                                   "reason": "exited before joining the process group"})
        if time.monotonic() > deadline:
            late = ", ".join(str(h.rank) for h in state.helpers)
            raise DistributedError(f"ranks {late} did not check in within {timeout_s:.0f} s")
        time.sleep(POLL_S)


def _join_group(rank: int, world: int, backend: str, device: str, store,
                timeout_s: float) -> DistContext:
    import torch
    import torch.distributed as dist

    local = _rank_device(device, rank)
    if local.startswith("cuda"):
        torch.cuda.set_device(local)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank=rank, world=world, device=local, backend=backend)


def _watch(state: _Launch, backend: str) -> None:
    """Notice a helper's death while rank 0 trains. Gloo already fails rank 0's pending
    collective when a peer's sockets close; NCCL would wait out its timeout, so abort it."""
    while not state.stop.wait(POLL_S):
        failed = [f for f in (h.failure() for h in state.helpers) if f]
        if failed:
            state.failures.extend(failed)
            if backend == "nccl":
                _abort_group()
            return


def _abort_group() -> None:
    with contextlib.suppress(Exception):  # experimental in torch; best effort
        from torch.distributed.distributed_c10d import _abort_process_group

        _abort_process_group()


def _root_cause(exc: Exception, state: _Launch) -> Exception:
    """The error to raise when rank 0's block failed: a helper's failure that came first (rank 0
    then saw only a broken connection), else rank 0's own exception."""
    noticed = time.time()
    deadline = time.monotonic() + 3.0  # a dying helper may still be writing its error file
    while time.monotonic() < deadline and not _helper_failures(state):
        if all(h.proc.poll() is None for h in state.helpers) and not _is_comm_error(exc):
            break  # rank 0 failed on its own; the helpers are only waiting for it
        time.sleep(POLL_S)
    earlier = [f for f in _helper_failures(state) if (f.get("time") or noticed) <= noticed]
    if earlier and _is_comm_error(exc):
        return _error(min(earlier, key=lambda f: f.get("time") or noticed))
    return exc


def _helper_failures(state: _Launch) -> list[dict[str, Any]]:
    return state.failures + [f for f in (h.failure() for h in state.helpers) if f]


def _is_comm_error(exc: BaseException) -> bool:
    """An error of the collectives themselves (a peer went away), not of the training code."""
    import torch.distributed as dist

    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(
        s in text for s in ("connection closed", "connection reset", "broken pipe", "gloo", "nccl"))


def _error(failure: dict[str, Any]) -> DistributedError:
    return DistributedError(f"rank {failure['rank']} failed: {failure['reason']}")


def _finish_helpers(state: _Launch, timeout_s: float) -> None:
    """After training: every helper must exit cleanly, in time."""
    deadline = time.monotonic() + timeout_s
    for h in state.helpers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            h.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        failure = h.failure()
        if failure:
            raise _error(failure)
        if h.proc.poll() is None:
            raise DistributedError(f"rank {h.rank} did not exit within {timeout_s:.0f} s of the end "
                                   f"of training; last output: {_tail(h.log)}")


def _teardown(state: _Launch) -> None:
    """Kill any helper still running (SIGKILL: one blocked in a collective answers nothing
    gentler), then destroy rank 0's process group, which then has no peer left to wait for."""
    for h in state.helpers:
        if h.proc.poll() is None:
            h.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            h.proc.wait(timeout=10)
    _leave_group()


def _remove(workdir: Path) -> None:
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)


def _exit_reason(code: int, log: Path) -> str:
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    hint = " (out of memory?)" if code == -signal.SIGKILL else ""
    return f"{how}{hint}; last output: {_tail(log)}"


def _tail(path: Path, chars: int = 800) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(none)"
    return " ".join(text[-chars:].split()) or "(none)"


# ---------------------------------------------------------------------------------------------
# Helper ranks: `python -m harness.training.ranks ...`


def helper_main(argv: list[str] | None = None) -> int:
    """A helper rank: join rank 0's store and process group, run the entry, report any failure
    to its error file (read by rank 0), and always leave the process group."""
    args = _parse(argv)
    _die_with_parent(args.parent)
    workdir = Path(args.workdir)
    try:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        fn = _load_entry(args.entry)
        payload = json.loads((workdir / "payload.json").read_text())
        ctx = _connect(args)
        fn(payload, ctx)
        ctx.barrier()
        return 0
    except BaseException as exc:  # noqa: BLE001 - reported to rank 0, then exit non-zero
        _write_error(workdir / f"rank-{args.rank}.error.json", exc)
        traceback.print_exc()
        return 1
    finally:
        _leave_group()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.training.ranks",
                                     description="A helper rank of a data-parallel trial (started by rank 0).")
    parser.add_argument("--entry", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", default="gloo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--timeout-s", type=float, default=COLLECTIVE_TIMEOUT_S)
    parser.add_argument("--parent", type=int, default=None)
    return parser.parse_args(argv)


def _die_with_parent(parent: int | None) -> None:
    """Linux: SIGKILL this helper when rank 0's launching thread dies (a killed Ray worker)."""
    if parent is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # rank 0 died before prctl took effect
        os._exit(1)


def _load_entry(entry: str) -> Callable[[dict[str, Any], DistContext], Any]:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def _connect(args: argparse.Namespace) -> DistContext:
    from torch.distributed import TCPStore

    timeout = datetime.timedelta(seconds=args.timeout_s)
    store = TCPStore("127.0.0.1", args.port, args.world, False, timeout=timeout)
    store.add(READY_KEY, 1)
    return _join_group(args.rank, args.world, args.backend, args.device, store, args.timeout_s)


def _write_error(path: Path, exc: BaseException) -> None:
    reason = f"{type(exc).__name__}: {exc}"
    tb = "".join(traceback.format_exception(exc)[-6:])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"reason": reason, "traceback": tb, "time": time.time()}))
    os.replace(tmp, path)


def _leave_group() -> None:
    with contextlib.suppress(Exception):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(helper_main())
