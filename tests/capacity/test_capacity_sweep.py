"""The shipped capacity_families sweep end to end on local Ray (few steps): every family trains,
records its parameters and adapter size, and a reloaded adapter scores what the trial recorded."""

from __future__ import annotations

import pytest

from harness.results import load_records
from harness.spec.load import load_sweep
from harness.sweep.driver import planned_trials, run_sweep

pytestmark = pytest.mark.slow

FAST = ["train.steps=4", "train.micro_batch=8", "train.log_every=2", "data.per_subtask=16",
        "eval.per_subtask=1", "grid.seed=[0]", "data.embedding_diversity_sample=0"]


@pytest.fixture(scope="module")
def finished(repo, tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("results")
    spec = load_sweep(repo / "sweeps" / "capacity_families.yaml", FAST + [f"output_dir={out}"])
    outcome = run_sweep(spec)
    return spec, outcome


def test_every_family_trains_and_records_its_capacity(finished):
    spec, outcome = finished
    records, problems = load_records(outcome.results_dir)
    assert not problems and len(records) == len(planned_trials(spec)) == 17
    trained = [r for r in records if r.run.kind == "trial"]
    assert all(r.ok for r in trained), [r.train.reason for r in trained if not r.ok]
    assert {r.run.factors["capacity_family"] for r in trained} == {"lora", "dora", "multi_lora", "mole"}
    assert {r.run.factors["capacity_budget"] for r in trained} == {"r8", "r32"}
    for r in trained:
        assert r.train.trainable_params == r.run.factors["adapter_params"], r.run.factors["capacity"]
        assert r.train.adapter_bytes > 4 * r.train.trainable_params  # fp32 tensors + small json files
        assert (outcome.results_dir / r.meta["adapter"] / "capacity.json").exists()


def test_reloaded_adapters_score_what_the_trials_recorded(finished):
    from harness.capacity.adapters import load_adapted
    from harness.data.mixture import build_eval_sets
    from harness.model import load_base_model
    from harness.trial.run import evaluate_model

    spec, outcome = finished
    records, _ = load_records(outcome.results_dir)
    trials = {t.trial_id: t for t in planned_trials(spec)}
    eval_sets = build_eval_sets(spec.eval, spec.data)
    chosen = [r for r in records if r.run.kind == "trial" and r.run.factors["n_domains"] == 4
              and r.run.factors["capacity_budget"] == "r8"]
    assert len(chosen) == 4
    for record in chosen:
        tokenizer, base, _ = load_base_model(spec.base_model)
        adapted = load_adapted(base, outcome.results_dir / record.meta["adapter"])
        scores = evaluate_model(adapted, tokenizer, eval_sets, trials[record.run.trial_id], "raw", "cpu")
        assert scores["synthetic-heldout"].overall == pytest.approx(
            record.eval["synthetic-heldout"].overall, abs=1e-9), record.run.factors["capacity"]
