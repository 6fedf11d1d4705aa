"""One trial without Ray, on builtin:tiny: records, failure records, the OOM retry, adapters kept,
the held-out loss, and records that a failed or interrupted run must not write."""

from __future__ import annotations

import json

import pytest
import torch

from harness.results import RunInfo, TrainInfo, TrialRecord, TrialStatus, read_record
from harness.spec.expand import baseline_trial, expand_trials
from harness.spec.load import validate_sweep
from harness.spec.schema import TrainSpec, WandbSpec
from harness.trial.run import run_trial, save_record

NO_WANDB = WandbSpec(mode="disabled")

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as a sweep gives each trial (resources.cpu: 1): on a busy 2-core machine
    two threads run the tiny model several times slower, not faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

TINY = {
    "name": "unit",
    "data": {"per_subtask": 24},
    "eval": {"per_subtask": 2, "baseline": False},
    "grid": {"domains": {"each": ["concept"]}, "lora_rank": [4], "seed": [0]},
    "train": {"steps": 4, "micro_batch": 8, "log_every": 2},
    "wandb": {"mode": "disabled"},
}


def _spec(**train):
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    return expand_trials(validate_sweep(raw))[0]


def test_trial_writes_a_complete_record(tmp_path):
    spec = _spec()
    record = run_trial(spec, tmp_path, device="cpu", wandb=NO_WANDB)
    assert record.ok, record.train.reason
    path = tmp_path / "trials" / f"{spec.trial_id}.json"
    again = read_record(path)
    assert again.run.trial_id == spec.trial_id and again.run.cell_id == spec.cell_id
    assert again.run.factors["domains"] == ["concept"] and again.run.factors["lora_rank"] == 4
    assert again.train.steps == 4 and again.train.trainable_params > 0
    assert [s for s, _ in again.train.loss_curve] == [2, 4]
    assert sum(again.data.examples.values()) == 24 * len(spec.subtasks)
    assert again.data.fingerprint and again.data.diversity["n_domains"] == 1
    heldout = again.eval["synthetic-heldout"]
    assert len({t.track for t in heldout.tasks.values()}) == 4  # evaluation spans all four domains
    assert 0.0 <= heldout.overall <= 1.0
    assert again.meta["base_model"] == "builtin:tiny" and again.meta["versions"]["torch"]


def test_baseline_evaluates_without_training(tmp_path):
    spec = baseline_trial(validate_sweep(TINY))
    record = run_trial(spec, tmp_path, device="cpu", wandb=NO_WANDB)
    assert record.ok and record.train.steps == 0
    assert (tmp_path / "baseline" / f"{spec.trial_id}.json").exists()


def test_nan_loss_is_a_failed_record_with_the_reason(tmp_path):
    spec = _spec(lr=1e12, warmup_steps=0)
    record = run_trial(spec, tmp_path, device="cpu", wandb=NO_WANDB)
    assert record.train.status is TrialStatus.FAILED
    assert "NonFiniteLossError" in record.train.reason
    assert read_record(tmp_path / "trials" / f"{spec.trial_id}.json").train.status is TrialStatus.FAILED


def test_exception_is_recorded_and_does_not_raise(tmp_path, monkeypatch):
    spec = _spec()
    monkeypatch.setenv("HARNESS_FAULTS", f"raise:{spec.trial_id}")
    record = run_trial(spec, tmp_path, device="cpu", wandb=NO_WANDB)
    assert record.train.status is TrialStatus.FAILED and "injected fault" in record.train.reason


def test_out_of_memory_retries_with_half_the_micro_batch(tmp_path, monkeypatch):
    spec = _spec()
    monkeypatch.setenv("HARNESS_FAULTS", f"oom:{spec.trial_id}")
    record = run_trial(spec, tmp_path, device="cpu", wandb=NO_WANDB)
    assert record.ok, record.train.reason
    assert record.train.retries == ["oom: micro_batch 8 -> 4, grad_accum 1 -> 2"]


def test_an_out_of_memory_mid_training_restarts_from_the_initial_adapter(tmp_path, monkeypatch):
    """The retry trains the whole run again from the adapter's initial weights (not from where the
    failed attempt left them), so it learns what a run with the smaller micro-batch from the start does."""
    from safetensors.torch import load_file

    import harness.training.loop

    spec = _spec(steps=6, log_every=1)
    clean = run_trial(_spec(steps=6, log_every=1, micro_batch=4, grad_accum=2), tmp_path / "clean",
                      device="cpu", wandb=NO_WANDB)
    real_step, calls = harness.training.loop._optimizer_step, []

    def out_of_memory_at_step_4(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # the first attempt has made 3 optimiser steps by now
            raise torch.OutOfMemoryError("a long batch at step 4")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(harness.training.loop, "_optimizer_step", out_of_memory_at_step_4)
    retried = run_trial(spec, tmp_path / "retried", device="cpu", wandb=NO_WANDB)
    assert clean.ok and retried.ok, (clean.train.reason, retried.train.reason)
    assert retried.train.retries == ["oom: micro_batch 8 -> 4, grad_accum 1 -> 2"]
    assert [s for s, _ in retried.train.loss_curve] == list(range(1, 7))
    assert [l for _, l in retried.train.loss_curve] == pytest.approx([l for _, l in clean.train.loss_curve],
                                                                     rel=1e-4)
    for path in sorted((tmp_path / "clean" / clean.meta["adapter"]).rglob("*.safetensors")):
        a = load_file(str(path))
        b = load_file(str(tmp_path / "retried" / retried.meta["adapter"] / path.relative_to(
            tmp_path / "clean" / clean.meta["adapter"])))
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)


SMALL = {**TINY, "data": {"per_subtask": 8}, "eval": {"per_subtask": 1, "baseline": False},
         "train": {"steps": 3, "micro_batch": 4, "max_seq_len": 128, "log_every": 1, "warmup_steps": 0}}


def _small(**train):
    raw = json.loads(json.dumps(SMALL))
    raw["train"].update(train)
    return expand_trials(validate_sweep(raw))[0]


@pytest.fixture
def model_refs(monkeypatch):
    """Weak references to every model a trial trains, to check that none outlives its trial."""
    import weakref

    import harness.capacity.adapters

    refs, attach = [], harness.capacity.adapters.attach

    def tracked(*args, **kwargs):
        adapted = attach(*args, **kwargs)
        refs.append(weakref.ref(adapted.model))
        return adapted

    monkeypatch.setattr(harness.capacity.adapters, "attach", tracked)
    return refs


def _all_released(refs) -> bool:
    import gc

    gc.collect()
    return bool(refs) and all(ref() is None for ref in refs)


def test_adapters_held_out_loss_and_reports(tmp_path, model_refs):
    spec = _small(keep_checkpoints=2, checkpoint_every=1, eval_every=1)
    reports = []
    record = run_trial(spec, tmp_path, device="cpu", wandb=NO_WANDB, reporter=reports.append,
                       meta={"ray_node_id": "n1"})
    assert record.ok, record.train.reason
    adapters = tmp_path / "adapters" / spec.trial_id
    assert record.meta["adapter"] == f"adapters/{spec.trial_id}" and record.meta["ray_node_id"] == "n1"
    # the final adapter plus the latest intermediate one: keep_checkpoints 2; LoRA weights only
    assert record.meta["adapter_checkpoints"] == [f"adapters/{spec.trial_id}/step-000002"]
    assert sorted(p.name for p in adapters.iterdir() if p.is_dir()) == ["step-000002"]
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert config["r"] == spec.lora_rank and (adapters / "adapter_model.safetensors").stat().st_size < 2e6
    assert [r["step"] for r in reports] == [1, 2, 3] and all("eval_loss" in r for r in reports)
    curve = record.train.model_dump()["eval_loss_curve"]
    assert [s for s, _ in curve] == [1, 2, 3] and record.train.eval_loss == curve[-1][1]
    assert _all_released(model_refs), "the model outlived its trial: the next trial on this worker pays"

    # adapter_bytes is the final adapter alone, as with no intermediate ones kept
    final_files = sum(f.stat().st_size for f in adapters.iterdir() if f.is_file())
    assert record.train.adapter_bytes == final_files
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == [spec.trial_id]  # no staging left

    none = _small(keep_checkpoints=0)
    assert run_trial(none, tmp_path / "b", device="cpu", wandb=NO_WANDB).ok
    assert not (tmp_path / "b" / "adapters" / none.trial_id).exists()


def test_a_failed_rerun_keeps_the_adapter_of_the_kept_success(tmp_path, monkeypatch):
    spec = _small()
    first = run_trial(spec, tmp_path, device="cpu", wandb=NO_WANDB)
    adapter = tmp_path / first.meta["adapter"] / "adapter_model.safetensors"
    before = adapter.read_bytes()
    monkeypatch.setenv("HARNESS_FAULTS", f"raise:{spec.trial_id}")
    again = run_trial(spec, tmp_path, device="cpu", wandb=NO_WANDB)
    assert first.ok and not again.ok
    kept = read_record(tmp_path / "trials" / f"{spec.trial_id}.json")
    assert kept.ok and (tmp_path / kept.meta["adapter"] / "adapter_model.safetensors").read_bytes() == before


def test_out_of_memory_at_micro_batch_1_retries_with_activation_checkpointing(tmp_path, monkeypatch):
    from harness.trial.oom import smaller_split

    spec = _small(micro_batch=1, grad_accum=4)
    monkeypatch.setenv("HARNESS_FAULTS", f"oom:{spec.trial_id}")
    record = run_trial(spec, tmp_path, device="cpu", wandb=NO_WANDB)
    assert record.ok, record.train.reason
    assert record.train.retries == ["oom: activation checkpointing on"]
    assert record.train.layout == {"micro_batch": 1, "grad_accum": 4, "grad_checkpointing": True,
                                   "packing": False, "attention": "auto"}
    # the split shrinks with the same examples per step, odd sizes included; then nothing is left
    assert smaller_split(TrainSpec(micro_batch=5, grad_accum=2))[1] == "micro_batch 5 -> 2, grad_accum 2 -> 5"
    for micro, accum in ((3, 1), (5, 2), (7, 1), (8, 1), (6, 3)):
        smaller, _ = smaller_split(TrainSpec(micro_batch=micro, grad_accum=accum))
        assert smaller.micro_batch <= micro // 2 and smaller.micro_batch * smaller.grad_accum == micro * accum
    assert smaller_split(TrainSpec(micro_batch=1, grad_checkpointing=True)) is None
    assert smaller_split(TrainSpec(micro_batch=1, grad_checkpointing=False)) is None


def test_nan_fault_is_a_real_nan_loss(tmp_path, monkeypatch, model_refs):
    spec = _small()
    monkeypatch.setenv("HARNESS_FAULTS", f"nan:{spec.trial_id}")
    record = run_trial(spec, tmp_path, device="cpu", wandb=NO_WANDB)
    assert record.train.status is TrialStatus.FAILED
    assert record.train.reason.startswith("NonFiniteLossError: loss became nan at step 1")
    assert _all_released(model_refs), "a failed trial's traceback kept its model alive"


@pytest.mark.gpu
def test_gpu_memory_returns_to_baseline_between_trials(tmp_path):
    import torch

    torch.cuda.init()
    baseline = torch.cuda.memory_allocated()
    raw = json.loads(json.dumps(SMALL))
    raw["grid"]["seed"] = [0, 1]
    for spec in expand_trials(validate_sweep(raw)):  # two trials in one process, as on a reused worker
        assert run_trial(spec, tmp_path, device="cuda", wandb=NO_WANDB).ok
        assert torch.cuda.memory_allocated() - baseline < 4 * 2**20  # bytes: nothing of the model left


class _Stopped(BaseException):
    """What a scheduler's stop or a lost driver looks like from inside the trial."""


def test_interrupted_trial_writes_no_record(tmp_path):
    spec = _small()

    def reporter(_metrics):
        raise _Stopped()

    with pytest.raises(_Stopped):
        run_trial(spec, tmp_path, device="cpu", wandb=NO_WANDB, reporter=reporter)
    assert not (tmp_path / "trials" / f"{spec.trial_id}.json").exists()


def test_a_failed_rewrite_never_hides_a_success(tmp_path):
    def record(status):
        return TrialRecord(run=RunInfo(trial_id="abc", cell_id="c", sweep="s", factors={}),
                           train=TrainInfo(status=status, reason=None if status == "success" else "late"))

    path = save_record(record(TrialStatus.SUCCESS), tmp_path)
    save_record(record(TrialStatus.FAILED), tmp_path)  # e.g. a stale worker of a killed driver
    assert read_record(path).ok
    save_record(record(TrialStatus.FAILED), tmp_path / "other")
    save_record(record(TrialStatus.SUCCESS), tmp_path / "other")  # a success replaces a failure
    assert read_record(tmp_path / "other" / "abc.json").ok
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["abc.json"]  # no temp files left


@pytest.mark.parametrize("family, packing, micro_batch", [
    ("lora", False, 5), ("multi_lora", False, 5), ("lora", True, 5),
    ("multi_lora", False, 1),  # every micro-batch leaves one rank a weight-0 stand-in
])
def test_a_two_rank_trial_learns_what_a_one_process_trial_learns(tmp_path, family, packing, micro_batch):
    """resources.ranks 2 on the CPU (gloo): the same adapter and the same totals as one process
    (packed: each rank packs its own slice into rows)."""
    from safetensors.torch import load_file

    raw = json.loads(json.dumps(SMALL))
    raw["train"].update(steps=3, micro_batch=micro_batch, grad_accum=2, log_every=1, packing=packing)
    raw["grid"].update(capacity=[{"family": family}], domains={"sets": [["concept", "reasoning"]]})
    spec = expand_trials(validate_sweep(raw))[0]
    one = run_trial(spec, tmp_path / "one", device="cpu", wandb=NO_WANDB)
    two = run_trial(spec, tmp_path / "two", device="cpu", wandb=NO_WANDB, ranks=2)
    assert one.ok and two.ok, (one.train.reason, two.train.reason)
    assert two.meta["ranks"] == 2 and "ranks" not in one.meta
    assert two.train.tokens == one.train.tokens
    for (s1, l1), (s2, l2) in zip(one.train.loss_curve, two.train.loss_curve):
        assert s1 == s2 and l2 == pytest.approx(l1, rel=1e-4)
    files = sorted((tmp_path / "one" / one.meta["adapter"]).rglob("*.safetensors"))
    assert files
    for path in files:
        a, b = load_file(str(path)), load_file(str(tmp_path / "two" / path.relative_to(tmp_path / "one")))
        for key in a:
            # Adam divides by sqrt(v): a tiny gradient difference shows as ~1e-5 in a weight
            torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)
