"""Mixture of LoRA experts (MoLE): per adapted linear layer, E LoRA experts and a token-level router.

    y = W x + s * sum_{e in topk(p(x))} p_e(x) * B_e A_e dropout(x),   p(x) = softmax(R x)

Design choices (each one is a knob a researcher may want to change, so they are named here):
- Gates are the router's softmax probabilities of the chosen experts, not renormalised over the
  top-k (Switch-Transformer style). So the task loss reaches the router for every k, including
  k = 1, and with one expert the layer is exactly plain LoRA (p = 1).
- Load balancing: the Switch-Transformer auxiliary loss E * sum_e f_e * P_e per layer, where f_e is
  the share of (token, slot) assignments that went to expert e and P_e its mean router probability;
  it is 1 when the load is even. The trainer adds `router_aux_weight` x the mean over layers.
  Every token position counts, padding included (cheap, and padding is a small share after the
  length-bucketed batching).
- Experts run densely as two batched einsums over stacked (E, r, in) and (E, out, r) tensors, with
  the gates applied between them: no (tokens, E, out) tensor is built and there is no per-expert
  Python loop. With small ranks the dense cost (E r (in + out) per token) is below one LoRA of rank
  E r, so sparse dispatch would not pay.
- Initialisation follows peft's LoRA: A Kaiming-uniform (a = sqrt(5)), B zero, so the adapted model
  starts as the base model; the router is small-random so tokens spread over experts from step one.
- Why not peft LoRA layers: peft sums active adapters with fixed weights; a router needs per-token
  weights between the A and B products. The experts keep peft's conventions instead: frozen base,
  target-module names, adapter-only checkpoints (safetensors), scaling alpha / r (or alpha / sqrt(r)).
- Merging into the base weights is impossible (the mixture depends on each token) and is refused.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class MoleLinear(nn.Module):
    """A frozen nn.Linear plus E routed LoRA experts."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float, experts: int, top_k: int,
                 dropout: float = 0.0):
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k {top_k} must be between 1 and experts {experts}")
        self.base_layer = base
        self.scaling, self.top_k = scaling, top_k
        d_in, d_out = base.in_features, base.out_features
        device = base.weight.device
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        self.mole_A = nn.Parameter(torch.empty(experts, rank, d_in, device=device, dtype=dtype))
        self.mole_B = nn.Parameter(torch.zeros(experts, d_out, rank, device=device, dtype=dtype))
        self.mole_router = nn.Parameter(torch.empty(experts, d_in, device=device, dtype=dtype))
        for e in range(experts):  # peft's LoRA A init, expert by expert
            nn.init.kaiming_uniform_(self.mole_A.data[e], a=math.sqrt(5))
        nn.init.normal_(self.mole_router, std=1.0 / math.sqrt(d_in))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.aux_loss: torch.Tensor | None = None  # load-balancing loss of the last forward pass

    @property
    def experts(self) -> int:
        return self.mole_A.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        h_in = x.to(self.mole_A.dtype)
        probs = torch.softmax(h_in @ self.mole_router.t(), dim=-1)  # (..., E)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter(-1, top_i, top_p)
        low = torch.einsum("...i,eri->...er", self.dropout(h_in), self.mole_A) * gates.unsqueeze(-1)
        delta = torch.einsum("...er,eor->...o", low, self.mole_B)
        if self.training:
            self.aux_loss = self._balance_loss(probs, top_i)
        return out + (delta * self.scaling).to(out.dtype)

    def _balance_loss(self, probs: torch.Tensor, top_i: torch.Tensor) -> torch.Tensor:
        flat_p = probs.reshape(-1, self.experts)
        counts = torch.zeros(self.experts, device=probs.device, dtype=probs.dtype)
        counts.scatter_add_(0, top_i.reshape(-1), torch.ones_like(top_i.reshape(-1), dtype=probs.dtype))
        share = counts / counts.sum()
        return self.experts * (share * flat_p.mean(0)).sum()


def target_linear_names(model: nn.Module, targets: str | list[str]) -> list[str]:
    """Qualified names of the linear layers to adapt: a named set, or module names matched by suffix.
    "all-linear" takes every nn.Linear except the output head, as peft does."""
    from harness.shapes import TARGET_SETS

    head = model.get_output_embeddings()
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module is head:
            continue
        last = name.rsplit(".", 1)[-1]
        if targets == "all-linear" or last in (TARGET_SETS.get(targets, ()) if isinstance(targets, str) else targets):
            names.append(name)
    if not names:
        raise ValueError(f"target_modules {targets!r} matches no linear layer of this model")
    return names


def attach_mole(model: nn.Module, *, rank: int, scaling: float, experts: int, top_k: int,
                targets: str | list[str], dropout: float = 0.0) -> nn.Module:
    """Freeze the model and swap each target linear layer for a MoleLinear, in place."""
    for param in model.parameters():
        param.requires_grad_(False)
    for name in target_linear_names(model, targets):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, MoleLinear(getattr(parent, child), rank, scaling, experts, top_k, dropout))
    return model


def mole_layers(model: nn.Module) -> list[MoleLinear]:
    return [m for m in model.modules() if isinstance(m, MoleLinear)]


def balance_loss(layers: list[MoleLinear]) -> torch.Tensor | None:
    """Mean load-balancing loss over the MoLE layers' last forward pass (`mole_layers(model)`, found
    once: the trainer asks for it every micro-batch)."""
    losses = [m.aux_loss for m in layers if m.aux_loss is not None]
    return torch.stack(losses).mean() if losses else None


def mole_state_dict(model: nn.Module) -> dict[str, Any]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if ".mole_" in k}
