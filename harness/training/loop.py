"""The training loop: a trial's adapters fine-tuned on its rows. Returns a TrainResult.

    result = train_adapter(adapted, tokenizer, rows, spec.train, seed=0, fmt="raw", device="cpu")

Rows become micro-batches (harness.training.batching); each optimiser step runs their forward and
backward passes (`_optimizer_step`), each micro-batch's loss weighted by its share of the step's
tokens; the levers, the micro-batch choice and the data-parallel ranks plug in around it. The loop
reports (step, loss) through a callback so the caller decides where it goes (Ray Tune, W&B,
stdout); it never touches files. `eval_loss` is the held-out loss, computed as training computes it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.capacity.adapters import AdaptedModel
from harness.data.prompting import PromptFormat
from harness.spec.schema import TrainSpec
from harness.training.batching import (Example, collate, collator, encode_example, group_rows, longest_sample,
                                       make_batches, packed_row_length)
from harness.training.levers import (apply_levers, attention_kernel, enable_activation_checkpointing, make_adamw,
                                     uses_chunked_loss)
from harness.training.losses import IGNORE_INDEX, ChunkedLossModel
from harness.training.ranks import DistContext

log = logging.getLogger(__name__)
LogFn = Callable[[int, float], None]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclass
class TrainResult:
    steps: int
    tokens: int  # supervised (response) tokens seen
    final_loss: float
    wall_s: float  # the whole loop, loss reports included
    tokens_per_s: float  # all tokens through the model (prompt + response) per second of training steps
    peak_mem_mb: float
    trainable_params: int
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    tokens_per_subtask: dict[str, int] = field(default_factory=dict)
    # How the steps ran (what micro_batch / grad_checkpointing auto chose): the same learning either way
    layout: dict[str, Any] = field(default_factory=dict)


def _lr_lambda(spec: TrainSpec) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    def factor(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        progress = (step - spec.warmup_steps) / max(spec.steps - spec.warmup_steps, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def as_adapted(model: Any) -> AdaptedModel:
    """Accept a bare (e.g. peft-wrapped) model where an AdaptedModel is expected: no routing."""
    return model if isinstance(model, AdaptedModel) else AdaptedModel(model)


def train_adapter(model: Any, tokenizer: Any, rows: list[dict[str, Any]], spec: TrainSpec, *,
               seed: int, fmt: PromptFormat, device: str, on_log: LogFn | None = None,
               dist: DistContext | None = None) -> TrainResult:
    """Fine-tune the adapters of `model` (an AdaptedModel from harness.capacity, or a peft model) in
    place. Only the adapter parameters train; the family decides routing and any auxiliary loss.
    With a data-parallel `dist` (harness.training.ranks) every rank calls this in lockstep; losses and
    token counts are totals over ranks and only rank 0 reports."""
    if not rows:
        raise ValueError("no training rows")
    dist = dist or DistContext.single(device)
    adapted = as_adapted(model)
    torch.manual_seed(seed)
    examples = [encode_example(r, tokenizer, fmt, spec.max_seq_len, adapted.group_of(r), spec.mc_answer)
                for r in rows]
    with attention_kernel(adapted.model, spec.attention, device):
        return _train(adapted, examples, tokenizer.pad_token_id, spec, seed=seed, device=device,
                      on_log=on_log, dist=dist)


def _train(adapted: AdaptedModel, examples: list[Example], pad_id: int, spec: TrainSpec, *, seed: int,
           device: str, on_log: LogFn | None, dist: DistContext) -> TrainResult:
    model = adapted.model
    params = adapted.trainable_parameters()
    loss_model = apply_levers(model, spec, device)
    model.train()  # before the micro-batch probe: dropout and checkpointing act in train mode only
    micro, accum, checkpointing = micro_batch_plan(loss_model, examples, spec, pad_id, device,
                                                   rank=adapted.spec.rank if adapted.spec else 16)
    # multi_lora leaves the other groups' adapters out of each micro-batch: DDP must be told
    net = dist.wrap(loss_model, find_unused_parameters=len({e.group for e in examples}) > 1)
    opt = make_adamw(params, spec.lr, spec.weight_decay, fused=spec.fused_adamw and device.startswith("cuda"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(spec))
    batches = make_batches(examples, micro, seed, pad_id, spec.packing, dist, accum,
                           pack_length=packed_row_length(spec, longest_sample(examples)))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start, seen_tokens, sup_tokens, curve, loss_val = time.perf_counter(), 0, 0, [], float("nan")
    reporting = 0.0  # seconds in on_log (held-out loss, intermediate adapters): not training throughput
    for step in range(1, spec.steps + 1):
        loss_val, n_tok, n_sup = dist.reduce_step(*_optimizer_step(adapted, net, batches, device, dist))
        if not math.isfinite(loss_val):
            raise NonFiniteLossError(f"loss became {loss_val} at step {step} (lr {spec.lr}); "
                                     "lower train.lr or check the data")
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        seen_tokens, sup_tokens = seen_tokens + n_tok, sup_tokens + n_sup
        if step % spec.log_every == 0 or step == spec.steps:
            curve.append((step, loss_val))
            if on_log and dist.is_main:
                began = time.perf_counter()
                on_log(step, loss_val)
                reporting += time.perf_counter() - began
    model.eval()
    wall = time.perf_counter() - start
    return TrainResult(
        steps=spec.steps, tokens=sup_tokens, final_loss=loss_val, wall_s=wall,
        tokens_per_s=seen_tokens / (wall - reporting) if wall > reporting else 0.0,
        peak_mem_mb=_peak_mem_mb(device),
        trainable_params=sum(p.numel() for p in params), loss_curve=curve,
        tokens_per_subtask=_tokens_per_subtask(examples),
        layout={"micro_batch": micro, "grad_accum": accum, "grad_checkpointing": checkpointing,
                "packing": spec.packing, "attention": spec.attention},
    )


def micro_batch_plan(loss_model: Any, examples: list[Example], spec: TrainSpec, pad_id: int,
                     device: str, rank: int) -> tuple[int, int, bool]:
    """(micro_batch, grad_accum, activation checkpointing on): as the spec says, or for micro_batch
    auto the largest micro-batch of the longest samples that fits the device (harness.training.micro_batch),
    with the accumulation that keeps train.batch_size sequences per step exactly. With
    grad_checkpointing auto, checkpointing is turned on only when not even one sample fits without it."""
    checkpointing = spec.grad_checkpointing is True
    if spec.micro_batch != "auto":
        return spec.micro_batch, spec.grad_accum, checkpointing
    from harness.training.micro_batch import auto_micro_batch

    longest = sorted(examples, key=lambda e: len(e.input_ids), reverse=True)
    collate_fn = collator(spec.packing, pad_id, packed_row_length(spec, len(longest[0].input_ids)))

    def plan(ckpt: bool) -> tuple[int, int]:
        return auto_micro_batch(loss_model, lambda n: collate_fn(longest[:n]), spec.batch_size, device,
                                rank=rank, tokens_per_sample=len(longest[0].input_ids),
                                loss="chunked" if isinstance(loss_model, ChunkedLossModel) else "plain",
                                grad_ckpt=ckpt, chunk_tokens=spec.loss_chunk_tokens)
    try:
        micro, accum = plan(checkpointing)
    except MemoryError:
        if spec.grad_checkpointing != "auto":
            raise
        log.warning("micro_batch auto: one sample does not fit without activation checkpointing; turning it on")
        enable_activation_checkpointing(loss_model.model if isinstance(loss_model, ChunkedLossModel) else loss_model)
        checkpointing = True
        micro, accum = plan(checkpointing)
    log.info("micro_batch auto: %d x %d accumulation steps%s", micro, accum,
             ", activation checkpointing" if checkpointing else "")
    return micro, accum, checkpointing


def _optimizer_step(adapted: AdaptedModel, net: Any, batches, device: str,
                    dist: DistContext) -> tuple[float, int, int]:
    """Forward/backward over one step's micro-batches; returns (loss, tokens, supervised tokens).
    Each micro-batch's mean loss is weighted by its share of the step's loss-carrying tokens, so the
    sum is the step's token mean. The reported loss is the language-model loss; an auxiliary loss
    (MoLE balancing) trains but is not reported, so losses stay comparable across capacity families.
    `net` is the model, or its DDP wrapper (gradients all-reduced on the last micro-batch only)."""
    total_loss, tokens, supervised = 0.0, 0, 0
    step = next(batches)
    for i, micro in enumerate(step):
        batch = {k: v.to(device) for k, v in micro.batch.items()}
        adapted.route(micro.group)
        with dist.accumulate(net, i, len(step)):
            loss = dist.micro_loss(net, batch) * micro.share
            aux = adapted.aux_loss() if micro.tokens else None  # a weight-0 stand-in batch adds no aux loss
            (loss if aux is None else loss + aux * micro.share).backward()
        total_loss += loss.item()
        tokens, supervised = tokens + micro.tokens, supervised + micro.supervised
    return total_loss, tokens, supervised


def _tokens_per_subtask(examples: list[Example]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in examples:
        out[e.subtask] = out.get(e.subtask, 0) + len(e.input_ids)
    return out


def _peak_mem_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@torch.no_grad()
def eval_loss(model: Any, tokenizer: Any, rows: list[dict[str, Any]], spec: TrainSpec, *,
              fmt: PromptFormat, device: str, batch_size: int = 32) -> float:
    """Mean response-token loss on rows (the held-out loss that early stopping watches), each row
    through the adapters the family routes it to at evaluation. Computed as training computes it
    (train.loss): the chunked loss never holds a batch's full-vocabulary logits."""
    adapted = as_adapted(model)
    chunked = uses_chunked_loss(adapted.model, spec)
    loss_of = ChunkedLossModel(adapted.model, spec.loss_chunk_tokens) if chunked else adapted.model
    total, count = 0.0, 0
    for group, members in group_rows(adapted, rows).items():
        adapted.route(group)
        examples = [encode_example(rows[i], tokenizer, fmt, spec.max_seq_len, mc_answer=spec.mc_answer)
                    for i in members]
        for i in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[i : i + batch_size],
                                                         tokenizer.pad_token_id).items()}
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += loss_of(**batch, use_cache=False).loss.item() * n
            count += n
    return total / max(count, 1)
