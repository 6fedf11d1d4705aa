"""W&B per trial: what a run carries (read back from the offline run with wandb's own reader), stable
ids across a resume, and an unreachable server that must not cost the trial its record."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from wandb_readback import history, offline_runs, run_header, run_summary

from harness.results import TrialStatus, read_record
from harness.spec.expand import expand_trials
from harness.spec.load import validate_sweep
from harness.spec.schema import WandbSpec
from harness.tracking import (TrialLogger, shutdown_service, start_trial_run, trial_config,
                              wandb_run_id)
from harness.trial.run import run_trial

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "smoke_results"

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
    """A run whose calls fail, for the logger's own error handling."""

    def __init__(self, **kwargs):
        self.id = kwargs["id"]

    def log(self, data, step=None):
        pass

    def finish(self, exit_code=0):
        pass


def _fixture_record(name: str = "a9bd837500aa"):
    return read_record(FIXTURE / "trials" / f"{name}.json")


def test_a_trial_run_reads_back_with_every_factor_and_score(tmp_path, spec):
    """What a finished trial logs (harness.trial.run: trial_config at start, log_record at the end), read
    back from the offline run with wandb's own reader. Scores come from a real smoke record."""
    record = _fixture_record()
    config = trial_config(spec.factors, sweep="track", kind="trial", base_model=spec.base_model,
                          cell_id=spec.cell_id, trial_id=spec.trial_id)
    logger = start_trial_run(sweep="track", trial_id=spec.trial_id, cell_id=spec.cell_id,
                             name=spec.name, config=config, project="divcap-test", entity=None,
                             mode="offline", root=tmp_path)
    for step in (1, 2, 3):
        logger.log({"train/loss": 1.0 / step}, step=step)
    logger.log_record(record)
    logger.finish()
    (run_dir,) = offline_runs(tmp_path / "wandb", wandb_run_id("track", spec.trial_id))
    header, read = run_header(run_dir), run_summary(run_dir)
    assert header["run_group"] == "track" and header["job_type"] == "trial"
    assert set(header["tags"]) == {"track", "trial"} and header["display_name"] == spec.name
    c = read["config"]
    assert c["domains"] == "concept" and c["n_domains"] == 1 and c["n_subtasks"] == 6
    assert c["subtasks"] == "+".join(spec.subtasks) and c["volume"] == spec.volume
    assert (c["lora_rank"], c["lora_alpha"], c["seed"]) == (2, 4.0, 0)
    assert c["capacity_family"] == "lora" and c["capacity"] == "lora-r2"
    assert c["adapter_params"] == spec.capacity.params and "capacity_budget" in c
    assert (c["cell_id"], c["trial_id"], c["sweep"], c["kind"]) == (spec.cell_id, spec.trial_id,
                                                                    "track", "trial")
    s, heldout = read["summary"], record.eval["synthetic-heldout"]
    assert s["eval_set"] == "synthetic-heldout"
    assert s["overall"] == pytest.approx(heldout.overall) and s["pooled"] == pytest.approx(heldout.pooled)
    assert len(heldout.tracks) == 4 and len(heldout.tasks) == 19
    for track, score in heldout.tracks.items():
        assert s[f"track/{track}"] == pytest.approx(score)
        assert s[f"synthetic-heldout/track/{track}"] == pytest.approx(score)
    for task, result in heldout.tasks.items():
        assert s[f"task/{task}"] == pytest.approx(result.score)
        assert s[f"synthetic-heldout/{task}"] == pytest.approx(result.score)
    assert s["diversity/entropy"] == pytest.approx(record.data.diversity["entropy"])
    assert s["diversity/n_domains"] == 1 and s["status"] == "success"
    assert s["train/final_loss"] == pytest.approx(record.train.final_loss)
    rows = history(run_dir)
    assert [r["_step"] for r in rows if "train/loss" in r] == [1, 2, 3]
    last = rows[-1]  # the scores against the factors (a line panel's x-axes), on the last step
    assert last["_step"] == 3 and last["overall"] == pytest.approx(heldout.overall)
    assert last["factor/lora_rank"] == 16 and last["factor/n_domains"] == 1  # the record's factors


def test_a_failed_trial_logs_its_status_and_no_scores(tmp_path):
    record = _fixture_record()
    record.train.status, record.train.reason, record.eval = TrialStatus.FAILED, "boom", {}
    logger = start_trial_run(sweep="s", trial_id="t", cell_id="c", name="n", config={},
                             project="divcap-test", entity=None, mode="offline", root=tmp_path)
    logger.log_record(record)
    logger.finish(exit_code=1)
    (run_dir,) = offline_runs(tmp_path / "wandb", "s-t")
    s = run_summary(run_dir)["summary"]
    assert s["status"] == "failed" and s["reason"] == "boom" and "overall" not in s
    assert "eval_set" not in s and not history(run_dir)


@pytest.mark.slow
def test_a_real_trial_run_is_grouped_named_tagged_and_carries_losses_and_scores(tmp_path, spec):
    record = run_trial(spec, tmp_path, device="cpu", wandb=WandbSpec(mode="offline", project="p", init_timeout=7))
    assert record.ok
    (run_dir,) = offline_runs(tmp_path / "wandb", wandb_run_id("track", spec.trial_id))
    header, read = run_header(run_dir), run_summary(run_dir)
    assert header["run_group"] == "track" and header["job_type"] == "trial"
    assert header["display_name"] == spec.name == "d1-concept-t6-v8-lora-r2-s0"
    assert set(header["tags"]) == {"track", "trial"} and read["project"] == "p"
    assert read["config"]["lora_rank"] == 2 and read["config"]["trial_id"] == spec.trial_id
    assert read["config"]["cell_id"] == spec.cell_id and read["config"]["domains"] == "concept"
    rows = history(run_dir)
    assert [r["_step"] for r in rows if "train/loss" in r] == [1, 2, 3]
    assert all("eval/loss" in r for r in rows if "train/loss" in r)
    heldout = record.eval["synthetic-heldout"]
    s = read["summary"]
    assert s["overall"] == pytest.approx(heldout.overall)
    assert all(s[f"synthetic-heldout/{task}"] == pytest.approx(r.score)
               for task, r in heldout.tasks.items())
    assert s["status"] == "success" and s["eval/loss"] == pytest.approx(record.train.eval_loss)
    assert s["diversity/n_subtasks"] == 6 and read["exit_code"] == 0


@pytest.mark.slow
def test_harness_trial_uses_the_sweeps_wandb_block(tmp_path):
    """`harness trial` hands run_trial the sweep's whole W&B block, init_timeout included (it was
    dropped when the block travelled as loose wandb_* arguments). wandb's own debug log of the run
    states the timeout it waited with."""
    from typer.testing import CliRunner

    from harness.cli import app

    sweep = {**SMALL, "train": {**SMALL["train"], "steps": 1, "eval_every": None},
             "wandb": {"project": "from-yaml", "mode": "offline", "init_timeout": 7.5}}
    (tmp_path / "s.yaml").write_text(json.dumps(sweep))
    result = CliRunner().invoke(app, ["trial", str(tmp_path / "s.yaml"), "--device", "cpu",
                                      "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    trial = expand_trials(validate_sweep(sweep))[0]
    (run_dir,) = offline_runs(tmp_path / "out" / "wandb", wandb_run_id("track", trial.trial_id))
    assert run_summary(run_dir)["project"] == "from-yaml"
    assert "with 7.5 second timeout" in (run_dir / "logs" / "debug.log").read_text()


@pytest.mark.slow
def test_unreachable_wandb_server_does_not_fail_the_trial(tmp_path, monkeypatch, spec):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    started = time.perf_counter()
    record = run_trial(spec, tmp_path, device="cpu", wandb=WandbSpec(mode="online", init_timeout=4))
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
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))  # "-1" added within one second
    assert len(runs) == 2 and offline_runs(tmp_path / "wandb", "track-0123456789ab") == runs
    long_id = wandb_run_id("x" * 80, "0123456789ab")
    assert long_id == wandb_run_id("x" * 80, "0123456789ab") and len(long_id) == 64
    # a long sweep name is cut, never the suffix: trials and the analysis keep distinct ids
    assert long_id.endswith("-0123456789ab") and wandb_run_id("x" * 80, "analysis").endswith("-analysis")
    assert wandb_run_id("x" * 80 + "a", "analysis") != wandb_run_id("x" * 80 + "b", "analysis")


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
