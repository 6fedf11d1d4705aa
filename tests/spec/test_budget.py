"""The compute budget is a declared choice: train.steps (equal compute) or train.epochs (steps follow
the mixture's size), validated, kept out of old ids, and resolved when a trial runs."""

from __future__ import annotations

import pytest

from harness.errors import InputError
from harness.spec.expand import expand_trials
from harness.spec.load import load_sweep, validate_sweep
from harness.spec.schema import TrainSpec, budget_note, budget_steps

BASE = {"name": "b", "base_model": "builtin:tiny",
        "grid": {"domains": {"sets": [["concept"], ["concept", "reasoning"]]}, "lora_rank": [4], "seed": [0]}}


def test_epochs_steps_follow_the_rows_and_the_step_size():
    assert budget_steps(TrainSpec(steps=None, epochs=2, micro_batch=16), 100) == 13  # ceil(200 / 16)
    assert budget_steps(TrainSpec(steps=None, epochs=1, micro_batch=8, grad_accum=2), 33) == 3
    assert budget_steps(TrainSpec(steps=None, epochs=0.01, micro_batch=16), 10) == 1  # at least one
    assert budget_steps(TrainSpec(steps=70), 10_000) == 70  # steps ignore the mixture's size


def test_steps_and_epochs_together_are_refused_with_the_way_out():
    with pytest.raises(InputError) as info:
        validate_sweep({**BASE, "train": {"steps": 50, "epochs": 2}}, source="s.yaml")
    assert "train.steps" in str(info.value) and "--set train.epochs=N alone" in str(info.value)
    with pytest.raises(InputError, match="missing compute budget"):
        validate_sweep({**BASE, "train": {"steps": None}}, source="s.yaml")


def test_epoch_trials_share_one_id_whatever_steps_said_and_old_ids_stay():
    epochs = expand_trials(validate_sweep({**BASE, "train": {"steps": None, "epochs": 3}}))
    assert len({t.trial_id for t in epochs}) == 2
    assert "steps" not in epochs[0].identity()["train"]
    resolved = epochs[0].model_copy(update={"train": epochs[0].train.model_copy(update={"steps": 99})})
    assert resolved.trial_id == epochs[0].trial_id  # the resolved steps do not move the id
    steps = expand_trials(validate_sweep({**BASE, "train": {"steps": 5}}))
    assert "epochs" not in steps[0].identity()["train"]  # unset: older ids unchanged
    assert steps[0].trial_id != epochs[0].trial_id


def test_asha_needs_equal_steps():
    raw = {**BASE, "train": {"steps": None, "epochs": 2, "eval_every": 10},
           "search": {"scheduler": "asha"}}
    with pytest.raises(InputError, match="search.scheduler: asha stops trials at equal step counts"):
        validate_sweep(raw, source="s.yaml")


def test_budget_note_says_what_the_choice_implies():
    assert "equal compute per cell" in budget_note(TrainSpec(steps=80))
    assert "more compute" in budget_note(TrainSpec(steps=None, epochs=2))


def test_a_command_line_budget_replaces_the_files_other_one(repo):
    smoke = repo / "sweeps" / "smoke.yaml"  # declares epochs
    assert load_sweep(smoke, ["train.steps=40"]).train.epochs is None
    assert load_sweep(smoke, ["train.steps=40"]).train.steps == 40
    rank = load_sweep(repo / "sweeps" / "rank_scaling.yaml", ["train.epochs=2"])  # declares steps
    assert (rank.train.steps, rank.train.epochs) == (None, 2.0)
    with pytest.raises(InputError, match="both set the compute budget"):
        load_sweep(smoke, ["train.steps=40", "train.epochs=3"])  # both on the command line: ambiguous
