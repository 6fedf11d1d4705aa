"""Unreadable records never block a sweep, a full disk leaves no debris and a clear message, and
nothing a command writes lands outside <output_dir>/<name>/ (issue 16)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import yaml
from cli_runner import run_cli

from harness import results
from harness.spec.load import load_sweep
from harness.sweep.driver import planned_trials, report_unreadable, write_resolved_spec

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "smoke_results"


@pytest.fixture
def sweep_copy(tmp_path) -> Path:
    target = tmp_path / "results" / "smoke_results"
    shutil.copytree(FIXTURE, target)
    return target


# ---------------------------------------------------------------------------------------------
# Unreadable records: skipped with a terminal line naming the file and the reason

BAD_RECORDS = {
    "not_utf8": (b'{"schema_version": 1, "run": "\xff\xfe"}', "not utf-8"),
    "nested_too_deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "truncated": (None, "truncated"),
    "huge_int": (b'{"schema_version": ' + b"1" * 5000 + b"}", "digit"),
    "empty": (b"", "not a readable json trial record"),
    "a_list": (b"[1, 2]", "schema_version"),
}


def _break_record(trials: Path, case: str) -> Path:
    path = sorted(trials.glob("*.json"))[0]
    content, _ = BAD_RECORDS[case]
    if content is None:
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_analyze_skips_an_unreadable_record_and_says_so(capsys, caplog, sweep_copy, case):
    broken = _break_record(sweep_copy / "trials", case)
    with caplog.at_level(logging.WARNING):
        code, text = run_cli(capsys, "analyze", str(sweep_copy))
    assert code == 0, text
    lines = [r.getMessage() for r in caplog.records if "skipped unreadable record" in r.getMessage()]
    assert len(lines) == 1 and str(broken) in lines[0]
    assert BAD_RECORDS[case][1] in lines[0].lower()
    assert broken.name in (sweep_copy / "report.md").read_text()


def test_a_record_that_is_a_directory_is_skipped(capsys, caplog, sweep_copy):
    (sweep_copy / "trials" / "000000000000.json").mkdir()
    with caplog.at_level(logging.WARNING):
        code, text = run_cli(capsys, "analyze", str(sweep_copy))
    assert code == 0, text
    assert any("000000000000.json" in r.getMessage() for r in caplog.records)


def _smoke_spec(results_dir: Path, *overrides: str):
    return load_sweep(REPO / "sweeps" / "smoke.yaml",
                      [f"name={results_dir.name}", f"output_dir={results_dir.parent}", *overrides])


def test_resume_runs_the_unreadable_records_trial_again_and_says_so(caplog, tmp_path):
    """What `sweep --resume` does before launching: the unreadable record does not count as done,
    its trial is in the work list, and the terminal says both."""
    results_dir = tmp_path / "results" / "smoke"
    spec = _smoke_spec(results_dir)
    for trial in planned_trials(spec):  # every trial finished ...
        results.write_record(results.TrialRecord(
            run=results.RunInfo(trial_id=trial.trial_id, cell_id=trial.cell_id, kind=trial.kind,
                                sweep=spec.name, factors=trial.factors),
            train=results.TrainInfo(status="success")), results_dir / "trials")
    broken = _break_record(results_dir / "trials", "not_utf8")  # ... but one record is unreadable
    records, problems = results.load_records(results_dir)
    done = {r.run.trial_id for r in records if r.ok}
    todo = [t for t in planned_trials(spec) if t.trial_id not in done]
    assert [t.trial_id for t in todo] == [broken.stem]
    with caplog.at_level(logging.WARNING):
        report_unreadable(problems, todo)
    (line,) = [r.getMessage() for r in caplog.records]
    assert str(broken) in line and "not UTF-8" in line and f"trial {broken.stem} runs again" in line


def test_an_unreadable_previous_spec_is_kept_not_fatal(sweep_copy):
    spec = _smoke_spec(sweep_copy, "train.steps=7")
    (sweep_copy / "sweep.yaml").write_bytes(b"\xff\xfe garbage")
    write_resolved_spec(spec, sweep_copy)
    assert (sweep_copy / "sweep.previous.yaml").exists()
    assert yaml.safe_load((sweep_copy / "sweep.yaml").read_text())["train"]["steps"] == 7


# ---------------------------------------------------------------------------------------------
# A full disk: no truncated file, no temp debris, a clear message

def _disk_full(monkeypatch) -> None:
    """fsync fails with ENOSPC, as it does when delayed allocation finds no room for the data."""
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(results.os, "fsync", no_space)


def test_a_full_disk_keeps_the_old_spec_and_leaves_no_debris(monkeypatch, sweep_copy):
    spec = _smoke_spec(sweep_copy, "train.steps=7")
    before = (sweep_copy / "sweep.yaml").read_bytes()
    _disk_full(monkeypatch)
    with pytest.raises(OSError) as err:
        write_resolved_spec(spec, sweep_copy)
    assert err.value.errno == errno.ENOSPC and "sweep" in err.value.filename
    assert (sweep_copy / "sweep.yaml").read_bytes() == before
    assert not (sweep_copy / "sweep.previous.yaml").exists()
    assert not [p for p in sweep_copy.rglob("*") if p.name.endswith(".tmp")]


def test_a_full_disk_during_analyze_exits_2_with_a_clear_message(capsys, monkeypatch, sweep_copy):
    table = (sweep_copy / "scores.parquet").read_bytes()
    _disk_full(monkeypatch)
    code, text = run_cli(capsys, "analyze", str(sweep_copy))
    assert code == 2 and "Traceback" not in text
    assert "no space left on the device writing" in text and str(sweep_copy) in text
    assert "free some space" in text
    assert (sweep_copy / "scores.parquet").read_bytes() == table
    assert not [p for p in sweep_copy.rglob("*") if p.name.endswith(".tmp")]


def test_scores_table_temp_names_are_unique(sweep_copy):
    names = set()
    real_replace = os.replace

    def spy(src, dst):
        names.add(Path(src).name)
        real_replace(src, dst)

    try:
        results.os.replace = spy
        results.write_scores_table(sweep_copy)
        results.write_scores_table(sweep_copy)
    finally:
        results.os.replace = real_replace
    assert len(names) == 2 and all(n.startswith(".scores.parquet.") for n in names)


# ---------------------------------------------------------------------------------------------
# Nothing a command writes lands outside <output_dir>/<name>/

def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def test_nothing_any_command_writes_lands_outside_the_results_folder(capsys, monkeypatch, tmp_path):
    """plan, data show (with and without a results folder), score and analyze, run from a scratch
    working directory: every new path is under output_dir/name, and the repository gains nothing."""
    work = tmp_path / "work"
    work.mkdir()
    raw = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    raw.update(name="contained", output_dir="out")
    raw["data"] = {**raw["data"], "per_subtask": 8, "embedding_diversity_sample": 0}
    raw["eval"] = {**raw["eval"], "per_subtask": 2}
    (work / "sweep.yaml").write_text(yaml.safe_dump(raw))
    bench = work / "bench.json"
    bench.write_text(json.dumps([{"input_field": "Q\n0. a\n1. b\nAnswer: ", "output_field": 1,
                                  "task_type": "multiple-choice", "metric": "accuracy"}]))
    (work / "responses.jsonl").write_text('{"response": "1"}\n')
    shutil.copytree(FIXTURE, work / "out" / "contained")
    repo_before, work_before = _tree(REPO), _tree(work)
    monkeypatch.chdir(work)
    for args in (["plan", "sweep.yaml"], ["data", "show", "sweep.yaml"], ["score", "bench.json", "responses.jsonl"],
                 ["analyze", "out/contained"]):
        code, text = run_cli(capsys, *args)
        assert code == 0, (args, text)
    shutil.rmtree(work / "out" / "contained" / "mixtures", ignore_errors=True)
    new = _tree(work) - work_before
    assert new and all(p.parts[:2] == ("out", "contained") for p in new), sorted(new)
    assert {p for p in _tree(REPO) - repo_before if "__pycache__" not in p.parts} == set()


def test_data_show_without_a_results_folder_writes_nothing(capsys, monkeypatch, tmp_path):
    raw = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    raw["data"] = {**raw["data"], "per_subtask": 8, "embedding_diversity_sample": 0}
    raw["eval"] = {**raw["eval"], "per_subtask": 2}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(capsys, "data", "show", "sweep.yaml")
    assert code == 0, text
    assert _tree(tmp_path) == {Path("sweep.yaml")}


@pytest.mark.slow
def test_trial_on_a_full_disk_exits_2_and_writes_only_inside_the_results_folder(capsys, monkeypatch, tmp_path):
    """`harness trial` (builtin:tiny, 2 steps) when no write can complete: one clear message, exit 2,
    no temp debris, and what it did write (W&B's offline files) is under output_dir/name."""
    monkeypatch.chdir(tmp_path)
    _disk_full(monkeypatch)
    code, text = run_cli(capsys, "trial", str(REPO / "sweeps" / "smoke.yaml"), "--index", "1",
                         "--set", "train.steps=2", "--set", "eval.per_subtask=1", "--set", "data.per_subtask=8",
                         "--set", "data.embedding_diversity_sample=0", "--set", "grid.domains={sets: [[concept]]}")
    assert code == 2 and "Traceback" not in text and "no space left on the device writing" in text
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert all(p.parts[:2] == ("results", "smoke") for p in _tree(tmp_path)
               if p != Path("results")), sorted(_tree(tmp_path))
