"""One trial, no Ray: build data -> load base model -> LoRA fine-tune -> evaluate -> write a record.

    record = run_trial(trial_spec, Path("results/smoke"))

Reads top to bottom as setup -> train -> evaluate -> save. Every failure (an exception, a NaN loss,
out of memory twice) still ends in a record with status `failed` and the reason, written atomically,
so a sweep can go on and the report can say what went wrong. Ray (sweep.py) is a thin adapter on top.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.config import TrialSpec
from harness.results import (DataInfo, EvalResult, RunInfo, TrainInfo, TrialRecord, TrialStatus,
                             write_record)

log = logging.getLogger(__name__)
Reporter = Callable[[dict[str, Any]], None]

PACKAGES = ("torch", "transformers", "peft", "ray", "wandb", "divcap-harness")


def trial_dir(results_dir: Path, spec: TrialSpec) -> Path:
    return Path(results_dir) / ("baseline" if spec.kind == "baseline" else "trials")


def run_trial(spec: TrialSpec, results_dir: Path, *, device: str | None = None,
              reporter: Reporter | None = None, wandb_mode: str = "offline",
              wandb_project: str = "divcap", wandb_entity: str | None = None) -> TrialRecord:
    """Run one trial end to end and write its record; never raises for a failed trial."""
    results_dir = Path(results_dir)
    device = device or select_device()
    logger = _start_logger(spec, results_dir, wandb_mode, wandb_project, wandb_entity)
    started = time.perf_counter()
    try:
        record = _execute(spec, device, logger, reporter)
    except Exception as exc:  # noqa: BLE001 - the record carries the reason
        log.error("trial %s failed: %s", spec.trial_id, exc)
        record = _failed_record(spec, exc)
    record.train.wall_s = record.train.wall_s or time.perf_counter() - started
    record.meta.update(run_meta(device))
    write_record(record, trial_dir(results_dir, spec))
    _finish_logger(logger, record)
    return record


def inject_fault(spec: TrialSpec, stage: str) -> None:
    """Deliberate faults for testing the driver's fault handling, from HARNESS_FAULTS.

    HARNESS_FAULTS="kill:<trial-id prefix>,raise:<prefix>,oom:<prefix>": kill SIGKILLs the worker
    process at the start of training; raise raises; oom raises torch.OutOfMemoryError on the first
    training attempt only (the retry then succeeds). A NaN loss needs no hook: a huge lr makes one.
    """
    faults = os.environ.get("HARNESS_FAULTS", "")
    for item in filter(None, (f.strip() for f in faults.split(","))):
        kind, _, prefix = item.partition(":")
        if not prefix or not spec.trial_id.startswith(prefix) or kind != stage:
            continue
        if kind == "kill":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "raise":
            raise RuntimeError(f"injected fault (HARNESS_FAULTS={faults})")
        if kind == "oom":
            import torch

            raise torch.OutOfMemoryError("injected out-of-memory (HARNESS_FAULTS)")


def _execute(spec: TrialSpec, device: str, logger, reporter: Reporter | None) -> TrialRecord:
    import torch

    from harness.data import build_eval_sets, build_mixture
    from harness.model import load_base_model
    from harness.prompting import resolve_format

    torch.manual_seed(spec.seed)
    eval_sets = build_eval_sets(spec.eval, world_seed=spec.data.world_seed)
    tokenizer, model, info = load_base_model(spec.base_model, device=device, dtype=spec.train.dtype,
                                             trust_remote_code=spec.trust_remote_code)
    fmt = resolve_format(spec.eval.prompt_format, tokenizer)
    data_info, train_info = DataInfo(), TrainInfo(status=TrialStatus.SUCCESS)
    if spec.kind == "trial":
        mixture = build_mixture(spec.subtasks, spec.volume, spec.data, eval_sets,
                                tokenizer_id=info.revision)
        model, result, retries = _train_with_oom_retry(model, tokenizer, mixture.rows, spec, fmt,
                                                       device, logger, reporter)
        data_info = DataInfo(fingerprint=mixture.fingerprint, examples=mixture.stats.examples,
                             tokens=result.tokens_per_subtask, diversity=mixture.stats.diversity(),
                             contaminated_removed=mixture.stats.contaminated_removed,
                             skipped_rows=mixture.stats.skipped_rows)
        train_info = TrainInfo(status=TrialStatus.SUCCESS, steps=result.steps, tokens=result.tokens,
                               final_loss=result.final_loss, wall_s=result.wall_s,
                               tokens_per_s=result.tokens_per_s, peak_mem_mb=result.peak_mem_mb,
                               trainable_params=result.trainable_params, loss_curve=result.loss_curve,
                               retries=retries)
    evals = evaluate_model(model, tokenizer, eval_sets, spec, fmt, device)
    for name, res in evals.items():
        logger.summary({f"{name}/overall": res.overall, f"{name}/pooled": res.pooled,
                        **{f"{name}/{t}": s.score for t, s in res.tasks.items()}})
    record = TrialRecord(
        run=RunInfo(trial_id=spec.trial_id, cell_id=spec.cell_id, kind=spec.kind, sweep=spec.sweep,
                    factors=spec.factors),
        data=data_info, train=train_info, eval=evals,
        meta={"base_model": info.model_id, "base_model_revision": info.revision,
              "base_model_params": info.n_params, "prompt_format": fmt},
    )
    _release(model, device)
    return record


def evaluate_model(model: Any, tokenizer: Any, eval_sets: dict[str, list[dict[str, Any]]],
                   spec: TrialSpec, fmt: str, device: str) -> dict[str, EvalResult]:
    from harness.evaluate.inference import generate_responses
    from harness.evaluate.scoring import score_responses

    out = {}
    for name, rows in eval_sets.items():
        responses = generate_responses(model, tokenizer, rows, fmt=fmt,
                                       batch_size=spec.eval.batch_size, device=device)
        out[name] = EvalResult.model_validate(score_responses(rows, responses).to_dict())
    return out


def _train_with_oom_retry(model, tokenizer, rows, spec: TrialSpec, fmt, device, logger, reporter):
    """Out of memory is retried once with half the micro-batch and twice the accumulation
    (the same effective batch); the record lists the retry."""
    import torch

    from harness.train import attach_lora, train_lora

    def on_log(step: int, loss: float) -> None:
        logger.log({"train/loss": loss}, step=step)
        if reporter:
            reporter({"step": step, "train_loss": loss})

    model = attach_lora(model, spec.lora_rank, spec.lora_alpha, spec.train)
    train_spec, retries = spec.train, []
    for attempt in range(2):
        try:
            inject_fault(spec, "kill")
            inject_fault(spec, "raise")
            if attempt == 0:
                inject_fault(spec, "oom")
            result = train_lora(model, tokenizer, rows, train_spec, seed=spec.seed, fmt=fmt,
                                device=device, on_log=on_log)
            return model, result, retries
        except torch.OutOfMemoryError:
            if attempt == 1 or train_spec.micro_batch == 1:
                raise
            half = train_spec.micro_batch // 2
            retries.append(f"oom: micro_batch {train_spec.micro_batch} -> {half}, "
                           f"grad_accum {train_spec.grad_accum} -> {train_spec.grad_accum * 2}")
            train_spec = train_spec.model_copy(update={"micro_batch": half,
                                                       "grad_accum": train_spec.grad_accum * 2})
            model.zero_grad(set_to_none=True)
            _release(None, device)
    raise AssertionError("unreachable")


def _failed_record(spec: TrialSpec, exc: BaseException) -> TrialRecord:
    reason = f"{type(exc).__name__}: {exc}"
    tb = traceback.format_exception(exc)
    return TrialRecord(
        run=RunInfo(trial_id=spec.trial_id, cell_id=spec.cell_id, kind=spec.kind, sweep=spec.sweep,
                    factors=spec.factors),
        train=TrainInfo(status=TrialStatus.FAILED, reason=reason),
        meta={"traceback": "".join(tb[-6:])},
    )


def failed_record_for(spec: TrialSpec, reason: str, status: TrialStatus = TrialStatus.FAILED) -> TrialRecord:
    """A record for a trial that died outside run_trial (killed worker, cancelled sweep)."""
    return TrialRecord(
        run=RunInfo(trial_id=spec.trial_id, cell_id=spec.cell_id, kind=spec.kind, sweep=spec.sweep,
                    factors=spec.factors),
        train=TrainInfo(status=status, reason=reason),
    )


# ---------------------------------------------------------------------------------------------
# Environment and bookkeeping


def select_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _release(model: Any, device: str) -> None:
    """Free accelerator memory so the next trial on this worker starts clean."""
    import gc

    import torch

    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def run_meta(device: str) -> dict[str, Any]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"versions": versions, "device": _device_name(device), "host": platform.node(),
            "python": platform.python_version(), **git_state()}


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def git_state() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit or None, "git_dirty": dirty if commit else None}


def _start_logger(spec: TrialSpec, results_dir: Path, mode: str, project: str, entity: str | None):
    from harness.tracking import start_trial_run

    return start_trial_run(sweep=spec.sweep, trial_id=spec.trial_id, cell_id=spec.cell_id,
                           name=spec.name, config={**spec.factors, "kind": spec.kind,
                                                   "base_model": spec.base_model},
                           project=project, entity=entity, mode=mode, root=results_dir)


def _finish_logger(logger, record: TrialRecord) -> None:
    logger.summary({"status": record.train.status.value, "reason": record.train.reason})
    logger.finish(exit_code=0 if record.ok else 1)
