"""analyze(): report.md, summary.json and figures are written and say what they must."""

import json

import pytest

from harness.analysis import analyze
from harness.errors import InputError
from harness.results import TrialStatus
from synth_results import make_baseline, make_record, make_results, write_trials

def _reject(constant):
    raise AssertionError(f"summary.json holds {constant}, which is not JSON")


FIGURES = {"interaction.png", "heatmap.png", "tracks.png", "training_curves.png"}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = make_results(tmp_path_factory.mktemp("report"), failed=2)
    return root, analyze(root)


def test_report_summary_and_figures_exist(analysed):
    root, summary = analysed
    assert summary.report_path == root / "report.md" and summary.report_path.is_file()
    assert {p.name for p in summary.figures} == FIGURES
    assert all((root / "figures" / name).stat().st_size > 1000 for name in FIGURES)
    assert (summary.n_trials, summary.n_successful, summary.n_failed) == (38, 36, 2)


def test_report_reads_on_its_own(analysed):
    root, summary = analysed
    text = summary.report_path.read_text()
    for heading in ("## What was run", "## Base model vs trained", "## Interaction",
                    "## Marginal gain", "## Capability ablation", "## Task ablation",
                    "## LoRA rank", "## Per-track breakdown", "## Per-task breakdown",
                    "## Training curves", "## Failed trials"):
        assert heading in text, heading
    assert "Sweep `synthetic`" in text and "Cells: 12" in text
    assert "training beats the base model" in text
    assert "The CI excludes zero" in text
    for name in FIGURES:
        assert f"](figures/{name})" in text


def test_failed_trials_are_listed_with_factors_and_reason(analysed):
    root, summary = analysed
    text = summary.report_path.read_text()
    failed = [r for r in json.loads(summary.summary_path.read_text())["failed"]]
    assert len(failed) == 2
    for row in failed:
        assert f"`{row['trial_id']}`" in text
    assert "lora_rank=8" in text and "CUDA out of memory \\| micro_batch 1" in text


def test_summary_json_is_machine_readable(analysed):
    _, summary = analysed
    data = json.loads(summary.summary_path.read_text(), parse_constant=_reject)
    assert data["counts"] == {"trials": 38, "successful": 36, "failed": 2, "baseline": 1,
                              "cells": 12}
    assert data["interaction"]["ci_low"] <= 0.03 <= data["interaction"]["ci_high"]
    assert len(data["cells"]) == 12 and len(data["marginal_gains"]) == 9
    assert set(data["track_interactions"]) == {"1", "2", "3", "4"}


def test_failed_only_writes_a_report_with_warnings(tmp_path):
    write_trials(tmp_path, [make_record(2, 4, 0, None, status=TrialStatus.FAILED,
                                        reason="NaN loss at step 10"), make_baseline(0.2)])
    summary = analyze(tmp_path)
    text = summary.report_path.read_text()
    assert "## Warnings" in text and "no successful trials" in text
    assert "NaN loss at step 10" in text and "could not be estimated" in text


def test_no_records_raises(tmp_path):
    with pytest.raises(InputError):
        analyze(tmp_path)
    assert not (tmp_path / "report.md").exists()


def test_one_seed_per_cell_says_no_ci(tmp_path):
    summary = analyze(make_results(tmp_path, seeds=(0,)))
    text = summary.report_path.read_text()
    assert "one seed per cell" in text and "(n=1, no CI)" in text


def test_compare_two_sweeps_side_by_side(tmp_path):
    a = make_results(tmp_path / "a", sweep="wide", ranks=(2, 4, 8), rng_seed=1)
    b = make_results(tmp_path / "b", sweep="narrow", ranks=(4, 8, 16), interaction=0.0,
                     rng_seed=2)
    summary = analyze(a, compare=b)
    text = summary.report_path.read_text()
    assert summary.compare_sweep == "narrow" and "## Comparison with `narrow`" in text
    assert "| A: wide | B: narrow |" in text and "8 shared cells" in text
    rows = json.loads(summary.summary_path.read_text())["compare"]["cells"]
    shared = [r for r in rows if r["diff"] is not None]
    assert len(shared) == 8 and len(rows) == 16
    row = next(r for r in shared if r["n_domains"] == 4 and r["lora_rank"] == 8)
    assert row["diff"] == pytest.approx(row["mean_a"] - row["mean_b"])


def test_the_per_task_table_shows_the_format_floor_from_the_baseline(tmp_path):
    from synth_results import EVAL_SET

    root = make_results(tmp_path, n_domains=(1, 4), ranks=(2, 4), seeds=(0, 1), baseline=None)
    floor = {"concept_task1": 0.123, "concept_task2": 0.25}
    write_trials(root, [make_baseline(0.2).model_copy(update={"meta": {"format_floor": {EVAL_SET: floor}}})])
    analyze(root)
    table = (root / "report.md").read_text().split("## Per-task breakdown")[1]
    assert "| format floor |" in table
    assert "| concept_task1 |" in table and "| 0.123 |" in table
