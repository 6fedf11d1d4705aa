"""A data-parallel trial through the Ray driver: resources.ranks 2 on CPUs starts a helper rank
from inside the Tune worker, and the record says how many ranks trained."""

from __future__ import annotations

import pytest
import yaml

from harness.results import load_records
from harness.spec.load import load_sweep
from harness.sweep.driver import run_sweep

pytestmark = pytest.mark.slow


def test_a_two_rank_trial_runs_under_tune(tmp_path, ray_session):
    sweep = {"name": "ranks", "output_dir": str(tmp_path), "data": {"per_subtask": 8},
             "eval": {"per_subtask": 1, "baseline": False},
             "grid": {"domains": {"each": ["concept"]}, "lora_rank": [2], "seed": [0]},
             "train": {"steps": 2, "micro_batch": 4, "log_every": 1},
             "resources": {"cpu": 2, "gpu": 0, "ranks": 2}, "wandb": {"mode": "disabled"}}
    path = tmp_path / "ranks.yaml"
    path.write_text(yaml.safe_dump(sweep))
    outcome = run_sweep(load_sweep(path))
    records, problems = load_records(outcome.results_dir)
    assert not problems and len(records) == 1
    assert records[0].ok, records[0].train.reason
    assert records[0].meta["ranks"] == 2 and records[0].train.steps == 2
