"""Pins: the trial ids of every shipped sweep never change by accident.

A trial id is what `--resume` looks for in a results folder, so a refactor that changes one silently
re-runs finished trials. tests/fixtures/shipped_trial_ids.json holds every shipped sweep's ids (the
baseline's and each trial's, in expansion order), written from the code before the capacity-registry
redesign. A new shipped sweep adds its entry with `python tests/test_trial_id_pins.py NEW.yaml`;
an existing entry changes only with a deliberate, explained id change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from harness.spec.expand import baseline_trial, expand_trials
from harness.spec.load import load_sweep

REPO = Path(__file__).resolve().parents[1]
PINS = REPO / "tests" / "fixtures" / "shipped_trial_ids.json"


def _location_free(path: Path) -> bool:
    """A sweep that reads real files hashes their absolute paths (resolved against the directory the
    command runs in), so its ids depend on where the checkout lies and cannot be pinned here."""
    sources = (yaml.safe_load(path.read_text()).get("data") or {}).get("sources") or []
    return all(isinstance(src, str) for src in sources)


SWEEPS = [p for p in sorted((REPO / "sweeps").glob("*.yaml")) if _location_free(p)]


def trial_ids(path: Path) -> dict[str, object]:
    spec = load_sweep(path)
    return {"baseline": baseline_trial(spec).trial_id, "trials": [t.trial_id for t in expand_trials(spec)]}


def test_every_shipped_sweep_is_pinned():
    missing = sorted({p.name for p in SWEEPS} - set(json.loads(PINS.read_text())))
    assert not missing, f"add their ids with: python tests/test_trial_id_pins.py {' '.join(missing)}"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweep_trial_ids_are_unchanged(path):
    pinned = json.loads(PINS.read_text()).get(path.name)
    if pinned is None:
        pytest.skip(f"{path.name} is not pinned yet (test_every_shipped_sweep_is_pinned says how)")
    assert trial_ids(path) == pinned


if __name__ == "__main__":  # add entries for new sweeps; existing entries are never rewritten here
    pins = json.loads(PINS.read_text())
    for name in sys.argv[1:]:
        if name in pins:
            sys.exit(f"{name} is already pinned; an id change must be a deliberate edit of {PINS}")
        pins[name] = trial_ids(REPO / "sweeps" / name)
    PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
