"""Pre-launch estimates for `harness plan`: model shape -> parameters, memory, time, GPU-hours.

All numbers are estimates for planning, calibrated on measured anchors, and labelled as such:
- GPU memory per trial = bf16 weights + LoRA weights/grads/AdamW states (fp32) + activations
  (115 bytes per token x layer x hidden unit, the mean of the DESIGN.md section 8 anchors for the
  Qwen2.5-0.5B and 7B shapes under plain transformers + peft) + fp32 logits and their gradient
  (10 bytes per token x vocabulary entry).
- GPU tokens/s follows a power law through the same anchors (52.7k tok/s at 0.49B params, 10.1k at
  7.6B on one H200); a fractional GPU gets its share. CPU tokens/s scales from builtin:tiny's rate.
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import SweepSpec, TrialSpec

ACT_BYTES_PER_TOKEN_LAYER_HIDDEN = 115.0
LOGIT_BYTES_PER_TOKEN_VOCAB = 10.0
GPU_ANCHOR = (0.494e9, 52_700.0)  # (params, tokens/s) Qwen2.5-0.5B, rank 16, one H200
GPU_EXPONENT = 0.60  # tokens/s ~ params^-0.60 between the 0.5B and 7B anchors
CPU_TINY_TOKENS_PER_S = 2_000.0  # builtin:tiny LoRA on one CPU core, measured here
CPU_TINY_PARAMS = 0.87e6
EVAL_SECONDS_PER_QUESTION = {"cpu": 0.04, "gpu": 0.01}  # batched greedy, tiny answers

# Shapes of models a sweep may name without the weights being present (hub ids).
KNOWN_SHAPES: dict[str, dict[str, int]] = {
    "qwen2.5-0.5b": dict(hidden=896, layers=24, inter=4864, heads=14, kv_heads=2, vocab=151936, tied=1),
    "qwen2.5-1.5b": dict(hidden=1536, layers=28, inter=8960, heads=12, kv_heads=2, vocab=151936, tied=1),
    "qwen2.5-3b": dict(hidden=2048, layers=36, inter=11008, heads=16, kv_heads=2, vocab=151936, tied=1),
    "qwen2.5-7b": dict(hidden=3584, layers=28, inter=18944, heads=28, kv_heads=4, vocab=152064, tied=0),
    "smollm2-135m": dict(hidden=576, layers=30, inter=1536, heads=9, kv_heads=3, vocab=49152, tied=1),
}


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    inter: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    @property
    def params(self) -> int:
        h, kv = self.hidden, self.kv_dim
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * self.inter + 2 * h
        return self.layers * per_layer + self.vocab * h * (1 if self.tied else 2)

    def lora_params(self, rank: int, targets: str | list[str] = "all-linear") -> int:
        h, kv, i = self.hidden, self.kv_dim, self.inter
        attn = rank * ((h + h) + 2 * (h + kv) + (h + h))
        mlp = rank * (2 * (h + i) + (i + h))
        per_layer = {"attention": attn, "mlp": mlp}.get(targets if isinstance(targets, str) else "", attn + mlp)
        return self.layers * per_layer


def model_shape(model_id: str) -> ModelShape | None:
    """The shape of a builtin, a local model directory, or a known hub family; None if unknown."""
    if model_id == "builtin:tiny":
        from harness.model import TINY_SHAPE as s

        return ModelShape(s["hidden_size"], s["num_hidden_layers"], s["intermediate_size"],
                          s["num_attention_heads"], s["num_key_value_heads"], s["vocab_size"], True)
    config_path = Path(model_id) / "config.json"
    if config_path.exists():
        import json

        c = json.loads(config_path.read_text())
        return ModelShape(c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"],
                          c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"]),
                          c["vocab_size"], bool(c.get("tie_word_embeddings", False)))
    key = model_id.lower().split("/")[-1].removeprefix("builtin:").replace("-instruct", "")
    shape = KNOWN_SHAPES.get(key)
    return ModelShape(**{**shape, "tied": bool(shape["tied"])}) if shape else None


@dataclass(frozen=True)
class TrialEstimate:
    params: int
    lora_params: int
    memory_gib: float  # on a GPU, bf16
    tokens: int
    seconds: float


def estimate_trial(trial: TrialSpec, shape: ModelShape, device: str, gpu_fraction: float = 1.0,
                   avg_tokens_per_row: int = 120) -> TrialEstimate:
    tr = trial.train
    seq = min(tr.max_seq_len, avg_tokens_per_row)
    tokens_per_micro = tr.micro_batch * seq
    lora = shape.lora_params(max(trial.lora_rank, 1), tr.target_modules)
    memory = (shape.params * 2 + lora * 16
              + tokens_per_micro * shape.layers * shape.hidden * ACT_BYTES_PER_TOKEN_LAYER_HIDDEN
              + tokens_per_micro * shape.vocab * LOGIT_BYTES_PER_TOKEN_VOCAB) / 2**30
    tokens = tr.steps * tr.grad_accum * tokens_per_micro if trial.kind == "trial" else 0
    if device == "gpu":
        rate = GPU_ANCHOR[1] * (GPU_ANCHOR[0] / shape.params) ** GPU_EXPONENT * gpu_fraction
    else:
        rate = CPU_TINY_TOKENS_PER_S * CPU_TINY_PARAMS / shape.params
    n_questions = trial.eval.per_subtask * 19  # synthetic held-out: every subtask
    seconds = tokens / rate + n_questions * EVAL_SECONDS_PER_QUESTION[device] * max(shape.params / 1e8, 1)
    return TrialEstimate(shape.params, lora, memory, tokens, seconds)


def plan_summary(spec: SweepSpec, trials: list[TrialSpec]) -> dict[str, Any]:
    """Design checks and resource estimates for a sweep, as a plain dict (printed or --json)."""
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
    estimates = [estimate_trial(t, shape, device, fraction) for t in trials]
    peak = max(e.memory_gib for e in estimates)
    total_s = sum(e.seconds for e in estimates)
    summary.update({
        "device": device, "base_params": shape.params,
        "lora_params": {r: shape.lora_params(r, spec.train.target_modules) for r in spec.grid.lora_rank},
        "gpu_memory_gib_per_trial": round(peak, 2),
        "trial_seconds": round(total_s / max(len(trials), 1), 1),
        "serial_hours": round(total_s / 3600, 3),
        "gpu_hours": round(total_s * fraction / 3600, 3) if device == "gpu" else 0.0,
    })
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
