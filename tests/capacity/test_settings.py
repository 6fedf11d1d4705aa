"""Capacity in the sweep spec: grid.capacity x ranks, match_params, ids, and refused settings."""

from __future__ import annotations

import re

import pytest

from harness.errors import InputError
from harness.spec.expand import expand_trials
from harness.spec.load import validate_sweep

BASE = {"name": "cap", "grid": {"domains": {"sets": [["concept"], ["concept", "reasoning"]]}}}


def _spec(**blocks):
    raw = {**BASE, **{k: v for k, v in blocks.items() if k != "grid"}}
    raw["grid"] = {**BASE["grid"], **blocks.get("grid", {})}
    return validate_sweep(raw)


def _problems(**blocks) -> str:
    with pytest.raises(InputError) as err:
        _spec(**blocks)
    return str(err.value)


def test_settings_are_crossed_with_ranks_unless_they_pin_one():
    spec = _spec(grid={"lora_rank": [4, 8], "capacity": [{"family": "lora"}, {"family": "dora"},
                                                          {"family": "mole", "rank": 2}]})
    labels = [t.capacity.label for t in expand_trials(spec) if t.domains == ["concept"]]
    assert labels == ["lora-r4", "lora-r8", "dora-r4", "dora-r8", "mole-e4k2-r2"]


def test_factors_and_names_carry_the_capacity():
    spec = _spec(grid={"capacity": [{"family": "multi_lora"}]}, capacity={"alpha": "rslora:16"})
    trial = expand_trials(spec)[1]
    assert trial.capacity.groups == {"concept": ["concept"], "reasoning": ["reasoning"]}
    assert trial.capacity.rslora and trial.capacity.alpha == 16.0
    assert trial.factors["capacity_family"] == "multi_lora"
    assert trial.factors["capacity"] == "multi_lora-g2-r8" and trial.name.endswith("multi_lora-g2-r8-s0")
    assert trial.factors["adapter_params"] == trial.capacity.params > 0


def test_declared_groups_keep_only_the_trials_members():
    spec = _spec(grid={"capacity": [{"family": "multi_lora",
                                     "groups": {"words": ["concept"], "logic": ["reasoning"]}}]})
    one, two = expand_trials(spec)
    assert one.capacity.groups == {"words": ["concept"]}
    assert two.capacity.groups == {"words": ["concept"], "logic": ["reasoning"]}


def test_match_params_picks_the_nearest_rank_per_budget():
    spec = _spec(grid={"capacity": [{"family": "lora"}, {"family": "mole", "experts": 4}]},
                 capacity={"match_params": ["r16", 50000]})
    first_cell = [t.capacity for t in expand_trials(spec) if t.domains == ["concept"]]
    assert [(c.label, c.budget) for c in first_cell] == [
        ("lora-r16", "r16"), ("mole-e4k2-r4", "r16"),  # 149504 params; mole: 37376 r + 17920
        ("lora-r5", "50000"), ("mole-e4k2-r1", "50000")]


def test_plain_lora_ids_do_not_depend_on_the_new_knobs_being_written_out():
    implicit = expand_trials(_spec(grid={"lora_rank": [4]}))
    explicit = expand_trials(_spec(grid={"lora_rank": [4], "capacity": [{"family": "lora"}]},
                                   capacity={"alpha": "2x_rank", "experts": 8}))
    assert [t.trial_id for t in implicit] == [t.trial_id for t in explicit]
    dora = expand_trials(_spec(grid={"lora_rank": [4], "capacity": [{"family": "dora"}]}))
    assert not {t.trial_id for t in dora} & {t.trial_id for t in implicit}


@pytest.mark.parametrize("blocks, message", [
    ({"grid": {"capacity": [{"family": "lora", "rank": 0}]}}, r"grid.capacity\[0\].rank: .*greater than or equal to 1"),
    ({"grid": {"capacity": [{"family": "mole", "experts": 2, "top_k": 3}]}},
     r"grid.capacity\[0\].top_k: top_k 3 exceeds experts 2"),
    ({"capacity": {"family": "mole", "top_k": 5}}, r"capacity.top_k: top_k 5 exceeds experts 4"),
    ({"grid": {"capacity": [{"family": "mole", "exprts": 4}]}},
     r"grid.capacity\[0\].exprts: unknown key \(did you mean 'experts'\?\)"),
    ({"grid": {"capacity": [{"family": "moe"}]}},
     r"grid.capacity\[0\].family: unknown capacity family 'moe' \(did you mean 'mole'\?\); known: dora, lora"),
    ({"grid": {"capacity": [{"family": "multi_lora", "groups": {"words": ["concept"]}}]}},
     r"grid.capacity\[0\].groups: domain 'reasoning' \(data set 1 of the grid\) has no adapter"),
    ({"grid": {"capacity": [{"family": "multi_lora", "groups": {"a": ["concept", "reasoning"], "b": ["concept"]}}]}},
     r"'concept' is in groups 'a' and 'b'"),
    ({"grid": {"capacity": [{"family": "multi_lora", "groups": {"a": ["concpt", "reasoning"]}}]}},
     r"unknown domain 'concpt' in group 'a' \(did you mean 'concept'\?\)"),
    ({"grid": {"capacity": [{"family": "mole", "experts": 64}]}, "capacity": {"match_params": ["r1"]}},
     r"grid.capacity\[0\].family: mole cannot be matched to budget r1 .* use fewer experts"),
    ({"grid": {"lora_rank": [4]}, "capacity": {"match_params": ["r8"]}},
     r"grid.lora_rank: capacity.match_params chooses the ranks"),
    ({"capacity": {"match_params": ["rank8"]}}, r"capacity.match_params: 'rank8': a budget is a parameter count"),
    ({"capacity": {"alpha": "3x"}}, r"capacity.alpha: '3x': use a positive number"),
    ({"grid": {"capacity": [{"family": "lora"}, {"family": "lora"}]}},
     r"grid.capacity: two settings resolve to the same adapter \(lora-r8\)"),
    ({"train": {"lora_alpha": 16}}, r"train.lora_alpha: moved to capacity.alpha"),
])
def test_bad_settings_are_refused_with_the_field(blocks, message):
    text = _problems(**blocks)
    assert re.search(message, text), text


def test_eval_map_must_name_a_group():
    text = _problems(grid={"capacity": [{"family": "multi_lora", "groups": {"a": ["concept"], "b": ["reasoning"]}}]},
                     capacity={"eval_map": {"amazon-track": "c"}})
    assert "capacity.eval_map.amazon-track: unknown group 'c'" in text
