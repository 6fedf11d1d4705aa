"""The `harness` command as a user runs it: exit codes, JSON shapes, error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def harness(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_plan_json_lists_trials_with_ids_cells_and_factors(repo):
    proc = harness("plan", "sweeps/smoke.yaml", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    trials = json.loads(proc.stdout)["trials"]
    real = [t for t in trials if t["kind"] == "trial"]
    assert len(real) == 8 and {"trial_id", "cell_id", "factors"} <= set(real[0])
    assert len({t["cell_id"] for t in real}) == 4
    assert {t["factors"]["lora_rank"] for t in real} == {4, 16}


def test_score_json_on_ec_guide_perfect_responses(tmp_path, ec_guide):
    rows = json.loads((ec_guide / "MCQ" / "SPA.json").read_text())[:20]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(rows))
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"response": str(r["output_field"])}) + "\n" for r in rows))
    proc = harness("score", str(bench), str(responses), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"tasks", "tracks", "overall", "pooled"}
    assert doc["tasks"]["bench"] == {"score": 1.0, "metric": "accuracy", "n": 20, "track": "default",
                                     "se": 0.0, "ci95": [1.0, 1.0]}
    assert doc["overall"] == pytest.approx(1.0)


def test_score_count_mismatch_exits_2_and_names_both_counts(tmp_path, ec_guide):
    rows = json.loads((ec_guide / "MCQ" / "SPA.json").read_text())[:3]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(rows))
    responses = tmp_path / "responses.jsonl"
    responses.write_text(json.dumps({"response": "1"}) + "\n")
    proc = harness("score", str(bench), str(responses))
    assert proc.returncode == 2
    assert "3" in proc.stderr and "1" in proc.stderr and "Traceback" not in proc.stderr


def test_analyze_on_an_empty_directory_exits_2(tmp_path):
    proc = harness("analyze", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
