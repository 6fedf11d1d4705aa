"""A trial's training attempt, retried on out of memory with a smaller split of the same step.

    model, result, retries = _train_with_oom_retry(model, tokenizer, rows, spec, fmt, device, monitor, dist)

A retry halves the micro-batch and keeps micro_batch x grad_accum (the same learning) down to one
sample, then turns activation checkpointing on (grad_checkpointing auto); each starts again from
the adapter's initial weights, and the record lists the retries.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

from harness.spec.schema import TrainSpec, TrialSpec
from harness.trial.environment import _release
from harness.trial.faults import _inject_model_faults, inject_fault

if TYPE_CHECKING:
    from harness.trial.monitor import TrainingMonitor


def _train_with_oom_retry(model, tokenizer, rows, spec: TrialSpec, fmt, device, monitor: "TrainingMonitor",
                          dist):
    """Out of memory is retried with a smaller split of the same step: half the micro-batch and the
    accumulation that keeps micro_batch x grad_accum exactly (the same examples, the same token-weighted
    loss; see harness.training.batching.make_batches), down to micro-batch 1; then, with
    grad_checkpointing auto, with activation checkpointing on. Each retry starts again from the
    adapter's initial weights, so the run learns what that split learns from the start however far
    the failed attempt got; the record lists the retries. Not with several ranks (they would have to
    retry in step)."""
    import torch

    from harness.capacity.adapters import attach
    from harness.training.loop import train_adapter

    model = attach(model, spec.capacity)
    monitor.start(model)
    _inject_model_faults(model, spec)
    initial = [p.detach().clone() for p in model.trainable_parameters()]  # the adapter is small
    train_spec, retries = spec.train, []
    while True:
        try:
            inject_fault(spec, "kill")
            inject_fault(spec, "raise")
            if not retries:
                inject_fault(spec, "oom")
            result = train_adapter(model, tokenizer, rows, train_spec, seed=spec.seed, fmt=fmt,
                                device=device, on_log=monitor, dist=dist)
            return model, result, retries
        except torch.OutOfMemoryError as exc:
            smaller = None if dist.world > 1 else smaller_split(train_spec)
            if smaller is None:
                raise
            traceback.clear_frames(exc.__traceback__)  # drop the failed step's activations
            train_spec, change = smaller
            retries.append(f"oom: {change}")
            model.model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for param, start in zip(model.trainable_parameters(), initial):
                    param.copy_(start)
            monitor.restart()
            _release(device)


def smaller_split(train: TrainSpec) -> tuple[TrainSpec, str] | None:
    """(the train spec to retry an out-of-memory with, what changed), or None when nothing is left:
    half the micro-batch with the same examples per step, then activation checkpointing (auto)."""
    from harness.training.micro_batch import split_effective_batch

    micro = train.micro_batch
    if isinstance(micro, int) and micro > 1:
        effective = micro * train.grad_accum
        new_micro, accum = split_effective_batch(effective, micro // 2)
        return (train.model_copy(update={"micro_batch": new_micro, "grad_accum": accum}),
                f"micro_batch {micro} -> {new_micro}, grad_accum {train.grad_accum} -> {accum}")
    if train.grad_checkpointing == "auto":
        return train.model_copy(update={"grad_checkpointing": True}), "activation checkpointing on"
    return None
