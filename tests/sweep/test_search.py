"""Optuna over the grid's factors, without Ray: distinct draws, the same draws for the same seed,
a warm start from finished records, and the grid <-> factor-choice mapping."""

from __future__ import annotations

import pytest

from harness.results import EvalResult, RunInfo, TrainInfo, TrialRecord, TrialStatus
from harness.spec.expand import expand_trials
from harness.spec.load import validate_sweep
from harness.sweep.search import FACTORS, FactorSampler, factor_keys, factor_space

SPEC = {"name": "search", "search": {"method": "optuna", "num_samples": 3},
        "grid": {"domains": {"each": ["concept", "reasoning"]}, "lora_rank": [2, 4, 8], "seed": [0, 1]}}


@pytest.fixture(scope="module")
def spec():
    return validate_sweep(SPEC)


def test_every_grid_trial_has_one_factor_key(spec):
    trials = expand_trials(spec)
    keys = factor_keys(spec, trials)
    assert len(keys) == len(trials) == 2 * 3 * 2 and set(keys.values()) == {t.trial_id for t in trials}
    space = factor_space(spec)
    assert list(space) == list(FACTORS) and space["capacity"] == [0, 1, 2] and space["data_set"] == [0, 1]
    for (data_set, volume, setting, seed), trial_id in keys.items():
        t = next(t for t in trials if t.trial_id == trial_id)
        assert (t.lora_rank, t.seed, t.volume) == ([2, 4, 8][setting], seed, volume)
        assert t.domains == [["concept"], ["reasoning"]][data_set]


def _draw_all(sampler, value=lambda key: float(key[2])):
    keys = []
    while (drawn := sampler.draw()) is not None:
        handle, key = drawn
        sampler.tell(handle, value(key))
        keys.append(key)
    return keys


def test_draws_are_distinct_until_the_grid_is_exhausted(spec):
    keys = factor_keys(spec, expand_trials(spec))
    drawn = _draw_all(FactorSampler(factor_space(spec), keys, "max", seed=0))
    assert sorted(drawn) == sorted(keys)  # every trial once, then None


def test_same_seed_same_draws(spec):
    keys = factor_keys(spec, expand_trials(spec))
    first = _draw_all(FactorSampler(factor_space(spec), keys, "max", seed=3))
    again = _draw_all(FactorSampler(factor_space(spec), keys, "max", seed=3))
    assert first == again


def test_warm_start_skips_finished_trials_and_failed_ones_teach_nothing(spec):
    trials = expand_trials(spec)
    done = [trials[0], trials[1]]

    def record(trial, ok):
        return TrialRecord(run=RunInfo(trial_id=trial.trial_id, cell_id=trial.cell_id, sweep="search",
                                       factors=trial.factors),
                           train=TrainInfo(status=TrialStatus.SUCCESS if ok else TrialStatus.FAILED),
                           eval={"synthetic-heldout": EvalResult(overall=0.5)} if ok else {})

    records = [record(done[0], True), record(done[1], True), record(trials[2], False)]
    sampler = FactorSampler.for_sweep(spec, trials, records)
    keys = factor_keys(spec, trials)
    drawn = _draw_all(sampler)
    finished = {k for k, i in keys.items() if i in {t.trial_id for t in done}}
    assert len(drawn) == len(trials) - 2 and not finished & set(drawn)
    assert {k for k, i in keys.items() if i == trials[2].trial_id} <= set(drawn)  # a failed one may run again
