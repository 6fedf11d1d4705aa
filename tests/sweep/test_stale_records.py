"""Records that an older builtin:tiny made: `sweep --resume` sets them aside and reruns their trials.

A trial id hashes the sweep's spec, not the model `builtin:tiny` resolves to, so after the harness
changes the tiny model's world or recipe a resumed sweep would otherwise keep every old record and
report the old model's scores as the new one's. tests/fixtures/smoke_results is such a folder: real
records from an earlier builtin:tiny.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.model import tiny_fingerprint
from harness.results import load_records
from harness.sweep.driver import set_aside_stale

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "smoke_results"


def _copy(tmp_path: Path) -> Path:
    results = tmp_path / "smoke"
    shutil.copytree(FIXTURE, results)
    (results / "adapters" / "a9bd837500aa").mkdir(parents=True)  # an adapter goes with its record
    (results / "adapters" / "a9bd837500aa" / "adapter_model.safetensors").write_bytes(b"weights")
    return results


def test_records_of_an_older_tiny_are_moved_aside_with_their_adapters(tmp_path, caplog):
    results = _copy(tmp_path)
    records, _ = load_records(results)
    old = {r.meta["base_model_revision"] for r in records}
    assert len(records) == 9 and old != {tiny_fingerprint()}
    moved = set_aside_stale(results, records, "builtin:tiny")
    assert moved == {r.run.trial_id for r in records}
    assert load_records(results) == ([], [])  # the trials run again
    (revision,) = old
    kept = results / "stale" / revision
    assert sorted(p.stem for p in (kept / "trials").glob("*.json")) == sorted(
        r.run.trial_id for r in records if r.run.kind == "trial")
    assert (kept / "adapters" / "a9bd837500aa" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert "were made with builtin:tiny revision" in caplog.text and str(kept.parent) in caplog.text


def test_current_records_and_other_models_stay(tmp_path):
    results = _copy(tmp_path)
    current = results / "trials" / "a9bd837500aa.json"
    data = json.loads(current.read_text())
    data["meta"]["base_model_revision"] = tiny_fingerprint()
    current.write_text(json.dumps(data))
    records, _ = load_records(results)
    assert "a9bd837500aa" not in set_aside_stale(results, records, "builtin:tiny")
    assert current.exists()
    records, _ = load_records(results)
    assert set_aside_stale(results, records, "Qwen/Qwen2.5-0.5B") == set()  # no revision known beforehand
    assert len(load_records(results)[0]) == 1
