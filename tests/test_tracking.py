"""W&B per trial: what a run carries, stable ids across a resume, and an unreachable server that
must not cost the trial its record."""

from __future__ import annotations

import json
import time

import pytest

from harness.config import expand_trials, validate_sweep
from harness.results import read_record
from harness.tracking import TrialLogger, shutdown_service, start_trial_run, wandb_run_id
from harness.trial import run_trial

SMALL = {"name": "track", "data": {"per_subtask": 8}, "eval": {"per_subtask": 1, "baseline": False},
         "grid": {"domains": {"each": ["concept"]}, "lora_rank": [2], "seed": [0]},
         "train": {"steps": 3, "micro_batch": 4, "max_seq_len": 128, "log_every": 1, "warmup_steps": 0,
                   "eval_every": 1, "keep_checkpoints": 0}}


@pytest.fixture(scope="module")
def spec():
    return expand_trials(validate_sweep(json.loads(json.dumps(SMALL))))[0]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FakeRun:
    def __init__(self, **kwargs):
        self.init, self.logged, self.summary, self.finished = kwargs, [], {}, None
        self.id = kwargs["id"]

    def log(self, data, step=None):
        self.logged.append((step, dict(data)))

    def finish(self, exit_code=0):
        self.finished = exit_code


def _fake_wandb(monkeypatch, runs: list):
    """The real wandb module with init replaced: every call is captured, nothing is written."""
    import wandb

    def init(**kwargs):
        runs.append(FakeRun(**kwargs))
        return runs[-1]

    monkeypatch.setattr(wandb, "init", init)


@pytest.mark.slow
def test_a_trial_run_is_grouped_named_tagged_and_carries_losses_and_scores(tmp_path, monkeypatch, spec):
    runs: list[FakeRun] = []
    _fake_wandb(monkeypatch, runs)
    record = run_trial(spec, tmp_path, device="cpu", wandb_mode="offline", wandb_project="p",
                       wandb_init_timeout=7)
    assert record.ok and len(runs) == 1
    run = runs[0]
    assert run.init["id"] == wandb_run_id("track", spec.trial_id) and run.init["resume"] == "allow"
    assert run.init["group"] == spec.cell_id and run.init["name"] == spec.name == "d1-concept-t6-v8-lora-r2-s0"
    assert run.init["tags"] == ["track"] and run.init["project"] == "p"
    assert run.init["settings"].init_timeout == 7
    assert run.init["config"]["lora_rank"] == 2 and run.init["config"]["trial_id"] == spec.trial_id
    steps = [step for step, data in run.logged if "train/loss" in data]
    assert steps == [1, 2, 3]
    assert all("eval/loss" in data for _, data in run.logged)
    heldout = record.eval["synthetic-heldout"]
    assert run.summary["synthetic-heldout/overall"] == heldout.overall
    assert all(run.summary[f"synthetic-heldout/{task}"] == s.score for task, s in heldout.tasks.items())
    assert run.summary["status"] == "success" and run.summary["eval/loss"] == record.train.eval_loss
    assert run.finished == 0


@pytest.mark.slow
def test_unreachable_wandb_server_does_not_fail_the_trial(tmp_path, monkeypatch, spec):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    started = time.perf_counter()
    record = run_trial(spec, tmp_path, device="cpu", wandb_mode="online", wandb_init_timeout=4)
    assert record.ok, record.train.reason
    assert read_record(tmp_path / "trials" / f"{spec.trial_id}.json").ok
    assert time.perf_counter() - started < 90  # the timeout bounds the wait


def test_run_ids_are_stable_across_a_resume(tmp_path):
    kwargs = dict(sweep="track", cell_id="c1", name="d1-r2-s0", config={"lora_rank": 2},
                  project="divcap-test", entity=None, mode="offline", root=tmp_path)
    first = start_trial_run(trial_id="0123456789ab", **kwargs)
    first_id = first._run.id
    first.finish()
    again = start_trial_run(trial_id="0123456789ab", **kwargs)  # the resumed sweep's run
    assert again._run.id == first_id == wandb_run_id("track", "0123456789ab") == "track-0123456789ab"
    again.finish()
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and {r.name.rsplit("-", 1)[-1] for r in runs} == {"0123456789ab"}
    assert wandb_run_id("x" * 80, "0123456789ab") == wandb_run_id("x" * 80, "0123456789ab")
    assert len(wandb_run_id("x" * 80, "0123456789ab")) <= 64


def test_disabled_mode_makes_no_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = start_trial_run(sweep="s", trial_id="t", cell_id="c", name="n", config={}, project="p",
                             entity=None, mode="offline", root=tmp_path)
    assert not logger.active and not (tmp_path / "wandb").exists()


def test_a_failing_run_disables_logging_instead_of_raising():
    class Broken(FakeRun):
        def log(self, data, step=None):
            raise ConnectionError("server went away")

    logger = TrialLogger(Broken(id="x"))
    logger.log({"train/loss": 1.0}, step=1)
    assert not logger.active
    logger.summary({"a": 1})
    logger.finish()


def test_a_run_after_the_service_shutdown_starts_a_new_service(tmp_path):
    """What a Ray worker does after each trial (shutdown_service), and a later trial in the same process
    (or `harness trial` in a loop) still logs."""
    kwargs = dict(sweep="svc", cell_id="c1", name="n", config={}, project="divcap-test", entity=None,
                  mode="offline", root=tmp_path)
    for trial_id in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):
        logger = start_trial_run(trial_id=trial_id, **kwargs)
        assert logger.active
        logger.log({"train/loss": 1.0}, step=1)
        logger.finish()
        shutdown_service()
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert [r.name.rsplit("-", 1)[-1] for r in runs] == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    assert all(next(r.glob("*.wandb")).stat().st_size > 0 for r in runs)
    shutdown_service()  # twice: nothing left to stop, no error
