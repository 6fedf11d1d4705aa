"""Pre-launch estimates for `harness plan`: model shape -> parameters, memory, time, GPU-hours.

All numbers are estimates for planning, calibrated on measured anchors, and labelled as such:
- GPU memory per trial = bf16 weights + LoRA weights/grads/AdamW states (fp32) + activations
  (115 bytes per token x layer x hidden unit, the mean of the DESIGN.md section 8 anchors for the
  Qwen2.5-0.5B and 7B shapes under plain transformers + peft) + fp32 logits and their gradient
  (10 bytes per token x vocabulary entry; with train.loss chunked or fused, one chunk of labelled
  positions at most).
- GPU tokens/s follows a power law through the same anchors (52.7k tok/s at 0.49B params, 10.1k at
  7.6B on one H200); a fractional GPU gets its share. CPU tokens/s scales from builtin:tiny's rate.
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.shapes import KNOWN_SHAPES, ModelShape, model_shape  # noqa: F401 - re-exported for bench/
from harness.spec.schema import SweepSpec, TrialSpec, budget_steps

GPU_ANCHOR = (0.494e9, 52_700.0)  # (params, tokens/s) Qwen2.5-0.5B, rank 16, one H200
GPU_EXPONENT = 0.60  # tokens/s ~ params^-0.60 between the 0.5B and 7B anchors
# builtin:tiny LoRA on one CPU core, in this estimate's tokens (steps x sequences x min(max_seq_len,
# 120)): README command 1 on an idle 2-core machine trained 594 steps in 73-81 s and 188 in 22-25 s.
CPU_TINY_TOKENS_PER_S = 15_000.0
CPU_TINY_PARAMS = 0.87e6
# CPU: the same run's 1900 held-out questions took about 20 s per trial (most are multiple-choice,
# answered in one forward pass by option text). GPU: batched greedy, tiny answers.
EVAL_SECONDS_PER_QUESTION = {"cpu": 0.01, "gpu": 0.01}
SYNTHETIC_SUBTASKS = 19  # the synthetic held-out set: eval.per_subtask questions of every subtask
WALL_CLOCK_GPUS = (1, 8)  # plan prints the wall-clock hours of the whole sweep on one and on eight GPUs
# Bytes kept for backward per token, decoder layer and hidden unit, plain transformers + peft in bf16
# (the mean of the Qwen2.5-0.5B and 7B anchors; micro_batch auto's memory model uses these too).
ACT_BYTES_PER_TOKEN_LAYER_HIDDEN = 115.0
# Full-vocabulary logits per token: bf16 logits (2) + their fp32 upcast (4) + its gradient (4).
LOGIT_BYTES_PER_TOKEN_VOCAB = 10.0
LORA_BYTES_PER_PARAM = 16.0  # fp32 weight + grad + two AdamW moments


def adapter_params_of(trial: TrialSpec, shape: ModelShape) -> int:
    """Trainable adapter parameters (counted at expansion; plain LoRA on all linear layers when the
    target modules are not ones the shape knows)."""
    cap = trial.capacity
    if cap is None:
        return 0
    return cap.params if cap.params is not None else shape.lora_params(cap.rank)


def capacity_table(trials: list[TrialSpec], shape: ModelShape | None) -> list[dict[str, Any]]:
    """One row per distinct capacity setting: label, parameters, adapter size, and for a matched
    setting how far it lands from its budget (what `capacity.match_params` chose, said out loud)."""
    from harness.capacity.settings import budget_params

    rows: dict[tuple, dict[str, Any]] = {}
    for t in trials:
        cap = t.capacity
        if cap is None:
            continue
        params = cap.params
        row = {"capacity": cap.label, "family": cap.family, "rank": cap.rank, "params": params,
               # adapters are saved in fp32 (peft upcasts bf16 adapters), 4 bytes per parameter
               "adapter_mib": round(params * 4 / 2**20, 3) if params is not None else None,
               "budget": cap.budget}
        if cap.budget and shape is not None and params is not None:
            target = budget_params(int(cap.budget) if cap.budget.isdigit() else cap.budget, shape,
                                   cap.target_modules)
            row.update(budget_params=target, off_budget_pct=round(100 * (params - target) / target, 1))
        rows.setdefault((cap.label, cap.budget, params), row)
    return list(rows.values())


def _logit_tokens(tr: Any, tokens_per_micro: int) -> int:
    """Positions whose fp32 logits exist at once: all of them with the plain loss; with the chunked or
    fused loss at most one chunk of labelled positions (harness.training.losses)."""
    return tokens_per_micro if tr.loss == "plain" else min(tr.loss_chunk_tokens, tokens_per_micro)


@dataclass(frozen=True)
class TrialEstimate:
    params: int
    lora_params: int
    memory_gib: float  # on a GPU, bf16
    tokens: int
    seconds: float


def estimate_trial(trial: TrialSpec, shape: ModelShape, device: str, gpu_fraction: float = 1.0,
                   avg_tokens_per_row: int = 120, eval_rows: int | None = None) -> TrialEstimate:
    """`eval_rows`: questions the evaluation asks (default: the synthetic held-out set's)."""
    tr = trial.train
    seq = min(tr.max_seq_len, avg_tokens_per_row)
    micro = tr.micro_batch if tr.micro_batch != "auto" else tr.batch_size  # auto: at most the whole batch
    tokens_per_micro = micro * seq
    lora = adapter_params_of(trial, shape)
    memory = (shape.params * 2 + lora * LORA_BYTES_PER_PARAM
              + tokens_per_micro * shape.layers * shape.hidden * ACT_BYTES_PER_TOKEN_LAYER_HIDDEN
              + _logit_tokens(tr, tokens_per_micro) * shape.vocab * LOGIT_BYTES_PER_TOKEN_VOCAB) / 2**30
    per_step = tr.batch_size * seq if tr.micro_batch == "auto" else tr.grad_accum * tokens_per_micro
    rows = trial.volume * (len(trial.subtasks) if trial.data.mode == "per_subtask" else 1)
    tokens = budget_steps(tr, rows) * per_step if trial.kind == "trial" else 0  # epochs: the nominal rows
    if device == "gpu":
        rate = GPU_ANCHOR[1] * (GPU_ANCHOR[0] / shape.params) ** GPU_EXPONENT * gpu_fraction
    else:
        rate = CPU_TINY_TOKENS_PER_S * CPU_TINY_PARAMS / shape.params
    n_questions = eval_rows if eval_rows is not None else trial.eval.per_subtask * SYNTHETIC_SUBTASKS
    seconds = tokens / rate + n_questions * EVAL_SECONDS_PER_QUESTION[device] * max(shape.params / 1e8, 1)
    return TrialEstimate(shape.params, lora, memory, tokens, seconds)


def wall_hours(seconds: list[float], gpus: int, gpu_per_trial: float) -> float:
    """Hours to run trials of these lengths on `gpus` GPUs, `gpu_per_trial` each (0.25 packs four on
    one GPU; 2 takes two whole GPUs): longest trials first, each onto the slot that frees first."""
    slots = [0.0] * max(int(gpus / gpu_per_trial + 1e-9), 1)
    for s in sorted(seconds, reverse=True):
        slots[slots.index(min(slots))] += s
    return max(slots) / 3600


def plan_summary(spec: SweepSpec, trials: list[TrialSpec], eval_rows: int | None = None) -> dict[str, Any]:
    """Design checks and resource estimates for a sweep, as a plain dict (printed or --json).
    `eval_rows`: the evaluation's questions per trial, when the sets were read (harness.sweep.preflight)."""
    real = [t for t in trials if t.kind == "trial"]
    seeds_per_cell: dict[str, int] = {}
    for t in real:
        seeds_per_cell[t.cell_id] = seeds_per_cell.get(t.cell_id, 0) + 1
    summary: dict[str, Any] = {
        "trials": len(trials), "cells": len(seeds_per_cell),
        "seeds_per_cell": sorted(set(seeds_per_cell.values())),
        "balanced": len(set(seeds_per_cell.values())) <= 1, "warnings": [],
    }
    shape = model_shape(spec.base_model)
    if shape is None:
        summary["warnings"].append(f"no shape known for {spec.base_model!r}: no memory or time estimate "
                                   "(give a local model directory to get one)")
        return summary
    gpu = spec.resources.gpu
    device = "cpu" if gpu == 0 or (gpu == "auto" and not spec.resources.gpu_memory_gib) else "gpu"
    fraction = 1.0 if gpu in ("auto", 0) else min(float(gpu), 1.0)
    # Seeds of one cell share every input of an estimate (kind, capacity object, volume, train):
    # estimate each distinct one once, which keeps `plan` of 10^5 trials fast
    distinct: dict[tuple[str, int, int], TrialEstimate] = {}
    for t in trials:
        key = (t.kind, id(t.capacity), t.volume)
        if key not in distinct:
            distinct[key] = estimate_trial(t, shape, device, fraction, eval_rows=eval_rows)
    estimates = [distinct[(t.kind, id(t.capacity), t.volume)] for t in trials]
    peak = max(e.memory_gib for e in estimates)
    total_s = sum(e.seconds for e in estimates)
    summary.update({
        "device": device, "base_params": shape.params,
        "capacity": capacity_table(trials, shape),
        "gpu_memory_gib_per_trial": round(peak, 2),
        "trial_seconds": round(total_s / max(len(trials), 1), 1),
        "serial_hours": round(total_s / 3600, 3),
        "gpu_hours": round(total_s * fraction / 3600, 3) if device == "gpu" else 0.0,
    })
    if device == "gpu":
        per_trial = float(gpu) if gpu != "auto" else 1.0
        summary["wall_hours"] = {str(n): round(wall_hours([e.seconds for e in estimates], n, per_trial), 3)
                                 for n in WALL_CLOCK_GPUS}
    declared = spec.resources.gpu_memory_gib
    if device == "gpu" and declared and peak > declared * fraction:
        summary["warnings"].append(
            f"a trial needs about {peak:.1f} GiB but gets {declared * fraction:.1f} GiB "
            f"({fraction:g} of a {declared:g} GiB GPU): lower train.micro_batch or raise resources.gpu")
    if not summary["balanced"]:
        summary["warnings"].append(f"unbalanced design: cells have {summary['seeds_per_cell']} seeds")
    if min(seeds_per_cell.values(), default=0) < 2:
        summary["warnings"].append("one seed per cell: the analysis will have no confidence intervals")
    return summary


def format_count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"
