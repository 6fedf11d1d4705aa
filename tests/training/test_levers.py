"""Speed levers change speed and memory, not the gradients."""

from __future__ import annotations

import pytest
import torch

from harness.training.batching import collate
from harness.training.levers import compile_decoder_layers, enable_activation_checkpointing, make_adamw
from harness.training.losses import causal_lm_loss
from .test_losses import examples, small_lora_model


def lora_grads(model, batch, loss_fn):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss_fn(model, batch), params)


@pytest.mark.parametrize("loss", ["plain", "chunked"])
def test_activation_checkpointing_keeps_the_gradients(loss):
    fn = (lambda m, b: m(**b, use_cache=False).loss) if loss == "plain" else (lambda m, b: causal_lm_loss(m, b, 8))
    batch = collate(examples(), 0)
    want = lora_grads(small_lora_model(), batch, fn)
    model = small_lora_model()
    enable_activation_checkpointing(model)
    model.train()
    assert model.get_base_model().model.gradient_checkpointing
    for got, ref in zip(lora_grads(model, batch, fn), want):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_compile_wraps_every_decoder_layer_lazily():
    model = small_lora_model()
    assert compile_decoder_layers(model) == 2  # nothing is compiled until the first forward pass
    assert all(layer._compiled_call_impl is not None for layer in model.get_base_model().model.layers)


def test_make_adamw_fused_flag():
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert make_adamw(params, 1e-3, fused=True).defaults["fused"] is True
    assert not make_adamw(params, 1e-3).defaults["fused"]
