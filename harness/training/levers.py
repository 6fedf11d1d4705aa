"""Training-speed levers that are not the loss: activation checkpointing, torch.compile, fused AdamW,
the attention kernel.

Each is one call on an already LoRA-wrapped model, so the trainer and bench/train_throughput.py switch
them one at a time; `apply_levers` applies what train.* chose, the loss lever included (the loss
itself is harness.training.losses). The micro-batch choice is harness.training.micro_batch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from harness.errors import InputError
from harness.spec.schema import TrainSpec
from harness.training.losses import ChunkedLossModel, causal_lm_parts, logits_postprocessing, unwrap_causal_lm

log = logging.getLogger(__name__)


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each decoder layer in backward (non-reentrant), keeping only the layer inputs.

    peft freezes the embeddings, so the decoder's input carries no grad; enable_input_require_grads
    makes it carry one, which reentrant checkpointing needs and non-reentrant tolerates. transformers 5
    renamed gradient_checkpointing_enable to activation_checkpointing_enable; both are handled.
    """
    kwargs = {"use_reentrant": False}
    if callable(getattr(model, "activation_checkpointing_enable", None)):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.enable_input_require_grads()
    model.config.use_cache = False  # a KV cache is incompatible with checkpointing in training


def compile_decoder_layers(model: nn.Module, **compile_kwargs: Any) -> int:
    """torch.compile every decoder layer in place (nn.Module.compile); returns how many.

    Per layer rather than the whole model: the graph breaks of the HF/peft wrappers (mask building,
    output dataclasses) stay outside, one compiled graph serves all the layers of a model, and
    losses.causal_lm_loss, which calls the decoder directly, still runs the compiled layers.
    dynamic=True (overridable): batch shapes vary from step to step, and compiling dynamic from the
    start saves the static-then-dynamic recompile. Two graphs remain, the first layer's (its input,
    the frozen embedding's output, needs no grad) and the others': warm up two steps before timing.
    """
    decoder, _ = causal_lm_parts(model)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise TypeError(f"{type(decoder).__name__} has no .layers to compile")
    for layer in layers:
        layer.compile(**{"dynamic": True, **compile_kwargs})
    return len(layers)


def make_adamw(params: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0, *,
               fused: bool = False) -> torch.optim.AdamW:
    """AdamW; fused=True runs the whole update as one kernel per dtype/device group (CUDA, and CPU on
    torch >= 2.4). The default (foreach) launches a handful of kernels per step instead of one per
    parameter; with LoRA's ~1k small tensors the fused kernel saves the rest of the launches."""
    params = list(params)
    if fused:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@contextlib.contextmanager
def attention_kernel(model: nn.Module, impl: str, device: str = "cuda") -> Iterator[None]:
    """Run the block with transformers' attention implementation `impl` ("auto": as loaded), then put
    the loaded one back, so evaluation and generation keep the model's default kernel.

    The kernel decides what packing costs: flash_attention_* runs packed rows as varlen sequences and
    flex_attention skips the cross-sample blocks; SDPA and eager build a dense block-diagonal mask.
    """
    if impl == "auto":
        yield
        return
    if impl == "flex_attention" and not device.startswith("cuda"):
        raise InputError("train.attention: flex_attention trains on CUDA only (torch has no CPU backward "
                         "for it); use sdpa on CPUs")
    causal = unwrap_causal_lm(model)
    loaded = causal.config._attn_implementation
    try:
        causal.set_attn_implementation(impl)
    except (ImportError, ValueError) as exc:
        raise InputError(f"train.attention: {impl} cannot run here ({exc}). Install what it needs on the "
                         f"workers, or use sdpa (the default)") from exc
    try:
        yield
    finally:
        causal.set_attn_implementation(loaded)


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
