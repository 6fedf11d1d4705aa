"""MoLE router numerics: one expert is plain LoRA, gradients reach every expert, balance loss by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.capacity.adapters import attach
from harness.capacity.mole import MoleLinear, balance_loss, mole_layers
from harness.model import load_base_model
from harness.spec.schema import AdapterSpec


def _linear(d_in=16, d_out=12, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out)


def test_one_expert_equals_plain_lora_on_the_model():
    tokenizer, base, _ = load_base_model("builtin:tiny")
    lora = attach(base, AdapterSpec(rank=4, alpha=8)).model
    _, base2, _ = load_base_model("builtin:tiny")
    mole = attach(base2, AdapterSpec(family="mole", rank=4, alpha=8, experts=1, top_k=1,
                                     router_aux_weight=0.0)).model
    torch.manual_seed(1)
    lora_weights = {n: p for n, p in lora.named_parameters() if "lora_" in n}
    for name, module in mole.named_modules():
        if isinstance(module, MoleLinear):
            a = lora_weights[f"base_model.model.{name}.lora_A.default.weight"]
            b = torch.randn_like(lora_weights[f"base_model.model.{name}.lora_B.default.weight"]) * 0.1
            lora_weights[f"base_model.model.{name}.lora_B.default.weight"].data.copy_(b)
            module.mole_A.data[0].copy_(a)
            module.mole_B.data[0].copy_(b)
    ids = tokenizer("Which category fits a steel water bottle?", return_tensors="pt")["input_ids"]
    torch.testing.assert_close(mole(input_ids=ids).logits, lora(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_output_is_the_gated_sum_of_the_chosen_experts():
    layer = MoleLinear(_linear(), rank=2, scaling=0.5, experts=3, top_k=2)
    nn.init.normal_(layer.mole_B)
    x = torch.randn(5, 16)
    probs = torch.softmax(x @ layer.mole_router.t(), -1)
    expected = layer.base_layer(x)
    for t in range(5):
        for e in probs[t].topk(2).indices.tolist():
            expected[t] += 0.5 * probs[t, e] * (layer.mole_B[e] @ (layer.mole_A[e] @ x[t]))
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_expert_and_the_router():
    layer = MoleLinear(_linear(), rank=2, scaling=1.0, experts=4, top_k=2)
    nn.init.normal_(layer.mole_B)  # B = 0 at init would leave A's gradient at zero
    layer.train()
    out = layer(torch.randn(64, 16))
    (out.pow(2).mean() + layer.aux_loss).backward()
    for e in range(4):
        assert layer.mole_A.grad[e].abs().sum() > 0, f"expert {e}: no gradient on A"
        assert layer.mole_B.grad[e].abs().sum() > 0, f"expert {e}: no gradient on B"
    assert layer.mole_router.grad.abs().sum() > 0
    assert layer.base_layer.weight.grad is not None  # a bare layer: the model wrapper freezes the base


def test_balance_loss_by_hand():
    layer = MoleLinear(_linear(), rank=2, scaling=1.0, experts=2, top_k=1)
    # Even load with uniform probabilities: E * sum(0.5 * 0.5) = 1
    probs = torch.full((4, 2), 0.5)
    assert layer._balance_loss(probs, torch.tensor([[0], [1], [0], [1]])).item() == pytest.approx(1.0)
    # Every token to expert 0 with probability 0.9: 2 * (1.0 * 0.9 + 0 * 0.1) = 1.8
    probs = torch.tensor([[0.9, 0.1]] * 4)
    assert layer._balance_loss(probs, torch.zeros(4, 1, dtype=torch.long)).item() == pytest.approx(1.8)


def test_model_level_balance_loss_and_frozen_base():
    tokenizer, base, _ = load_base_model("builtin:tiny")
    adapted = attach(base, AdapterSpec(family="mole", rank=2, alpha=4, experts=4, top_k=2,
                                       router_aux_weight=0.1))
    adapted.model.train()
    ids = tokenizer(["a steel bottle", "a cotton shirt"], return_tensors="pt", padding=True)["input_ids"]
    adapted.model(input_ids=ids)
    raw = balance_loss(mole_layers(adapted.model))
    assert 1.0 <= raw.item() <= 4.0  # 1 when perfectly even, E when all on one expert
    assert adapted.aux_loss().item() == pytest.approx(0.1 * raw.item())
    trainable = {n for n, p in adapted.model.named_parameters() if p.requires_grad}
    assert trainable and all(".mole_" in n for n in trainable)


def test_top_k_above_experts_is_refused():
    with pytest.raises(ValueError, match="top_k 3 must be between 1 and experts 2"):
        MoleLinear(_linear(), rank=2, scaling=1.0, experts=2, top_k=3)


def test_scaling_follows_the_alpha_rule():
    assert AdapterSpec(rank=16, alpha=32).scaling == 2.0
    assert AdapterSpec(rank=16, alpha=16, rslora=True).scaling == pytest.approx(16 / math.sqrt(16))
