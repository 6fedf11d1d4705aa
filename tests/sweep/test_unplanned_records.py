"""Records that match no planned trial: `plan` and `sweep --resume` count them and say why.

The case from the issue: a subtask added to the concept domain changes the ids of the cells that
train on concept (rightly: their data changed), here through the grid's subtask sets. Their old
records must not be silently ignored while those cells run again.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from harness.cli import app
from harness.results import RunInfo, TrainInfo, TrialRecord, TrialStatus
from harness.spec.expand import expand_trials
from harness.spec.load import load_sweep
from harness.sweep.driver import unplanned_records
from harness.trial.run import save_record

DESIGN = {"name": "drift", "data": {"per_subtask": 8}, "eval": {"baseline": False},
          "grid": {"subtasks": {"sets": [["product_type_explain"], ["unit_price"]]}, "lora_rank": [2]}}


def _write(tmp_path, name: str, design: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps({**design, "output_dir": str(tmp_path / "results")}))
    return str(path)


def _record_all(sweep_file: str) -> list[str]:
    """A finished record for every trial of the sweep, as a completed run would leave."""
    spec = load_sweep(sweep_file)
    for t in expand_trials(spec):
        record = TrialRecord(run=RunInfo(trial_id=t.trial_id, cell_id=t.cell_id, sweep=t.sweep, factors=t.factors),
                             train=TrainInfo(status=TrialStatus.SUCCESS))
        save_record(record, spec.results_dir / "trials")
    return [t.trial_id for t in expand_trials(spec)]


def _with_extra_concept_subtask() -> dict:
    sets = [["product_type_explain", "attribute_category"], ["unit_price"]]
    return {**DESIGN, "grid": {**DESIGN["grid"], "subtasks": {"sets": sets}}}


def test_adding_a_subtask_orphans_that_domains_records(tmp_path):
    before = _record_all(_write(tmp_path, "before.yaml", DESIGN))
    after = expand_trials(load_sweep(_write(tmp_path, "after.yaml", _with_extra_concept_subtask())))
    assert [t.domains for t in after] == [["concept"], ["reasoning"]]
    assert after[1].trial_id == before[1] and after[0].trial_id != before[0]  # only the concept cell moved
    assert unplanned_records(tmp_path / "results" / "drift", after) == [before[0]]


def test_plan_and_resume_say_how_many_records_match_no_trial_and_why(tmp_path):
    runner = CliRunner()
    original = _write(tmp_path, "before.yaml", DESIGN)
    _record_all(original)
    assert "note:" not in runner.invoke(app, ["plan", original]).output  # every record is planned
    changed = _write(tmp_path, "after.yaml", _with_extra_concept_subtask())
    plan = runner.invoke(app, ["plan", changed])
    assert plan.exit_code == 0, plan.output
    assert "note: 1 record(s) in" in plan.output and "subtask added to a domain" in plan.output
    as_json = runner.invoke(app, ["plan", changed, "--json"])
    assert json.loads(as_json.output)["summary"]["unplanned_records"] == 1
    _record_all(changed)  # the new ids are done too, so the resume below has nothing to run (no Ray)
    resumed = runner.invoke(app, ["sweep", changed, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "already done 2" in resumed.output
    assert "note: 1 record(s) in" in resumed.output and "match no planned trial" in resumed.output
