"""The recall world (the calibration controls' mechanism): facts per key or per subtask, validated."""

from __future__ import annotations

import pytest

from harness.data.cache import load_or_build_mixture
from harness.data.mixture import build_eval_sets
from harness.errors import InputError
from harness.spec.expand import available_subtasks, expand_trials
from harness.spec.load import validate_sweep
from harness.tasks.recall import N_VALUES, recall_rows, recall_subtasks

RECALL = {"name": "r", "base_model": "builtin:tiny",
          "data": {"world": {"variant": "recall", "keys": 12}, "per_subtask": 12, "contamination_check": False},
          "grid": {"domains": {"sets": [["concept"], ["concept", "reasoning", "behavior", "multilingual"]]},
                   "lora_rank": [1], "seed": [0]},
          "train": {"steps": None, "epochs": 2}}


def test_two_recall_subtasks_per_domain():
    domains = list(recall_subtasks().values())
    assert sorted(set(domains)) == ["behavior", "concept", "multilingual", "reasoning"]
    assert all(domains.count(d) == 2 for d in set(domains))


def test_per_key_facts_vary_by_product_and_subtask_per_subtask_facts_do_not():
    a = recall_rows("aisle_number", keys=40, facts="per_key")
    b = recall_rows("shelf_number", keys=40, facts="per_key")
    assert len({r["output_field"] for r in a}) > 4  # many numbers: a fact per product
    assert [r["output_field"] for r in a] != [r["output_field"] for r in b]  # subtasks independent
    assert {int(r["output_field"]) for r in a} <= set(range(1, N_VALUES + 1))
    off = recall_rows("aisle_number", keys=40, facts="per_subtask")
    assert len({r["output_field"] for r in off}) == 1  # one fact per subtask
    assert [r["input_field"] for r in off] == [r["input_field"] for r in a]  # same questions


def test_per_subtask_facts_are_distinct_across_subtasks():
    """A trial that answers every recall prompt with its own subtasks' number must score 0 on the
    others: a shared number would give the null control an interaction of its own."""
    for seed in (0, 1, 2):
        numbers = [recall_rows(sid, keys=1, facts="per_subtask", seed=seed)[0]["output_field"]
                   for sid in recall_subtasks()]
        assert sorted(int(n) for n in numbers) == list(range(1, N_VALUES + 1))


def test_recall_sweep_trains_and_evaluates_the_same_facts():
    spec = validate_sweep(RECALL)
    assert set(available_subtasks(spec)) == set(recall_subtasks())
    one, four = (t for t in expand_trials(spec))
    assert len(one.subtasks) == 2 and len(four.subtasks) == 8
    eval_sets = build_eval_sets(spec.eval, spec.data)
    assert len(eval_sets["synthetic-heldout"]) == 8 * 12
    mixture = load_or_build_mixture(four.subtasks, four.volume, four.data, eval_sets)
    assert len(mixture.rows) == 8 * 12
    assert {r["input_field"] for r in mixture.rows} == {r["input_field"] for r in eval_sets["synthetic-heldout"]}


def test_recall_world_needs_the_contamination_check_off_and_real_keys():
    raw = {**RECALL, "data": {**RECALL["data"], "contamination_check": True}}
    with pytest.raises(InputError, match="data.contamination_check: the recall world"):
        validate_sweep(raw, source="s.yaml")
    raw = {**RECALL, "data": {**RECALL["data"], "world": {"variant": "recall", "keys": 10**6}}}
    with pytest.raises(InputError, match="data.world.keys"):
        validate_sweep(raw, source="s.yaml")
