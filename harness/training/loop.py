"""Adapter fine-tuning: rows -> tokenised examples -> batches -> adapter. Returns a TrainResult.

The loss is on the response tokens only (prompt tokens are labelled -100). Batches are padded to
their longest row after sorting rows into length buckets, which keeps padding waste low on
instruction-length data. The loop reports (step, loss) through a callback so the caller decides
where it goes (Ray Tune, W&B, stdout); it never touches files.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.capacity.adapters import AdaptedModel
from harness.data.prompting import McAnswer, PromptFormat, format_prompt, render_answer
from harness.spec.schema import TrainSpec
from harness.training.levers import attention_kernel, compile_decoder_layers, enable_activation_checkpointing, make_adamw
from harness.training.losses import IGNORE_INDEX, ChunkedLossModel, logits_postprocessing
from harness.training.ranks import DistContext, loss_terms

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


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    subtask: str
    group: str = ""  # the adapter group that trains on it (multi_lora); batches never mix groups


def encode_example(row: dict[str, Any], tokenizer: Any, fmt: PromptFormat, max_len: int,
                   group: str = "", mc_answer: McAnswer = "digit") -> Example:
    """Prompt and answer are tokenised separately so the prompt tokens match what generation sees."""
    prompt_ids = tokenizer(format_prompt(row["input_field"], tokenizer, fmt),
                           add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(render_answer(row, mc_answer), add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids + [tokenizer.eos_token_id]
    # Truncate the prompt from the left: the question's tail (options, "Answer:") matters most.
    keep = max(max_len - len(answer_ids), 1)
    prompt_ids = prompt_ids[-keep:]
    ids = (prompt_ids + answer_ids)[:max_len]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_len]
    return Example(ids, labels, row.get("subtask", ""), group)


@dataclass(frozen=True)
class MicroBatch:
    group: str  # the adapter group it trains (multi_lora); "" otherwise
    batch: dict[str, torch.Tensor]  # this rank's collated slice
    share: float  # its part of the step's loss-carrying tokens (all ranks together)
    tokens: int  # this rank's real tokens (padding not counted) and supervised tokens
    supervised: int


def make_batches(examples: list[Example], micro_batch: int, seed: int, pad_id: int, packing: bool,
                 dist: DistContext | None = None, grad_accum: int = 1, pack_length: int | None = None):
    """Endless shuffled optimiser steps: each one effective batch (micro_batch x grad_accum examples of
    one adapter group) as a list of MicroBatch, whose share is its part of the step's loss-carrying
    tokens.

    The step's examples depend only on the effective batch, and the shares make the summed loss the
    token mean over the whole step, so micro_batch 8 x 2 learns what 16 x 1 learns (the out-of-memory
    retry and micro_batch auto change the split, not the training). Packed: each micro-batch is packed
    into rows of at most pack_length tokens (collate_packed; None: one row). Padded: rows of similar
    length are batched together. Data-parallel: every rank draws the same global micro-batches and
    collates its own slice (DistContext.local_batch).
    """
    dist = dist or DistContext.single()
    collate_fn = collator(packing, pad_id, pack_length)
    rng, size = random.Random(seed), micro_batch * grad_accum
    while True:
        chunks = []
        for group in sorted({e.group for e in examples}):
            members = [i for i, e in enumerate(examples) if e.group == group]
            if packing:
                rng.shuffle(members)
            else:
                members.sort(key=lambda i: (len(examples[i].input_ids), rng.random()))
            chunks += [members[i : i + size] for i in range(0, len(members), size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            step = [examples[i] for i in chunk]
            total = sum(loss_terms(e) for e in step) or 1
            yield [MicroBatch(e[0].group, dist.local_batch(e, collate_fn), sum(loss_terms(x) for x in e) / total,
                              *dist.local_tokens(e))
                   for e in (step[i : i + micro_batch] for i in range(0, len(step), micro_batch))]


def collator(packing: bool, pad_id: int,
             pack_length: int | None = None) -> Callable[[list[Example]], dict[str, torch.Tensor]]:
    """How training micro-batches are laid out: padding-free packed rows (at most pack_length tokens
    each; None: one row), or padded rows."""
    if packing:
        return functools.partial(collate_packed, pad_id=pad_id, pack_length=pack_length)
    return functools.partial(collate, pad_id=pad_id)


def packed_row_length(spec: TrainSpec, longest: int) -> int | None:
    """Tokens per packed row: None (one row per micro-batch) where the attention kernel skips the
    cross-sample blocks (flash varlen, flex block masks); else train.pack_length, or by default the
    longest training sample: SDPA/eager attend over a dense block-diagonal mask, so a row costs the
    square of its length, and rows as long as the longest sample cost what its padded batch would.
    (builtin:tiny shape on EC-Guide lengths, CPU: rows of the longest sample ran 1.6-2.0x plain, rows of
    1024 tokens 1.3x, one row per micro-batch 0.8x; bench/RESULTS.md.)"""
    if spec.attention.startswith("flash_attention"):
        return None
    if spec.attention == "flex_attention" and spec.pack_length is None:
        return None
    return spec.pack_length or longest


def longest_sample(examples: list[Example]) -> int:
    return max(len(e.input_ids) for e in examples)


def pack_rows(batch: list[Example], pack_length: int | None) -> list[list[Example]]:
    """First-fit decreasing: longest samples first, each into the first row with room for it."""
    if pack_length is None:
        return [batch]
    rows: list[list[Example]] = []
    room: list[int] = []
    for e in sorted(batch, key=lambda e: len(e.input_ids), reverse=True):
        n = len(e.input_ids)
        if n > pack_length:
            raise ValueError(f"a {n}-token sample does not fit a packed row of {pack_length} tokens")
        i = next((i for i, free in enumerate(room) if free >= n), len(rows))
        if i == len(rows):
            rows.append([])
            room.append(pack_length)
        rows[i].append(e)
        room[i] -= n
    return rows


def collate_packed(batch: list[Example], pad_id: int = 0,
                   pack_length: int | None = None) -> dict[str, torch.Tensor]:
    """Examples concatenated into rows of at most pack_length tokens (None: one row), position ids
    restarting at 0 for each example.

    With no attention_mask, transformers reads the restarts as sequence boundaries and builds a
    block-diagonal causal mask (SDPA/eager/flex) or varlen attention (flash-attention, single row
    only), so no token attends across examples. No label crosses a boundary either: each example
    starts with prompt tokens, which are labelled -100. A short row's padding tail is one more
    "sequence" (positions from 0, labels -100) that no real token attends to.
    """
    rows = pack_rows(batch, pack_length)
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            ids[r, at : at + n] = torch.tensor(e.input_ids)
            labels[r, at : at + n] = torch.tensor(e.labels)
            positions[r, at : at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):  # right padding for training
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


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


def apply_levers(model: Any, spec: TrainSpec, device: str) -> Any:
    """The speed and memory levers of train.*; returns the module whose forward gives the loss (the
    chunked-loss wrapper, so DDP wraps the whole loss computation)."""
    if spec.grad_checkpointing is True:  # "auto" turns it on later, only if memory requires it
        enable_activation_checkpointing(model)
    if spec.compile and device.startswith("cuda"):
        compile_decoder_layers(model)
    if not uses_chunked_loss(model, spec):
        if spec.loss != "plain":  # once per training run, not at every held-out loss
            log.warning("train.loss %s: the model sets %s, which the chunked loss does not apply; using "
                        "the plain loss (slower, more memory)", spec.loss, logits_postprocessing(model))
        return model
    return ChunkedLossModel(model, spec.loss_chunk_tokens, "fused" if spec.loss == "fused" else "checkpoint")


def uses_chunked_loss(model: Any, spec: TrainSpec) -> bool:
    """train.loss chunked/fused, unless the model post-processes its logits (Granite's logits_scaling,
    Gemma 2's softcapping, ...): then the plain loss rather than a wrong objective."""
    return spec.loss != "plain" and logits_postprocessing(model) is None


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


def group_rows(adapted: AdaptedModel, rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Row indices per evaluation group, in first-seen order (one group for unrouted families)."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(adapted.eval_group_of(row), []).append(i)
    return groups
