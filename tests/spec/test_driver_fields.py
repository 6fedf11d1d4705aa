"""The sweep driver's spec fields: search (Optuna, ASHA), adapters kept, held-out loss, W&B timeout.
Each bad value names its field; bookkeeping fields never change trial ids."""

from __future__ import annotations

import re

import pytest
import yaml

from harness.errors import InputError
from harness.spec.expand import baseline_trial, expand_trials
from harness.spec.load import load_sweep, validate_sweep
from harness.spec.schema import search_metric

BASE = {"name": "s", "grid": {"domains": {"incremental": ["concept", "reasoning"]}, "lora_rank": [4, 8]},
        "train": {"steps": 40, "log_every": 10}}


def _raw(**blocks):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in blocks.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def _problems(raw) -> str:
    with pytest.raises(InputError) as info:
        validate_sweep(raw, source="s.yaml")
    return str(info.value)


def test_defaults_are_a_plain_grid_keeping_the_final_adapter():
    spec = validate_sweep(_raw())
    assert spec.search.method == "grid" and spec.search.scheduler == "none"
    assert spec.train.keep_checkpoints == 1 and spec.train.eval_every is None
    assert spec.wandb.init_timeout == 90


def test_search_shorthand_and_block():
    assert validate_sweep(_raw(search="grid")).search.method == "grid"
    spec = validate_sweep(_raw(search={"method": "optuna", "num_samples": 3}))
    assert spec.search.method == "optuna" and spec.search.num_samples == 3
    assert search_metric(spec) == ("synthetic-heldout/overall", "max")


def test_search_metric_eval_loss_minimises():
    spec = validate_sweep(_raw(search={"method": "optuna", "num_samples": 2, "metric": "eval_loss"},
                               train={"eval_every": 10}))
    assert search_metric(spec) == ("eval_loss", "min")


@pytest.mark.parametrize("blocks, expected", [
    ({"search": "optina"}, r"search.method: Input should be 'grid' or 'optuna'"),
    ({"search": {"method": "optuna"}}, r"search.num_samples: missing: optuna needs"),
    ({"search": {"num_samples": 4}}, r"search.num_samples: only used by method optuna"),
    ({"search": {"method": "optuna", "num_samples": 2, "metric": "synthetic-heldout/overal"}},
     r"search.metric: unknown metric 'synthetic-heldout/overal' \(did you mean 'synthetic-heldout/overall'\?\)"),
    ({"search": {"method": "optuna", "num_samples": 2, "metric": "eval_loss"}},
     r"search.metric: eval_loss needs train.eval_every"),
    ({"search": {"scheduler": "asha"}}, r"search.scheduler: asha watches the held-out loss: set train.eval_every"),
    ({"search": {"scheduler": "asha", "grace_period": 40}, "train": {"eval_every": 10}},
     r"search.grace_period: 40 steps leaves ASHA nothing to stop before train.steps \(40\)"),
    ({"search": {"reduction_factor": 1}}, r"search.reduction_factor: Input should be greater than 1"),
    ({"train": {"eval_every": 15}}, r"train.eval_every: 15 must be a multiple of train.log_every \(10\)"),
    ({"train": {"checkpoint_every": 10}}, r"train.checkpoint_every: intermediate adapters need train.keep_checkpoints >= 2"),
    ({"train": {"keep_checkpoints": 3}}, r"train.keep_checkpoints: 3 keeps intermediate adapters: set train.checkpoint_every"),
    ({"train": {"keep_checkpoints": -1}}, r"train.keep_checkpoints: Input should be greater than or equal to 0"),
    ({"wandb": {"init_timeout": 0}}, r"wandb.init_timeout: Input should be greater than 0"),
])
def test_bad_driver_fields_name_the_field(blocks, expected):
    msg = _problems(_raw(**blocks))
    assert re.search(expected, msg), msg
    assert "nothing was launched" in msg


def test_bookkeeping_fields_do_not_change_trial_or_cell_ids():
    plain = expand_trials(validate_sweep(_raw()))
    tuned = expand_trials(validate_sweep(_raw(train={"keep_checkpoints": 3, "checkpoint_every": 10,
                                                    "eval_every": 20, "eval_rows": 4},
                                             search={"scheduler": "asha"}, wandb={"init_timeout": 5})))
    assert [t.trial_id for t in plain] == [t.trial_id for t in tuned]
    assert [t.cell_id for t in plain] == [t.cell_id for t in tuned]
    assert tuned[0].train.eval_every == 20  # still shipped to the worker
    learning = expand_trials(validate_sweep(_raw(train={"lr": 1e-3})))
    assert plain[0].trial_id != learning[0].trial_id


def test_ids_of_an_older_sweep_layout_are_unchanged():
    # Ids written by earlier harness versions (the smoke sweep as it was before the calibration work):
    # a resume must find their records (see config.IDENTITY_EXCLUDE and _drop_added_later).
    raw = {"name": "smoke", "base_model": "builtin:tiny",
           "data": {"sources": ["builtin:synthetic"], "per_subtask": 160},
           "eval": {"sets": ["builtin:synthetic-heldout"], "per_subtask": 16},
           "grid": {"domains": {"sets": [["concept"], ["concept", "reasoning", "behavior", "multilingual"]]},
                    "lora_rank": [4, 16], "seed": [0, 1]},
           "train": {"steps": 80, "lr": 3.0e-3, "micro_batch": 16},
           "capacity": {"family": "lora", "alpha": "2x_rank", "target_modules": "all-linear"},
           "resources": {"cpu": 1, "gpu": "auto"}, "wandb": {"project": "divcap", "mode": "offline"}}
    spec = validate_sweep(raw)
    trials = expand_trials(spec)
    assert [t.trial_id for t in trials[:3]] == ["8621f0338d1e", "fe19a7e687b9", "1e69e61101bf"], \
        "trial ids changed: results of earlier sweeps would be re-run (see config.IDENTITY_EXCLUDE)"
    assert trials[0].cell_id == "ec156901a997" and baseline_trial(spec).trial_id == "d12f30b189ce"


def test_override_sets_search_fields(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_raw()))
    spec = load_sweep(path, ["search.method=optuna", "search.num_samples=5", "search.scheduler=asha",
                             "train.eval_every=10"])
    assert (spec.search.method, spec.search.num_samples, spec.search.scheduler) == ("optuna", 5, "asha")
