"""The driver on a real local Ray (CPU only): every fault type ends in its record and the sweep goes
on; ASHA stops a trial that falls behind (a cancelled record with the reason); Optuna draws distinct
trials from the grid's factors and a resume draws only what is missing. One Ray session per module."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from harness.results import TrialStatus, load_records
from harness.spec.load import validate_sweep
from harness.sweep.driver import finished_ids, planned_trials, run_sweep

pytestmark = pytest.mark.slow


def mc_eval_file(path):
    """A small multiple-choice evaluation set (two tasks, two rows each): scoring costs almost nothing."""
    from harness.tasks import synthetic

    rows = [*synthetic.generate_rows("attribute_infer", "heldout", 2),
            *synthetic.generate_rows("unit_price", "heldout", 2)]
    path.write_text(json.dumps(rows))
    return str(path)


def tiny_sweep(tmp_path, name, **blocks):
    raw = {"name": name, "output_dir": str(tmp_path), "data": {"per_subtask": 8},
           "eval": {"sets": [{"path": mc_eval_file(tmp_path / "mc.json"), "name": "mc"}], "baseline": False},
           "grid": {"domains": {"each": ["concept"]}, "lora_rank": [2], "seed": [0]},
           "train": {"steps": 2, "micro_batch": 4, "max_seq_len": 128, "log_every": 1, "warmup_steps": 0},
           "resources": {"cpu": 1, "gpu": "auto"}, "wandb": {"mode": "disabled"}}
    for key, value in blocks.items():
        raw[key] = {**raw.get(key, {}), **value}
    return validate_sweep(raw)


FAULTS = ["oom", "raise", "nan", "kill", "diverge"]  # in trial order; the diverging one runs last


@pytest.fixture(scope="module")
def faulty_sweep(tmp_path_factory, ray_session):
    spec = tiny_sweep(tmp_path_factory.mktemp("faults"), "faults",
                      grid={"seed": list(range(len(FAULTS)))},
                      train={"steps": 4, "eval_every": 1},
                      search={"scheduler": "asha", "grace_period": 1, "reduction_factor": 2},
                      resources={"max_concurrent": 1})  # one at a time: ASHA's rungs fill in trial order
    trials = dict(zip(FAULTS, planned_trials(spec)))
    os.environ["HARNESS_FAULTS"] = ",".join(f"{k}:{t.trial_id}" for k, t in trials.items())
    try:
        outcome = run_sweep(spec)
    finally:
        os.environ.pop("HARNESS_FAULTS")
    records = {r.run.trial_id: r for r in load_records(outcome.results_dir)[0]}
    return spec, outcome, {k: records.get(t.trial_id) for k, t in trials.items()}


def test_each_fault_is_recorded_and_the_sweep_goes_on(faulty_sweep):
    _, outcome, rec = faulty_sweep
    assert all(r is not None for r in rec.values()), "every trial ends with a record"
    assert rec["oom"].ok and rec["oom"].train.retries == ["oom: micro_batch 4 -> 2, grad_accum 1 -> 2"]
    assert rec["raise"].train.status is TrialStatus.FAILED and "injected fault" in rec["raise"].train.reason
    assert rec["nan"].train.status is TrialStatus.FAILED
    assert rec["nan"].train.reason.startswith("NonFiniteLossError: loss became nan at step 1")
    assert sorted(outcome.failed) == sorted(rec[k].run.trial_id for k in ("raise", "nan", "kill"))


def test_killed_worker_reason_comes_from_tunes_error(faulty_sweep):
    reason = faulty_sweep[2]["kill"].train.reason
    assert reason.startswith("worker died before writing a record: ActorDiedError: ")
    assert "pid:" in reason and "Worker exit" in reason and "Some common causes" not in reason


def test_asha_stops_the_diverging_trial_with_a_cancelled_record(faulty_sweep):
    spec, outcome, rec = faulty_sweep
    stopped = rec["diverge"]
    assert stopped.train.status is TrialStatus.CANCELLED
    assert stopped.train.reason.startswith("early-stopped by ASHA at step 1: held-out loss")
    assert stopped.meta["stopped_by"] == "asha" and stopped.train.eval_loss > rec["oom"].train.eval_loss
    assert outcome.cancelled == [stopped.run.trial_id]
    # a stopped trial is done: a resume does not run it again (nor the successful one)
    assert finished_ids(outcome.results_dir) == {rec["oom"].run.trial_id, stopped.run.trial_id}


def test_records_carry_the_cpu_device_and_the_ray_node(faulty_sweep):
    ok = faulty_sweep[2]["oom"]
    assert ok.meta["device"].startswith("cpu") and ok.meta["ray_node_id"] and ok.meta["tune_trial_id"]
    assert ok.meta["adapter"] == f"adapters/{ok.run.trial_id}"
    table = pd.read_parquet(faulty_sweep[1].results_dir / "scores.parquet")
    assert set(table["trial_id"]) == {ok.run.trial_id}
    assert set(table["task"]) == {"attribute_infer", "unit_price"}


def test_optuna_draws_distinct_grid_trials_and_resume_draws_the_rest(tmp_path, ray_session):
    grid = {"domains": {"each": ["concept", "reasoning"]}, "lora_rank": [2, 4]}
    spec = tiny_sweep(tmp_path, "optuna", grid=grid, search={"method": "optuna", "num_samples": 2})
    outcome = run_sweep(spec)
    records, _ = load_records(outcome.results_dir)
    grid_ids = {t.trial_id for t in planned_trials(spec)}
    assert outcome.ran == 2 and len(records) == 2 and all(r.ok for r in records)
    assert {r.run.trial_id for r in records} <= grid_ids
    before = {p.name: p.stat().st_mtime_ns for p in (outcome.results_dir / "trials").glob("*.json")}

    more = tiny_sweep(tmp_path, "optuna", grid=grid, search={"method": "optuna", "num_samples": 3})
    again = run_sweep(more, resume=True)
    records, _ = load_records(again.results_dir)
    assert again.ran == 1 and again.skipped == 2 and len({r.run.trial_id for r in records}) == 3
    after = {p.name: p.stat().st_mtime_ns for p in (again.results_dir / "trials").glob("*.json")}
    assert all(after[name] == mtime for name, mtime in before.items()), "finished trials were re-run"
    table = pd.read_parquet(again.results_dir / "scores.parquet")
    assert table.groupby("trial_id")["task"].count().to_dict() == {r.run.trial_id: 2 for r in records}


def test_an_epochs_budget_runs_through_ray_with_steps_from_each_mixture(tmp_path, ray_session):
    grid = {"domains": {"sets": [["concept"], ["concept", "reasoning"]]}}
    spec = tiny_sweep(tmp_path, "epochs", grid=grid, train={"steps": None, "epochs": 1},
                      data={"per_subtask": 4})
    outcome = run_sweep(spec)
    records, _ = load_records(outcome.results_dir)
    assert len(records) == 2 and all(r.ok for r in records), [r.train.reason for r in records]
    # one pass over 6 x 4 and 10 x 4 rows at 4 sequences a step
    assert sorted(r.train.steps for r in records) == [6, 10]
