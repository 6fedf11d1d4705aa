"""Trial and cell ids are computed from shared spec blocks rendered once per sweep (fast for 10^5
trials); they must equal the reference, content_hash(identity()), for every shipped sweep and for the
layouts added later (epochs, batch_size, other worlds), or finished records would stop matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.spec.load import load_sweep
from harness.spec.schema import TrialSpec, content_hash
from harness.sweep.driver import planned_trials

SWEEPS = sorted((Path(__file__).resolve().parents[2] / "sweeps").rglob("*.yaml"))
VARIANTS = {"as_shipped": [], "epochs": ["train.epochs=2", "train.steps=null"],
            "batch_size": ["train.micro_batch=8", "train.grad_accum=2", "train.batch_size=16"]}  # sweeps/real/ covers eval.heldout_per_source


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.stem)
def test_fast_ids_equal_the_reference_hash(sweep, variant):
    spec = load_sweep(sweep, VARIANTS[variant])
    for trial in planned_trials(spec):
        identity = trial.identity()
        assert trial.trial_id == content_hash(identity)[:12]
        identity.pop("seed")
        assert trial.cell_id == content_hash(identity)[:12]
        again = TrialSpec.model_validate(trial.model_dump())  # as a worker or a record rebuilds it
        assert (again.trial_id, again.cell_id) == (trial.trial_id, trial.cell_id)
