"""A tiny sweep end to end on local Ray: records, scores.parquet, offline W&B runs, a killed trial,
resume, and the analysis report. One Ray session for the whole module keeps it fast."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import yaml

from harness.errors import InputError
from harness.results import TrialStatus, load_records
from harness.spec.load import load_sweep
from harness.sweep.driver import planned_trials, run_sweep

pytestmark = pytest.mark.slow

SWEEP = {
    "name": "e2e",
    "data": {"per_subtask": 16},
    "eval": {"per_subtask": 2},
    "grid": {"domains": {"sets": [["concept"], ["concept", "reasoning"]]}, "lora_rank": [2, 4],
             "seed": [0]},
    "train": {"steps": 3, "micro_batch": 8, "log_every": 1},
    "resources": {"cpu": 1, "gpu": "auto"},
    "wandb": {"mode": "offline", "project": "divcap-test"},
}


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("results")
    path = out / "e2e.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, "output_dir": str(out)}))
    spec = load_sweep(path)
    killed = planned_trials(spec)[2]  # a real trial (index 0 is the baseline)
    os.environ["HARNESS_FAULTS"] = f"kill:{killed.trial_id}"
    try:
        outcome = run_sweep(spec)
    finally:
        os.environ.pop("HARNESS_FAULTS")
    return spec, outcome, killed, path


def test_every_trial_has_exactly_one_record(finished_sweep):
    spec, outcome, killed, _ = finished_sweep
    records, problems = load_records(outcome.results_dir)
    assert not problems
    assert sorted(r.run.trial_id for r in records) == sorted(t.trial_id for t in planned_trials(spec))
    by_id = {r.run.trial_id: r for r in records}
    assert by_id[killed.trial_id].train.status is TrialStatus.FAILED
    assert "worker died" in by_id[killed.trial_id].train.reason
    ok = [r for r in records if r.ok]
    assert len(ok) == len(records) - 1  # the kill did not take the other trials down
    assert outcome.failed == [killed.trial_id]


def test_scores_table_has_a_row_per_trial_and_task(finished_sweep):
    _, outcome, _, _ = finished_sweep
    table = pd.read_parquet(outcome.results_dir / "scores.parquet")
    for col in ("trial_id", "cell_id", "kind", "domains", "n_domains", "lora_rank", "seed", "task",
                "track", "metric", "score", "eval_set"):
        assert col in table.columns, col
    per_trial = table.groupby("trial_id")["task"].nunique()
    assert per_trial.nunique() == 1  # every successful trial scored on every held-out task
    assert not table.duplicated(["trial_id", "eval_set", "task"]).any()
    assert set(table["kind"]) == {"trial", "baseline"}


def test_offline_wandb_runs_exist_per_trial(finished_sweep):
    spec, outcome, _, _ = finished_sweep
    runs = list((outcome.results_dir / "wandb").glob("offline-run-*"))
    ids = {r.name.split("-", 3)[-1] for r in runs}  # offline-run-<date>_<time>-<run id>
    expected = {f"{spec.name}-{t.trial_id}" for t in planned_trials(spec)}
    assert len(runs) >= len(expected) - 1 and ids <= expected


def test_resume_reruns_only_the_failed_trial(finished_sweep):
    spec, outcome, killed, _ = finished_sweep
    before = {p.name: p.stat().st_mtime_ns for p in (outcome.results_dir / "trials").glob("*.json")}
    with pytest.raises(InputError, match="--resume"):
        run_sweep(spec)
    again = run_sweep(spec, resume=True)
    assert again.ran == 1 and again.failed == []
    after = {p.name: p.stat().st_mtime_ns for p in (outcome.results_dir / "trials").glob("*.json")}
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {f"{killed.trial_id}.json"}


def test_analyze_writes_a_report_with_baseline_and_figure(finished_sweep):
    from harness.analysis import analyze

    _, outcome, _, _ = finished_sweep
    analyze(outcome.results_dir)
    report = (outcome.results_dir / "report.md").read_text()
    assert "baseline" in report.lower()
    assert (outcome.results_dir / "figures" / "interaction.png").stat().st_size > 1000
    summary = json.loads((outcome.results_dir / "summary.json").read_text())
    assert summary


def test_analyze_wandb_logs_beside_the_trials_and_both_read_back(finished_sweep):
    """The issue's end to end: an offline sweep, then `harness analyze --wandb`; a trial run and the
    analysis run read back with wandb's own reader (tests/wandb_readback.py)."""
    from wandb_readback import offline_runs, run_header, run_summary, table_rows

    from harness.analysis import analyze
    from harness.analysis.wandb_log import log_analysis

    spec, outcome, killed, _ = finished_sweep
    analyze(outcome.results_dir)
    logged = log_analysis(outcome.results_dir)  # the sweep's wandb: block (offline, divcap-test)
    assert logged.ok and logged.mode == "offline", logged.error
    doc = json.loads((outcome.results_dir / "summary.json").read_text())
    trial = next(t for t in planned_trials(spec) if t.kind == "trial" and t.trial_id != killed.trial_id)
    runs = {"trial": offline_runs(outcome.results_dir / "wandb", f"e2e-{trial.trial_id}")[-1],
            "analysis": logged.run_dir}
    for kind, run_dir in runs.items():
        header = run_header(run_dir)
        assert header["run_group"] == "e2e" and header["job_type"] == kind and kind in header["tags"]
        assert run_summary(run_dir)["project"] == "divcap-test"
    read = run_summary(runs["trial"])
    assert {k: read["config"][k] for k in ("n_domains", "lora_rank", "seed", "capacity_family")} == {
        "n_domains": trial.factors["n_domains"], "lora_rank": trial.factors["lora_rank"],
        "seed": trial.factors["seed"], "capacity_family": "lora"}
    assert read["config"]["domains"] == "+".join(trial.domains)
    record = next(r for r in load_records(outcome.results_dir)[0] if r.run.trial_id == trial.trial_id)
    assert read["summary"]["overall"] == pytest.approx(record.eval["synthetic-heldout"].overall)
    assert len([k for k in read["summary"] if k.startswith("track/")]) == 4
    analysis = run_summary(runs["analysis"])["summary"]
    assert table_rows(runs["analysis"], analysis["table/cells"]) == pytest.approx(doc["cells"])
    assert not doc["interaction"]["estimate"]  # one seed per cell: not estimable, and says why
    assert analysis["interaction/reason"] == doc["interaction"]["reason"] != ""
    assert {f"figure/{name}" for name in doc["figures"]} <= set(analysis)
