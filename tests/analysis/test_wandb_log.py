"""The analysis as a W&B run, read back from the offline run files with wandb's own reader: what the
run holds, that a re-run replaces it, a capacity-family comparison, and real W&B failures that must
leave report.md and summary.json written."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from synth_results import make_family_results
from wandb_readback import offline_runs, run_header, run_summary, table_rows

from harness.analysis import analyze
from harness.analysis.wandb_log import analysis_tables, log_analysis

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "smoke_results"
RUN_ID = "smoke_results-analysis"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """The smoke fixture (real records) analysed and logged offline once for the module."""
    results = tmp_path_factory.mktemp("wb") / "smoke_results"
    shutil.copytree(FIXTURE, results)
    analyze(results)
    outcome = log_analysis(results, mode="offline")
    assert outcome.ok, outcome.error
    doc = json.loads((results / "summary.json").read_text())
    return results, outcome, doc, run_summary(outcome.run_dir)


def test_the_analysis_run_sits_in_the_sweeps_group_tagged_as_the_analysis(logged):
    results, outcome, doc, read = logged
    header = run_header(outcome.run_dir)
    assert header["run_id"] == outcome.run_id == RUN_ID
    assert header["run_group"] == "smoke_results" and header["job_type"] == "analysis"
    assert set(header["tags"]) == {"smoke_results", "analysis"}
    assert read["state"] == "finished" and read["project"] == "divcap"  # sweep.yaml's project
    assert read["config"]["sweep"] == "smoke_results" and read["config"]["kind"] == "analysis"
    assert read["config"]["eval_set"] == doc["eval_set"] == "synthetic-heldout"
    assert offline_runs(results / "wandb", RUN_ID) == [outcome.run_dir]


def test_headline_numbers_are_summary_scalars(logged):
    _, _, doc, read = logged
    s = read["summary"]
    for key in ("estimate", "ci_low", "ci_high", "p_value", "n_obs"):
        assert s[f"interaction/{key}"] == pytest.approx(doc["interaction"][key])
    assert len(doc["track_interactions"]) == 4
    for track, fit in doc["track_interactions"].items():
        assert s[f"interaction/track/{track}/ci_low"] == pytest.approx(fit["ci_low"])
    assert s["baseline_score"] == pytest.approx(doc["baseline_score"])
    assert s["counts/trials"] == 8
    for key, value in doc["calibration"].items():  # the permutation check's false-positive rate
        assert s[f"calibration/{key}"] == pytest.approx(value)
    noise = table_rows(logged[1].run_dir, s["table/evaluation_noise/trials"])
    assert noise == pytest.approx(doc["evaluation_noise"]["trials"])


def test_tables_hold_the_cells_interactions_and_gains(logged):
    _, outcome, doc, read = logged
    s = read["summary"]
    cells = table_rows(outcome.run_dir, s["table/cells"])
    assert cells == pytest.approx(doc["cells"]) and len(cells) == 4
    assert table_rows(outcome.run_dir, s["table/track_cells"]) == pytest.approx(doc["track_cells"])
    assert table_rows(outcome.run_dir, s["table/marginal_gains"]) == pytest.approx(doc["marginal_gains"])
    fits = {r["scope"]: r for r in table_rows(outcome.run_dir, s["table/interactions"])}
    assert set(fits) == {"overall", *doc["track_interactions"]}
    assert fits["overall"]["estimate"] == pytest.approx(doc["interaction"]["estimate"])
    assert fits["overall"]["ci_high"] == pytest.approx(doc["interaction"]["ci_high"])
    assert fits["overall"]["excludes_zero"] is False  # this fixture's CI covers zero
    trials = table_rows(outcome.run_dir, s["table/trials"])
    assert len(trials) == 8 and {"n_domains", "lora_rank", "seed", "score"} <= set(trials[0])
    warnings = table_rows(outcome.run_dir, s["table/warnings"])
    assert [w["warning"] for w in warnings] == doc["warnings"]
    assert "table/failed" not in s  # no failed trials: no empty table


def test_every_report_figure_is_an_image_with_the_same_bytes(logged):
    results, outcome, doc, read = logged
    assert set(doc["figures"]) == {"interaction", "heatmap", "tracks", "training_curves"}
    for name, relative in doc["figures"].items():
        entry = read["summary"][f"figure/{name}"]
        assert entry["_type"] == "image-file"
        logged_png = (outcome.run_dir / "files" / entry["path"]).read_bytes()
        assert hashlib.sha256(logged_png).digest() == hashlib.sha256(
            (results / relative).read_bytes()).digest()
    line = table_rows(outcome.run_dir, read["summary"]["chart/score_by_capacity_table"])
    assert {(r["n_domains"], r["lora_rank"]) for r in line} == {("1", 4), ("1", 16), ("4", 4), ("4", 16)}


def test_a_rerun_replaces_the_run_instead_of_adding_one(logged, tmp_path):
    results = tmp_path / "smoke_results"
    shutil.copytree(logged[0], results)
    first = offline_runs(results / "wandb", RUN_ID)
    assert len(first) == 1
    analyze(results, diversity="n_subtasks")
    again = log_analysis(results, mode="offline")
    assert again.ok, again.error
    runs = offline_runs(results / "wandb", RUN_ID)
    assert runs == [again.run_dir] and runs != first  # one local copy: the new one
    read = run_summary(again.run_dir)
    assert read["config"]["diversity"] == "n_subtasks" and read["run_id"] == RUN_ID


def test_a_capacity_family_comparison_is_logged_per_family(tmp_path):
    results = make_family_results(tmp_path / "fam", {"lora": 0.03, "dora": 0.0}, seeds=(0, 1))
    analyze(results)
    outcome = log_analysis(results, mode="offline")
    assert outcome.ok, outcome.error
    doc = json.loads((results / "summary.json").read_text())
    read = run_summary(outcome.run_dir)
    s = read["summary"]
    fams = {r["family"]: r for r in table_rows(outcome.run_dir, s["table/family_interactions"])}
    assert set(fams) == {"lora", "dora"}
    for name, fit in doc["family_interactions"]["fits"].items():
        assert fams[name]["estimate"] == pytest.approx(fit["estimate"])
        assert s[f"interaction/family/{name}/ci_low"] == pytest.approx(fit["ci_low"])
    assert s["family/differs"] == doc["family_interactions"]["differs"]
    diffs = table_rows(outcome.run_dir, s["table/family_interactions/differences"])
    assert [d["family"] for d in diffs] == ["dora"]
    assert "figure/families" in s


def test_every_list_of_rows_in_summary_json_becomes_a_table():
    """A section a later analysis adds (e.g. power) is logged without changes here."""
    doc = {"cells": [{"a": 1}], "power": {"rows": [{"seeds": 3, "mde": 0.01}], "alpha": 0.05},
           "interaction": {"estimate": 0.1, "ci_low": 0.0, "ci_high": 0.2, "params": [{"term": "x"}]},
           "failed": [], "warnings": ["w"], "figures": {"x": "figures/x.png"}}
    tables = analysis_tables(doc)
    assert set(tables) == {"cells", "power/rows", "interaction/params", "interactions", "warnings"}
    assert tables["interactions"] == [{"scope": "overall", "estimate": 0.1, "ci_low": 0.0,
                                       "ci_high": 0.2, "excludes_zero": False}]


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("breakage", ["wandb dir is a file", "invalid mode"])
def test_a_wandb_failure_leaves_the_report_and_says_what_failed(tmp_path, breakage):
    results = tmp_path / "smoke_results"
    shutil.copytree(FIXTURE, results)
    args = ["analyze", str(results), "--wandb"]
    if breakage == "wandb dir is a file":
        (results / "wandb").write_text("not a folder")  # W&B cannot create its run folder
    else:
        args += ["--wandb-mode", "bogus"]
    proc = harness(*args)
    assert proc.returncode == 0, proc.stderr
    assert (results / "report.md").stat().st_size > 0
    assert json.loads((results / "summary.json").read_text())["sweep"] == "smoke_results"
    assert "W&B: the analysis was not logged" in proc.stderr
    assert "report.md and summary.json are written" in proc.stderr
    reason = "bogus" if breakage == "invalid mode" else "wandb"
    assert reason in proc.stderr.split("not logged", 1)[1]


def test_the_sweeps_wandb_analysis_setting_logs_the_analysis_without_the_flag(tmp_path):
    results = tmp_path / "smoke_results"
    shutil.copytree(FIXTURE, results)
    spec = yaml.safe_load((results / "sweep.yaml").read_text())
    assert spec["wandb"]["mode"] == "disabled"  # the sweep ran without W&B: the analysis goes offline
    spec["wandb"]["analysis"] = True
    (results / "sweep.yaml").write_text(yaml.safe_dump(spec))
    proc = harness("analyze", str(results))
    assert proc.returncode == 0, proc.stderr
    assert f"W&B: analysis run {RUN_ID} (offline" in proc.stdout
    assert len(offline_runs(results / "wandb", RUN_ID)) == 1
