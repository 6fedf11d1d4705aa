"""`harness sweep --resume` after the driver was SIGKILLed at a random moment and Ray's state was
deleted (a reboot): finished trials are not re-run, every trial ends with exactly one record and one
scores row per task, and no half-written record is ever left."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from harness.results import load_records
from harness.spec.load import load_sweep
from harness.sweep.driver import finished_ids, planned_trials

pytestmark = pytest.mark.slow


def _sweep_file(tmp_path):
    from harness.tasks import synthetic

    rows = [*synthetic.generate_rows("attribute_infer", "heldout", 2),
            *synthetic.generate_rows("unit_price", "heldout", 2)]
    (tmp_path / "mc.json").write_text(json.dumps(rows))
    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump({
        "name": "kill", "output_dir": str(tmp_path / "results"), "data": {"per_subtask": 8},
        "eval": {"sets": [{"path": str(tmp_path / "mc.json"), "name": "mc"}], "baseline": True},
        "grid": {"domains": {"each": ["concept"]}, "lora_rank": [2, 4], "seed": [0, 1]},
        "train": {"steps": 4, "micro_batch": 4, "max_seq_len": 128, "log_every": 1, "warmup_steps": 0},
        "resources": {"cpu": 1, "gpu": "auto"}, "wandb": {"mode": "offline", "project": "kill-test"}}))
    return path


def _sweep(path, *extra, **popen):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(path), "--num-cpus", "2",
                             *extra], env=env, start_new_session=True,  # its own process group
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _wait_for_a_record(trials_dir, proc, timeout=150):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(trials_dir.glob("*.json")):
            return
        time.sleep(0.2)
    raise AssertionError(f"no record after {timeout}s (exit {proc.poll()}):\n{proc.communicate()[0][-3000:]}")


def _wait_until_gone(pgid, timeout=15.0):
    """Until no process of the killed group is left (a dying worker must not write after we look)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def test_resume_after_the_driver_is_killed_and_ray_state_is_lost(tmp_path):
    from harness.model import resolve_model_path

    path = _sweep_file(tmp_path)
    spec = load_sweep(path)
    results = spec.results_dir
    resolve_model_path(spec.base_model)  # a cold cache pretrains builtin:tiny here, not inside the timed wait
    seed = random.randrange(10**6)
    delay = random.Random(seed).uniform(0.0, 2.0)  # the sweep runs for several seconds more
    proc = _sweep(path)
    try:
        _wait_for_a_record(results / "trials", proc)
        time.sleep(delay)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its group: local Ray too
        except ProcessLookupError:
            pass  # it had already finished
        killed_out = proc.communicate()[0]
        _wait_until_gone(proc.pid)
    context = f"(killed {delay:.2f}s after the first record; seed {seed})"

    records, problems = load_records(results)
    assert not problems, f"a half-written record {context}: {problems}"
    written = [*results.glob("trials/*.json"), *results.glob("baseline/*.json")]
    done_before = {p: p.read_bytes() for p in written if p.stem in finished_ids(results)}
    shutil.rmtree(results / "ray", ignore_errors=True)  # a reboot: Ray's state is gone, records stay

    resumed = _sweep(path, "--resume")
    out, _ = resumed.communicate(timeout=300)
    context += f"\n--- killed driver ---\n{killed_out[-2000:]}\n--- resumed driver ---\n{out[-4000:]}"
    assert resumed.returncode == 0, context

    records, problems = load_records(results)
    planned = sorted(t.trial_id for t in planned_trials(spec))
    assert not problems, context
    assert sorted(r.run.trial_id for r in records) == planned, f"exactly one record per trial {context}"
    failed = [(r.run.trial_id, r.train.reason) for r in records if not r.ok]
    assert not failed, (failed, context)
    for record_path, content in done_before.items():
        assert record_path.read_bytes() == content, f"{record_path.name} re-ran {context}"
    assert f"already done {len(done_before)}" in out, context
    table = pd.read_parquet(results / "scores.parquet")
    assert not table.duplicated(["trial_id", "eval_set", "task"]).any()
    assert table.groupby("trial_id")["task"].count().to_dict() == {t: 2 for t in planned}
    print(f"resumed {context.splitlines()[0]}: {len(done_before)} trial(s) were done before")
