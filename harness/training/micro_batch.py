"""Pick the micro-batch: the largest that fits the accelerator, grad accumulation keeping the effective batch.

    micro, accum = auto_micro_batch(model, lambda n: collate(longest[:n], pad_id), 64, "cuda", rank=16,
                                    tokens_per_sample=len(longest[0].input_ids), loss_fn=loss_fn)

Two parts:
- pure arithmetic (no torch): `memory_model` + `analytic_micro_batch` estimate the bytes of a trial
  from the model shape, LoRA rank, tokens per sample and loss path (harness.spec.estimate's constants,
  calibrated on DESIGN.md section 8's plain transformers + peft anchors; within 25% of the four
  measured peaks, which is why it only proposes the first size to try); `search_micro_batch` finds
  the largest size a monotone `fits(n)` oracle accepts; `split_effective_batch` turns it into
  (micro_batch, grad_accum) with exactly the requested effective batch.
- the device probe: `probe_fits` runs one forward + backward at a candidate size on the real model
  and batch (the n longest samples: the worst case), catches torch.OutOfMemoryError and compares the
  peak allocation with the budget. The analytic estimate is the first candidate, so a good estimate
  costs two or three probes; a bad one a few more (halving or doubling, then bisecting), never a crash.
`auto_micro_batch` puts the two together for the trainer; `pick_micro_batch` is the search alone.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from harness.shapes import ModelShape, shape_from_config
from harness.spec.estimate import (ACT_BYTES_PER_TOKEN_LAYER_HIDDEN, LOGIT_BYTES_PER_TOKEN_VOCAB,
                                   LORA_BYTES_PER_PARAM)

log = logging.getLogger(__name__)
GIB = 2**30
CKPT_BYTES_PER_TOKEN_LAYER_HIDDEN = 2.0  # activation checkpointing keeps each layer's bf16 input only

LossPath = Literal["plain", "chunked", "fused"]


@dataclass(frozen=True)
class MemoryModel:
    """bytes(micro-batch of n samples of t tokens) = fixed + workspace + per_token * n * t."""

    fixed: float  # weights, LoRA weights/grads/optimiser states
    workspace: float  # independent of the batch: one loss chunk's logits
    per_token: float  # activations kept for backward, plus logits for the plain loss

    def bytes_for(self, micro_batch: int, tokens_per_sample: float) -> float:
        return self.fixed + self.workspace + self.per_token * micro_batch * tokens_per_sample


def memory_model(shape: ModelShape, rank: int, *, loss: LossPath = "plain", grad_ckpt: bool = False,
                 chunk_tokens: int = 2048, targets: str | list[str] = "all-linear",
                 weight_bytes: int = 2) -> MemoryModel:
    """The estimate for one trial (bf16 weights by default; LoRA in fp32 as peft keeps it)."""
    fixed = shape.params * weight_bytes + shape.lora_params(max(rank, 1), targets) * LORA_BYTES_PER_PARAM
    layer_bytes = shape.hidden * ACT_BYTES_PER_TOKEN_LAYER_HIDDEN  # per token, one layer
    if grad_ckpt:  # every layer's input, plus one layer recomputed at a time (per token of the batch)
        per_token = shape.layers * shape.hidden * CKPT_BYTES_PER_TOKEN_LAYER_HIDDEN + layer_bytes
    else:
        per_token = shape.layers * layer_bytes
    logits = shape.vocab * LOGIT_BYTES_PER_TOKEN_VOCAB
    if loss == "plain":  # every position's logits, whether labelled or not
        return MemoryModel(fixed, 0.0, per_token + logits)
    return MemoryModel(fixed, chunk_tokens * logits, per_token)


def analytic_micro_batch(mem: MemoryModel, budget_bytes: float, tokens_per_sample: float) -> int:
    """The largest n with mem.bytes_for(n, tokens_per_sample) <= budget_bytes (0 if not even one fits)."""
    room = budget_bytes - mem.fixed - mem.workspace
    if room <= 0 or tokens_per_sample <= 0:
        return 0
    return max(int(room // (mem.per_token * tokens_per_sample)), 0)


def search_micro_batch(fits: Callable[[int], bool], max_micro_batch: int, start: int | None = None) -> int:
    """The largest n in [1, max_micro_batch] with fits(n), for a monotone oracle (fits(n) -> fits(n-1)).

    From `start` (default max_micro_batch): on failure halve until something fits; on success double
    (capped at the maximum) until something fails; then bisect between the largest success and the
    smallest failure. Each answer is asked once. Raises MemoryError when even 1 does not fit.
    """
    if max_micro_batch < 1:
        raise ValueError(f"max_micro_batch must be >= 1, got {max_micro_batch}")
    cache: dict[int, bool] = {}

    def ask(n: int) -> bool:
        if n not in cache:
            cache[n] = bool(fits(n))
        return cache[n]

    n = min(max(start or max_micro_batch, 1), max_micro_batch)
    if ask(n):
        good, bad = n, max_micro_batch + 1
        while good < max_micro_batch:
            n = min(good * 2, max_micro_batch)
            if not ask(n):
                bad = n
                break
            good = n
    else:
        bad = n
        while bad > 1:
            n = bad // 2
            if ask(n):
                break
            bad = n
        else:
            raise MemoryError("a micro-batch of 1 does not fit the memory budget")
        good = n
    while bad - good > 1:  # bisect: good fits, bad does not
        mid = (good + bad) // 2
        good, bad = (mid, bad) if ask(mid) else (good, mid)
    return good


def split_effective_batch(effective_batch: int, max_micro_batch: int) -> tuple[int, int]:
    """(micro_batch, grad_accum) with micro_batch * grad_accum == effective_batch exactly, micro_batch
    the largest divisor of effective_batch that is <= max_micro_batch (so fewest accumulation steps)."""
    if effective_batch < 1 or max_micro_batch < 1:
        raise ValueError(f"batch sizes must be >= 1, got {effective_batch} and {max_micro_batch}")
    micro = max(d for d in range(1, min(effective_batch, max_micro_batch) + 1) if effective_batch % d == 0)
    return micro, effective_batch // micro


def default_budget_bytes(device: Any, margin: float = 0.1, reserve_bytes: float = 0.0) -> float:
    """What this process may allocate at its peak: what it holds now plus (1 - margin) of what is free
    on the device (other processes' memory already excluded), minus reserve_bytes (e.g. AdamW moments
    not allocated yet at probe time)."""
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return torch.cuda.memory_allocated(device) + free * (1 - margin) - reserve_bytes


def probe_fits(model: Any, sample_batch_fn: Callable[[int], dict[str, Any]], device: Any,
               budget_bytes: float, loss_fn: Callable[[Any, dict[str, Any]], Any] | None = None
               ) -> Callable[[int], bool]:
    """fits(n): one forward + backward on sample_batch_fn(n) on a CUDA device stays within budget_bytes.

    The model's gradients are dropped and the RNG state restored afterwards, so probing leaves no trace
    on training. loss_fn(model, batch) defaults to model(**batch, use_cache=False).loss.
    """
    import torch

    loss_fn = loss_fn or (lambda m, b: m(**b, use_cache=False).loss)
    params = [p for p in model.parameters() if p.requires_grad]

    def fits(n: int) -> bool:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            ok = _try_step(model, sample_batch_fn(n), device, loss_fn)
        finally:
            for p in params:
                p.grad = None
            gc.collect()
            torch.cuda.empty_cache()
        peak = torch.cuda.max_memory_allocated(device)
        log.info("probe micro-batch %d: %s, peak %.2f GiB of a %.2f GiB budget", n,
                 "ran" if ok else "out of memory", peak / GIB, budget_bytes / GIB)
        return ok and peak <= budget_bytes

    return fits


def _try_step(model: Any, batch: dict[str, Any], device: Any, loss_fn: Callable) -> bool:
    """One forward + backward; False on out-of-memory. Own frame, so the failed step's tensors die here."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch.OutOfMemoryError: >= 2.2
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev.index if dev.index is not None else torch.cuda.current_device()]):
        try:
            loss_fn(model, {k: v.to(dev) for k, v in batch.items()}).backward()
        except oom:
            return False
    torch.cuda.synchronize(device)
    return True


def pick_micro_batch(model: Any, sample_batch_fn: Callable[[int], dict[str, Any]], target_effective_batch: int,
                     device: Any, max_micro_batch: int | None = None, *,
                     loss_fn: Callable[[Any, dict[str, Any]], Any] | None = None, start: int | None = None,
                     budget_bytes: float | None = None, margin: float = 0.1,
                     fits: Callable[[int], bool] | None = None) -> tuple[int, int]:
    """(micro_batch, grad_accum) for training `model` at target_effective_batch sequences per step.

    sample_batch_fn(n) -> a batch of the n longest training samples (as the trainer collates them).
    start: the first size to probe (e.g. analytic_micro_batch(...)); default the maximum.
    budget_bytes: the peak this process may reach (default: default_budget_bytes(device, margin),
    less the AdamW moments the first optimiser step will add); set it to share a GPU between trials.
    fits: an oracle to use instead of probing (tests). Off CUDA there is no probe: everything fits.
    """
    cap = min(max_micro_batch or target_effective_batch, target_effective_batch)
    if fits is None:
        if not str(device).startswith("cuda"):
            return split_effective_batch(target_effective_batch, cap)
        if budget_bytes is None:
            moments = 8 * sum(p.numel() for p in model.parameters() if p.requires_grad)  # fp32 m and v
            budget_bytes = default_budget_bytes(device, margin, reserve_bytes=moments)
        fits = probe_fits(model, sample_batch_fn, device, budget_bytes, loss_fn)
    return split_effective_batch(target_effective_batch, search_micro_batch(fits, cap, start))


def auto_micro_batch(model: Any, sample_batch_fn: Callable[[int], dict[str, Any]], effective_batch: int,
                     device: Any, *, rank: int, tokens_per_sample: int, loss: LossPath = "chunked",
                     grad_ckpt: bool = False, chunk_tokens: int = 2048,
                     loss_fn: Callable[[Any, dict[str, Any]], Any] | None = None,
                     budget_bytes: float | None = None, max_micro_batch: int | None = None) -> tuple[int, int]:
    """What the trainer calls for `micro_batch: auto`: the analytic estimate from the model's own config
    as the first size, then the device probe (pick_micro_batch). tokens_per_sample: the longest sample
    (padded batches are as long as their longest row); for packed rows, the longest sample too, since
    sample_batch_fn(n) packs the n longest. Off CUDA: (min(effective, max), accumulation), no probe."""
    start = None
    if str(device).startswith("cuda"):
        from harness.training.losses import causal_lm_parts

        decoder, _ = causal_lm_parts(model)
        mem = memory_model(shape_from_config(decoder.config), rank, loss=loss, grad_ckpt=grad_ckpt,
                           chunk_tokens=chunk_tokens)
        budget_bytes = budget_bytes if budget_bytes is not None else default_budget_bytes(
            device, reserve_bytes=8 * sum(p.numel() for p in model.parameters() if p.requires_grad))
        start = max(analytic_micro_batch(mem, budget_bytes, tokens_per_sample), 1)
        log.info("micro-batch estimate %d (%.1f GiB budget, %d tokens per sample)", start, budget_bytes / GIB,
                 tokens_per_sample)
    return pick_micro_batch(model, sample_batch_fn, effective_batch, device, max_micro_batch, loss_fn=loss_fn,
                            start=start, budget_bytes=budget_bytes)
