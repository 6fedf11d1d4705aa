"""Model shapes without weights: what planning and capacity matching need to count parameters.

    shape = model_shape("Qwen/Qwen2.5-0.5B-Instruct")   # a builtin, a local dir, or a known family
    shape.linear_dims("attention")                      # [(in, out), ...] of one decoder layer

Nothing here imports torch: `harness plan` and sweep expansion use it before anything is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Shapes of models a sweep may name without the weights being present (hub ids).
KNOWN_SHAPES: dict[str, dict[str, int]] = {
    "qwen2.5-0.5b": dict(hidden=896, layers=24, inter=4864, heads=14, kv_heads=2, vocab=151936, tied=1),
    "qwen2.5-1.5b": dict(hidden=1536, layers=28, inter=8960, heads=12, kv_heads=2, vocab=151936, tied=1),
    "qwen2.5-3b": dict(hidden=2048, layers=36, inter=11008, heads=16, kv_heads=2, vocab=151936, tied=1),
    "qwen2.5-7b": dict(hidden=3584, layers=28, inter=18944, heads=28, kv_heads=4, vocab=152064, tied=0),
    "smollm2-135m": dict(hidden=576, layers=30, inter=1536, heads=9, kv_heads=3, vocab=49152, tied=1),
}

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
# The module sets a sweep names in capacity.target_modules ("all-linear" excludes the LM head, as peft does).
TARGET_SETS = {"all-linear": ATTENTION + MLP, "attention": ATTENTION, "mlp": MLP}


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

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear projection in one decoder layer."""
        h, kv, i = self.hidden, self.kv_dim, self.inter
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def linear_dims(self, targets: str | list[str]) -> list[tuple[int, int]] | None:
        """The adapted projections of one layer; None when a custom module name is not one we know."""
        names = TARGET_SETS[targets] if isinstance(targets, str) else targets
        dims = self.module_dims()
        if any(n not in dims for n in names):
            return None
        return [dims[n] for n in names]

    def lora_params(self, rank: int, targets: str | list[str] = "all-linear") -> int:
        dims = self.linear_dims(targets) or self.linear_dims("all-linear")
        return self.layers * sum(rank * (i + o) for i, o in dims)


def shape_from_config(config: Any) -> ModelShape:
    """The ModelShape of a transformers config: a loaded model's config object, or config.json's
    fields (Qwen2/Llama-style names)."""
    c = config if isinstance(config, Mapping) else config.to_dict()
    return ModelShape(c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["num_attention_heads"],
                      c.get("num_key_value_heads") or c["num_attention_heads"], c["vocab_size"],
                      bool(c.get("tie_word_embeddings", False)))


def model_shape(model_id: str) -> ModelShape | None:
    """The shape of a builtin, a local model directory, or a known hub family; None if unknown."""
    if model_id == "builtin:tiny":
        from harness.model import TINY_SHAPE

        return shape_from_config({**TINY_SHAPE, "tie_word_embeddings": True})
    config_path = Path(model_id) / "config.json"
    if config_path.exists():
        return shape_from_config(json.loads(config_path.read_text()))
    key = model_id.lower().split("/")[-1].removeprefix("builtin:").replace("-instruct", "")
    shape = KNOWN_SHAPES.get(key)
    return ModelShape(**{**shape, "tied": bool(shape["tied"])}) if shape else None
