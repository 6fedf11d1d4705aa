"""One trial without Ray, on builtin:tiny: records, failure records, the OOM retry."""

from __future__ import annotations

import json

import pytest

from harness.config import baseline_trial, expand_trials, validate_sweep
from harness.results import TrialStatus, read_record
from harness.trial import run_trial

pytestmark = pytest.mark.slow

TINY = {
    "name": "unit",
    "data": {"per_subtask": 24},
    "eval": {"per_subtask": 2, "baseline": False},
    "grid": {"domains": {"each": ["concept"]}, "lora_rank": [4], "seed": [0]},
    "train": {"steps": 4, "micro_batch": 8, "log_every": 2},
    "wandb": {"mode": "disabled"},
}


def _spec(**train):
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    return expand_trials(validate_sweep(raw))[0]


def test_trial_writes_a_complete_record(tmp_path):
    spec = _spec()
    record = run_trial(spec, tmp_path, device="cpu", wandb_mode="disabled")
    assert record.ok, record.train.reason
    path = tmp_path / "trials" / f"{spec.trial_id}.json"
    again = read_record(path)
    assert again.run.trial_id == spec.trial_id and again.run.cell_id == spec.cell_id
    assert again.run.factors["domains"] == ["concept"] and again.run.factors["lora_rank"] == 4
    assert again.train.steps == 4 and again.train.trainable_params > 0
    assert [s for s, _ in again.train.loss_curve] == [2, 4]
    assert sum(again.data.examples.values()) == 24 * len(spec.subtasks)
    assert again.data.fingerprint and again.data.diversity["n_domains"] == 1
    heldout = again.eval["synthetic-heldout"]
    assert len({t.track for t in heldout.tasks.values()}) == 4  # evaluation spans all four domains
    assert 0.0 <= heldout.overall <= 1.0
    assert again.meta["base_model"] == "builtin:tiny" and again.meta["versions"]["torch"]


def test_baseline_evaluates_without_training(tmp_path):
    spec = baseline_trial(validate_sweep(TINY))
    record = run_trial(spec, tmp_path, device="cpu", wandb_mode="disabled")
    assert record.ok and record.train.steps == 0
    assert (tmp_path / "baseline" / f"{spec.trial_id}.json").exists()


def test_nan_loss_is_a_failed_record_with_the_reason(tmp_path):
    spec = _spec(lr=1e12, warmup_steps=0)
    record = run_trial(spec, tmp_path, device="cpu", wandb_mode="disabled")
    assert record.train.status is TrialStatus.FAILED
    assert "NonFiniteLossError" in record.train.reason
    assert read_record(tmp_path / "trials" / f"{spec.trial_id}.json").train.status is TrialStatus.FAILED


def test_exception_is_recorded_and_does_not_raise(tmp_path, monkeypatch):
    spec = _spec()
    monkeypatch.setenv("HARNESS_FAULTS", f"raise:{spec.trial_id}")
    record = run_trial(spec, tmp_path, device="cpu", wandb_mode="disabled")
    assert record.train.status is TrialStatus.FAILED and "injected fault" in record.train.reason


def test_out_of_memory_retries_with_half_the_micro_batch(tmp_path, monkeypatch):
    spec = _spec()
    monkeypatch.setenv("HARNESS_FAULTS", f"oom:{spec.trial_id}")
    record = run_trial(spec, tmp_path, device="cpu", wandb_mode="disabled")
    assert record.ok, record.train.reason
    assert record.train.retries == ["oom: micro_batch 8 -> 4, grad_accum 1 -> 2"]
