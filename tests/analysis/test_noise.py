"""Evaluation noise: task SEs (recorded or bounded), the overall's SE, and what the report says."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis import compute_analysis, noise
from harness.analysis.report import budget_sentence, render_report
from harness.analysis.stats import interaction_design

SMOKE = Path(__file__).resolve().parents[1] / "fixtures" / "smoke_results"


def test_bounded_se_by_hand():
    assert noise.bounded_se(0.25, 16) == pytest.approx(math.sqrt(0.25 * 0.75 / 16))  # 0.10825
    # an all-zero task is held 1/(2n) from 0, so it is not called noiseless
    assert noise.bounded_se(0.0, 16) == pytest.approx(math.sqrt((1 / 32) * (31 / 32) / 16))
    assert noise.bounded_se(1.0, 16) == noise.bounded_se(0.0, 16)
    assert math.isnan(noise.bounded_se(0.5, 0))


def test_task_se_prefers_the_record_then_the_bound_then_says_unknown():
    assert noise.task_se(0.5, "accuracy", 100, recorded=0.01) == (0.01, "record")
    assert noise.task_se(0.5, "accuracy", 100) == (pytest.approx(0.05), "bound")
    assert noise.task_se(0.5, "bleu/jp-bleu", 100)[1] == "bound"
    se, source = noise.task_se(0.5, "micro f1", 100)  # pooled, not a row mean
    assert math.isnan(se) and source == "unknown"
    assert noise.task_se(0.5, "micro f1", 100, recorded=0.04) == (0.04, "record")
    # a recorded 0 on a row mean (all rows alike) is not believed: the bound stands in
    assert noise.task_se(0.0, "accuracy", 16, recorded=0.0) == (noise.bounded_se(0.0, 16), "bound")
    assert noise.task_se(0.0, "micro f1", 16, recorded=0.0) == (0.0, "record")


def test_overall_se_weights_tasks_as_the_overall_score_does():
    # overall = mean of 2 tracks; track A has 2 tasks, B one: weights 1/4, 1/4, 1/2
    tasks = pd.DataFrame({"track": ["A", "A", "B"], "task": ["a1", "a2", "b1"],
                          "se": [0.1, 0.2, 0.3], "n": [16, 16, 16]})
    se, guessed = noise.overall_se(tasks)
    assert se == pytest.approx(math.sqrt(0.025 ** 2 + 0.05 ** 2 + 0.15 ** 2))  # 0.16008
    assert guessed == 0
    tasks.loc[2, "se"] = np.nan  # unknown: the worst case 0.5 / sqrt(16) = 0.125
    se, guessed = noise.overall_se(tasks)
    assert se == pytest.approx(math.sqrt(0.025 ** 2 + 0.05 ** 2 + 0.0625 ** 2)) and guessed == 1


def test_coefficient_eval_se_on_a_two_by_two_by_hand():
    # m11 - m10 - m01 + m00, each cell's error shared by its 3 seeds: SE = 2 sigma_eval
    cells = [(d, c) for d in (0, 1) for c in (0, 1)] * 3
    design = interaction_design([d for d, _ in cells], [c for _, c in cells])
    assert noise.coefficient_eval_se(design, cells, [0.01] * 12) == pytest.approx(0.02)


def test_difference_noise_and_within_noise():
    assert noise.difference_noise(0.03, 0.04) == pytest.approx(noise.Z95 * 0.05)
    assert noise.within_noise(0.05, 0.098) and not noise.within_noise(-0.1, 0.098)
    assert not noise.within_noise(0.0, math.nan)


@pytest.fixture()
def smoke_copy(tmp_path):
    root = tmp_path / "smoke"
    shutil.copytree(SMOKE, root)
    return root


def _edit_records(root: Path, edit) -> None:
    for path in (root / "trials").glob("*.json"):
        record = json.loads(path.read_text())
        edit(record)
        path.write_text(json.dumps(record))


def test_recorded_se_and_ci95_are_used_when_present(smoke_copy):
    def add_se(record):
        for result in record["eval"].values():
            for task in result["tasks"].values():
                task["se"] = 0.001
                task["ci95"] = [task["score"] - 0.002, task["score"] + 0.002]
    _edit_records(smoke_copy, add_se)
    a = compute_analysis(smoke_copy)
    assert set(a.task_noise["se_source"]) == {"record"}
    assert (a.task_noise["ci_high"] - a.task_noise["ci_low"]).to_numpy() == pytest.approx(0.004)
    report = render_report(a)
    assert "±0.002" in report and "152 from the records" in report
    assert "exceeds the evaluation noise" in report  # 0.001 per task is tiny next to -0.0018


def test_report_flags_differences_within_evaluation_noise():
    a = compute_analysis(SMOKE)
    report = render_report(a)
    # 16 rows per task: the interaction (-0.0018) and both gains are inside the noise
    assert "is smaller than the evaluation noise" in report
    assert report.count("(gain within it)") == 2
    assert "(within eval noise ±" in report and "(eval noise unknown)" in report
    assert "136 bounded by sqrt(s(1-s)/n), 16 unknown" in report


def test_budget_sentence_says_which_budget_held(smoke_copy):
    text = budget_sentence(compute_analysis(smoke_copy))
    assert "`train.steps` = 80 in every cell" in text
    assert "1.3 at 6 subtasks, 0.42 at 19 subtasks" in text  # 80 x 16 / (160 x subtasks)
    spec = (smoke_copy / "sweep.yaml").read_text()
    spec = spec.replace("  steps: 80\n", "  steps: 80\n  epochs: 3\n")
    (smoke_copy / "sweep.yaml").write_text(spec)
    a = compute_analysis(smoke_copy)
    assert a.budget == {"kind": "epochs", "value": 3}
    assert "`train.epochs` = 3" in budget_sentence(a) and "more compute" in budget_sentence(a)
    (smoke_copy / "sweep.yaml").unlink()
    assert "no sweep.yaml" in budget_sentence(compute_analysis(smoke_copy))


def test_summary_json_carries_noise_budget_and_calibration(smoke_copy):
    from harness.analysis import analyze

    analyze(smoke_copy)
    data = json.loads((smoke_copy / "summary.json").read_text())
    assert data["compute_budget"] == {"kind": "steps", "value": 80}
    assert len(data["evaluation_noise"]["trials"]) == 8
    assert len(data["evaluation_noise"]["tasks"]) == 8 * 19
    assert data["calibration"]["scheme"] == "residuals" and data["calibration"]["n_perm"] == 200
