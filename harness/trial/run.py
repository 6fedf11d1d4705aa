"""One trial, no Ray: build data -> load base model -> LoRA fine-tune -> evaluate -> write a record.

    record = run_trial(trial_spec, Path("results/smoke"))

Reads top to bottom as setup -> train -> evaluate -> save. Every failure (an exception, a NaN loss,
out of memory twice) still ends in a record with status `failed` and the reason, written atomically,
so a sweep can go on and the report can say what went wrong. Ray (harness.sweep) is a thin adapter
on top.

Artifacts: the LoRA adapter only (peft `save_pretrained`, no base weights, no optimiser state), in
`<results>/adapters/<trial_id>/`; intermediate ones in `step-<N>/` below it when the sweep keeps more
than one (`train.keep_checkpoints`, `train.checkpoint_every`). With `train.eval_every`, a held-out
loss is measured during training and reported (Ray Tune's ASHA scheduler stops trials on it).
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.results import (DataInfo, EvalResult, RunInfo, TrainInfo, TrialRecord, TrialStatus,
                             read_record, write_record)
from harness.spec.schema import TrialSpec, WandbSpec, budget_steps
from harness.trial.environment import _release, run_meta, select_device
from harness.trial.oom import _train_with_oom_retry
from harness.trial.monitor import Reporter, TrainingMonitor, validation_rows

log = logging.getLogger(__name__)


def trial_dir(results_dir: Path, spec: TrialSpec) -> Path:
    return Path(results_dir) / ("baseline" if spec.kind == "baseline" else "trials")


def adapter_dir(results_dir: Path, spec: TrialSpec) -> Path:
    return Path(results_dir) / "adapters" / spec.trial_id


def run_trial(spec: TrialSpec, results_dir: Path, *, device: str | None = None,
              reporter: Reporter | None = None, wandb: WandbSpec | None = None,
              meta: dict[str, Any] | None = None, ranks: int = 1) -> TrialRecord:
    """Run one trial end to end and write its record; never raises for a failed trial.

    `wandb` is the sweep's W&B block (default: offline, project divcap). `ranks` > 1 trains
    data-parallel: this process is rank 0 and starts ranks-1 helper processes (harness.training.ranks;
    on CUDA, rank r uses the r-th visible GPU). Only rank 0 evaluates, logs and writes. `meta` is merged into the record's meta (the driver adds the Ray node id). A BaseException that
    is not an Exception (the scheduler stopping the trial, Ctrl-C) writes no record: whoever stopped
    the trial records why."""
    results_dir = Path(results_dir)
    device = device or select_device()
    if ranks > 1 and device.startswith("cuda"):
        device = "cuda:0"  # rank r trains on cuda:r of the visible GPUs
    logger = _start_logger(spec, results_dir, wandb or WandbSpec())
    started, record = time.perf_counter(), None
    try:
        try:
            record = _execute(spec, device, logger, reporter, results_dir, ranks)
        except Exception as exc:  # noqa: BLE001 - the record carries the reason
            record = _failed_record(spec, exc)
            log.error("trial %s failed: %s", spec.trial_id, record.train.reason)
            traceback.clear_frames(exc.__traceback__)  # the frames hold the model (and GPU memory)
        record.train.wall_s = record.train.wall_s or time.perf_counter() - started
        record.meta.update(run_meta(device))
        record.meta.update(meta or {})
        if ranks > 1:
            record.meta["ranks"] = ranks  # tokens/s is the total over ranks; peak memory is rank 0's
        save_record(record, trial_dir(results_dir, spec))
    finally:
        _finish_logger(logger, record)
        _release(device)  # the model is out of scope here: the next trial on this worker starts clean
    return record


def save_record(record: TrialRecord, directory: Path) -> Path:
    """Write a record atomically, keyed by trial id, so a rewrite replaces and never duplicates.

    A failed or cancelled record never replaces a successful one: a stale worker of a killed driver,
    or a failed re-run, cannot hide a result that exists."""
    path = Path(directory) / f"{record.run.trial_id}.json"
    if not record.ok and path.exists():
        try:
            existing = read_record(path)
        except InputError:
            existing = None
        if existing is not None and existing.ok:
            log.warning("trial %s: keeping its successful record; not replacing it with a %s one (%s)",
                        record.run.trial_id, record.train.status.value, record.train.reason)
            return path
    return write_record(record, directory)


def _execute(spec: TrialSpec, device: str, logger, reporter: Reporter | None,
             results_dir: Path, ranks: int = 1) -> TrialRecord:
    from harness.capacity.adapters import attach

    eval_sets, tokenizer, model, info, fmt = _trial_inputs(spec, device)
    data_info, train_info, artifacts = DataInfo(), TrainInfo(status=TrialStatus.SUCCESS), {}
    if spec.kind == "trial":
        run = TrainingRun(spec, tokenizer, fmt, device, results_dir, ranks)
        model, data_info, train_info, artifacts = run.train(model, eval_sets, info.revision, logger, reporter)
    else:
        model = attach(model, None)  # the baseline: no adapter
    evals = evaluate_model(model, tokenizer, eval_sets, spec, fmt, device)
    if spec.kind == "baseline":  # the report's floor: what the answer format alone scores
        from harness.evaluate.scoring import format_floor

        artifacts = {**artifacts, "format_floor": {name: format_floor(rows) for name, rows in eval_sets.items()}}
    return TrialRecord(
        run=RunInfo(trial_id=spec.trial_id, cell_id=spec.cell_id, kind=spec.kind, sweep=spec.sweep,
                    factors=spec.factors),
        data=data_info, train=train_info, eval=evals,
        meta={"base_model": info.model_id, "base_model_revision": info.revision,
              "base_model_params": info.n_params, "prompt_format": fmt,
              "mc_logits": spec.eval.mc_logits, **artifacts},
    )


def _trial_inputs(spec: TrialSpec, device: str):
    """(eval sets, tokenizer, base model, model info, prompt format), the random state seeded first:
    what rank 0 and every helper rank of a trial start from, identically."""
    import torch

    from harness.data.mixture import build_eval_sets
    from harness.data.prompting import resolve_format
    from harness.model import load_base_model

    torch.manual_seed(spec.seed)
    eval_sets = build_eval_sets(spec.eval, spec.data)
    tokenizer, model, info = load_base_model(spec.base_model, device=device, dtype=spec.train.dtype,
                                             trust_remote_code=spec.trust_remote_code)
    return eval_sets, tokenizer, model, info, resolve_format(spec.eval.prompt_format, tokenizer)


def _training_mixture(spec: TrialSpec, eval_sets: dict[str, list[dict[str, Any]]], tokenizer_id: str,
                      results_dir: Path):
    from harness.data.cache import load_or_build_mixture

    return load_or_build_mixture(spec.subtasks, spec.volume, spec.data, eval_sets, tokenizer_id=tokenizer_id,
                                 cache_dir=Path(results_dir) / "mixtures")


@dataclass
class TrainingRun:
    """The training half of a trial: mixture -> adapters trained (on `ranks` processes) -> saved,
    and the record's data and train blocks."""

    spec: TrialSpec
    tokenizer: Any
    fmt: str
    device: str
    results_dir: Path
    ranks: int = 1

    def train(self, model: Any, eval_sets: dict[str, list[dict[str, Any]]], tokenizer_id: str, logger,
              reporter: Reporter | None) -> tuple[Any, DataInfo, TrainInfo, dict[str, Any]]:
        import torch

        from harness.training.ranks import launch_ranks

        mixture = _training_mixture(self.spec, eval_sets, tokenizer_id, self.results_dir)
        # train.epochs: the steps follow this mixture's size; helper ranks get the resolved spec
        steps = budget_steps(self.spec.train, len(mixture.rows))
        spec = self.spec = self.spec.model_copy(update={"train": self.spec.train.model_copy(update={"steps": steps})})
        monitor = TrainingMonitor(spec=spec, tokenizer=self.tokenizer, fmt=self.fmt, device=self.device,
                                  logger=logger, reporter=reporter, rows=validation_rows(spec),
                                  adapters=adapter_dir(self.results_dir, spec))
        payload = {"spec": spec.model_dump(mode="json"), "results_dir": str(self.results_dir)}
        with launch_ranks(self.ranks, entry="harness.trial.run:train_rank", device=self.device,
                          threads=torch.get_num_threads(), payload=payload) as dist:
            model, result, retries = _train_with_oom_retry(model, self.tokenizer, mixture.rows, spec, self.fmt,
                                                           self.device, monitor, dist)
        artifacts, adapter_bytes = monitor.save_final(model)
        stats = mixture.stats
        data_info = DataInfo(fingerprint=mixture.fingerprint, examples=stats.examples,
                             tokens=result.tokens_per_subtask, diversity=stats.diversity(),
                             contaminated_removed=stats.contaminated_removed, skipped_rows=stats.skipped_rows)
        train_info = TrainInfo(status=TrialStatus.SUCCESS, steps=result.steps, tokens=result.tokens,
                               final_loss=result.final_loss, eval_loss=monitor.final_eval_loss(model),
                               wall_s=result.wall_s, tokens_per_s=result.tokens_per_s,
                               peak_mem_mb=result.peak_mem_mb, trainable_params=result.trainable_params,
                               adapter_bytes=adapter_bytes, loss_curve=result.loss_curve, retries=retries,
                               layout=result.layout,
                               **monitor.curve_info())
        return model, data_info, train_info, artifacts


def evaluate_model(adapted: Any, tokenizer: Any, eval_sets: dict[str, list[dict[str, Any]]],
                   spec: TrialSpec, fmt: str, device: str) -> dict[str, EvalResult]:
    from harness.evaluate.scoring import score_responses

    out = {}
    for name, rows in eval_sets.items():
        responses = respond(adapted, tokenizer, rows, spec, fmt, device)
        out[name] = EvalResult.model_validate(score_responses(rows, responses).to_dict())
    return out


def respond(adapted: Any, tokenizer: Any, rows: list[dict[str, Any]], spec: TrialSpec, fmt: str,
            device: str) -> list[str]:
    """Responses in row order, each row answered through the adapters its family routes it to."""
    from harness.evaluate.inference import generate_responses
    from harness.training.batching import group_rows

    responses: list[str] = [""] * len(rows)
    for group, members in group_rows(adapted, rows).items():
        adapted.route(group)
        answers = generate_responses(adapted.model, tokenizer, [rows[i] for i in members], fmt=fmt,
                                     batch_size=spec.eval.batch_size, device=device,
                                     mc_logits=spec.eval.mc_logits, mc_answer=spec.train.mc_answer)
        for i, answer in zip(members, answers):
            responses[i] = answer
    return responses


def train_rank(payload: dict[str, Any], dist) -> None:
    """A helper rank of a data-parallel trial (harness.training.ranks): the same data, base model and
    adapter as rank 0, trained in lockstep; it saves, evaluates and records nothing."""
    from harness.capacity.adapters import attach
    from harness.training.loop import train_adapter

    spec = TrialSpec.model_validate(payload["spec"])
    eval_sets, tokenizer, model, info, fmt = _trial_inputs(spec, dist.device)
    mixture = _training_mixture(spec, eval_sets, info.revision, payload["results_dir"])
    train_adapter(attach(model, spec.capacity), tokenizer, mixture.rows, spec.train, seed=spec.seed, fmt=fmt,
               device=dist.device, dist=dist)


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


def _start_logger(spec: TrialSpec, results_dir: Path, wandb: WandbSpec):
    from harness.tracking import start_trial_run, trial_config

    config = trial_config(spec.factors, sweep=spec.sweep, kind=spec.kind, base_model=spec.base_model,
                          cell_id=spec.cell_id, trial_id=spec.trial_id)
    return start_trial_run(sweep=spec.sweep, trial_id=spec.trial_id, cell_id=spec.cell_id,
                           name=spec.name, config=config, kind=spec.kind, project=wandb.project,
                           entity=wandb.entity, mode=wandb.mode, root=results_dir, init_timeout=wandb.init_timeout)


def _finish_logger(logger, record: TrialRecord | None) -> None:
    if record is None:  # stopped from outside (scheduler, Ctrl-C): the stopper records why
        logger.summary({"status": "interrupted"})
        logger.finish(exit_code=1)
        return
    logger.log_record(record)  # scores, diversity, status: see harness.tracking
    logger.finish(exit_code=0 if record.ok else 1)
