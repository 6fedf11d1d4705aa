"""Checks before launch: every evaluation file read and validated, every metric it needs runnable here,
before any trial (or Ray) starts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from harness.errors import InputError
from harness.evaluate.metrics import MULTILINGUAL_ENV, metric_problems
from harness.spec.load import validate_sweep
from harness.sweep.driver import run_sweep
from harness.sweep.preflight import check_evaluation, evaluation_metrics

GOOD = {"input_field": "Pick.", "output_field": 1, "task_type": "multiple-choice", "metric": "accuracy"}
MULTILINGUAL = {"input_field": "Describe.", "output_field": "Une écharpe.", "task_type": "generation",
                "metric": "multilingual-sent-transformer"}


def sweep_with_eval(tmp_path, rows) -> dict:
    (tmp_path / "dev.json").write_text(json.dumps(rows))
    return {"name": "pre", "output_dir": str(tmp_path / "out"), "grid": {"domains": {"sets": [["concept"]]}},
            "eval": {"sets": ["builtin:synthetic-heldout", {"path": str(tmp_path / "dev.json")}], "per_subtask": 1}}


def test_evaluation_sets_and_their_metrics_are_read_before_launch(tmp_path):
    eval_sets = check_evaluation(validate_sweep(sweep_with_eval(tmp_path, [GOOD, {**GOOD, "metric": "jp-bleu",
                                                                                   "task_type": "generation",
                                                                                   "output_field": "テスト"}])))
    assert set(eval_sets) == {"synthetic-heldout", "dev"}
    assert {"accuracy", "jp-bleu", "bleu"} <= set(evaluation_metrics(eval_sets))


def test_a_bad_evaluation_row_is_named_by_file_and_row(tmp_path):
    spec = validate_sweep(sweep_with_eval(tmp_path, [GOOD, {**GOOD, "output_field": "two"}]))
    with pytest.raises(InputError, match=r"dev\.json:row 2: "):
        check_evaluation(spec)


def test_the_multilingual_model_setting_is_checked_before_launch(tmp_path, monkeypatch):
    spec = validate_sweep(sweep_with_eval(tmp_path, [GOOD, MULTILINGUAL]))
    monkeypatch.delenv(MULTILINGUAL_ENV, raising=False)
    with pytest.raises(InputError, match=f"(?s)nothing was launched.*'multilingual-sent-transformer'.*{MULTILINGUAL_ENV}"):
        check_evaluation(spec)
    monkeypatch.setenv(MULTILINGUAL_ENV, str(tmp_path / "no-such-model"))
    assert "no model directory" in metric_problems(["multilingual-sent-transformer"])[0]


def test_metric_problems_name_unknown_metrics_and_pass_installed_ones():
    problems = metric_problems(["accuracy", "jp-bleu", "blue"])
    assert len(problems) == 1 and "unknown metric 'blue' (did you mean 'bleu'?)" in problems[0]


def test_sweep_refuses_before_writing_or_starting_anything(tmp_path, monkeypatch):
    monkeypatch.delenv(MULTILINGUAL_ENV, raising=False)
    spec = validate_sweep(sweep_with_eval(tmp_path, [GOOD, MULTILINGUAL]))
    with pytest.raises(InputError, match="cannot be scored on this machine"):
        run_sweep(spec)
    assert not (tmp_path / "out").exists()


def test_plan_exits_2_on_a_bad_evaluation_row(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_with_eval(tmp_path, [GOOD, {**GOOD, "task_type": "ranking"}])))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "plan", str(path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "dev.json:row 2" in proc.stderr, proc.stderr
