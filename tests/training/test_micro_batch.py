"""Micro-batch choice: the memory arithmetic by hand, the search against oracles, the effective batch kept."""

from __future__ import annotations

import pytest

from harness.training.micro_batch import (GIB, analytic_micro_batch, auto_micro_batch, memory_model, pick_micro_batch,
                               search_micro_batch, shape_from_config, split_effective_batch)
from harness.shapes import ModelShape, model_shape

# hidden 8, 2 layers, MLP 16, 2 heads of 4 with 1 KV head (kv_dim 4), vocabulary 100, tied.
TOY = ModelShape(hidden=8, layers=2, inter=16, heads=2, kv_heads=1, vocab=100, tied=True)


def tiny_lora_model():
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=300, max_position_embeddings=512)
    return get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules="all-linear"))


def test_toy_shape_counts_by_hand():
    # per layer: q,o 8x8 + k,v 8x4 + gate,up,down 8x16 + 2 norms of 8 = 128 + 64 + 384 + 16 = 592
    assert TOY.params == 2 * 592 + 100 * 8 == 1984
    # rank 2 x (in + out): q 16, k 12, v 12, o 16, gate 24, up 24, down 24 = 128 per rank... x 2 x 2 layers
    assert TOY.lora_params(2) == 2 * 2 * 128 == 512


def test_memory_model_by_hand():
    plain = memory_model(TOY, 2)
    assert plain.fixed == 1984 * 2 + 512 * 16 == 12160  # bf16 weights + LoRA weight/grad/2 moments in fp32
    assert plain.workspace == 0
    assert plain.per_token == 2 * 8 * 115 + 100 * 10 == 2840  # activations + full-vocabulary logits
    chunked = memory_model(TOY, 2, loss="chunked", chunk_tokens=4)
    assert (chunked.per_token, chunked.workspace) == (1840, 4 * 100 * 10)
    ckpt = memory_model(TOY, 2, loss="chunked", grad_ckpt=True, chunk_tokens=4)
    assert ckpt.per_token == 2 * 8 * 2 + 8 * 115 == 952  # layer inputs + one layer recomputed
    assert plain.bytes_for(3, 10) == 12160 + 3 * 10 * 2840


def test_analytic_micro_batch_by_hand():
    plain = memory_model(TOY, 2)
    budget = 12160 + 3 * 10 * 2840
    assert analytic_micro_batch(plain, budget, 10) == 3
    assert analytic_micro_batch(plain, budget - 1, 10) == 2
    assert analytic_micro_batch(plain, 12160, 10) == 0  # the weights alone fill it
    chunked = memory_model(TOY, 2, loss="chunked", chunk_tokens=4)
    assert analytic_micro_batch(chunked, 12160 + 4000 + 5 * 10 * 1840, 10) == 5


@pytest.mark.parametrize("name,batch,loss,measured_gib", [
    ("qwen2.5-0.5b", 16, "plain", 63.5), ("qwen2.5-0.5b", 16, "chunked", 38.1),
    ("qwen2.5-7b", 8, "plain", 131.2), ("qwen2.5-7b", 8, "chunked", 90.0),
])
def test_estimate_is_within_a_quarter_of_the_measured_anchors(name, batch, loss, measured_gib):
    """DESIGN.md section 8: rank 16, rows of 1024 tokens, chunks of 4096. The estimate only picks the
    first size to probe, so a quarter off costs a probe or two, not a crash."""
    mem = memory_model(model_shape(name), 16, loss=loss, chunk_tokens=4096)
    assert mem.bytes_for(batch, 1024) / GIB == pytest.approx(measured_gib, rel=0.25)


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 8, 13, 16, 31, 64])
@pytest.mark.parametrize("start", [None, 1, 4, 20, 64])
def test_search_finds_the_largest_fitting_size(limit, start):
    asked: list[int] = []

    def fits(n: int) -> bool:
        asked.append(n)
        return n <= limit

    assert search_micro_batch(fits, 64, start) == limit
    assert len(asked) == len(set(asked))  # no size probed twice
    assert len(asked) <= 2 * 7 + 1  # doubling/halving plus bisection over 64 sizes


def test_search_respects_the_maximum_and_a_good_start_costs_little():
    asked: list[int] = []
    assert search_micro_batch(lambda n: asked.append(n) or True, 24, start=100) == 24
    assert asked == [24]
    asked.clear()
    assert search_micro_batch(lambda n: asked.append(n) or n <= 10, 64, start=10) == 10
    assert asked == [10, 20, 15, 12, 11]


def test_search_raises_when_nothing_fits():
    with pytest.raises(MemoryError, match="micro-batch of 1"):
        search_micro_batch(lambda n: False, 16, start=8)
    with pytest.raises(ValueError):
        search_micro_batch(lambda n: True, 0)


@pytest.mark.parametrize("target,cap,expected", [
    (16, 16, (16, 1)), (16, 100, (16, 1)), (16, 6, (4, 4)), (16, 1, (1, 16)),
    (12, 5, (4, 3)), (24, 10, (8, 3)), (13, 6, (1, 13)), (64, 20, (16, 4)),
])
def test_split_keeps_the_effective_batch(target, cap, expected):
    micro, accum = split_effective_batch(target, cap)
    assert (micro, accum) == expected
    assert micro * accum == target and micro <= cap


def test_pick_with_an_oracle_keeps_the_effective_batch():
    assert pick_micro_batch(None, None, 64, "cuda", 64, fits=lambda n: n <= 20) == (16, 4)
    assert pick_micro_batch(None, None, 64, "cuda", 8, fits=lambda n: True) == (8, 8)  # max_micro_batch caps
    # never past the target effective batch
    assert pick_micro_batch(None, None, 12, "cuda", None, fits=lambda n: n <= 100) == (12, 1)


def test_pick_off_cuda_does_not_probe():
    def boom(n):
        raise AssertionError("no batch is built off CUDA")

    assert pick_micro_batch(None, boom, 32, "cpu", 16) == (16, 2)
    assert pick_micro_batch(None, boom, 8, "cpu") == (8, 1)


def test_shape_from_a_transformers_config_matches_the_known_shape():
    from transformers import Qwen2Config

    config = Qwen2Config(hidden_size=896, num_hidden_layers=24, intermediate_size=4864, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
    assert shape_from_config(config) == model_shape("qwen2.5-0.5b")


def test_auto_off_cuda_is_the_plain_split():
    assert auto_micro_batch(None, None, 48, "cpu", rank=16, tokens_per_sample=256, max_micro_batch=16) == (16, 3)


def test_probe_logic_with_a_simulated_device(monkeypatch):
    """probe_fits' bookkeeping without a GPU: the CUDA memory calls are stubbed, the step runs on the CPU
    and raises torch.OutOfMemoryError past 12 samples; peaks past the budget count as not fitting."""
    import contextlib

    import torch

    from harness.training.micro_batch import probe_fits

    peak = {"bytes": 0}
    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: peak["bytes"])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.random, "fork_rng", lambda *a, **k: contextlib.nullcontext())
    weight = torch.nn.Parameter(torch.ones(3))

    def loss_fn(model, batch):
        n = batch["x"].shape[0]
        if n > 12:
            raise torch.OutOfMemoryError("simulated")
        peak["bytes"] = 100 * n
        return (weight * batch["x"].sum()).sum()

    model = torch.nn.Module()
    model.w = weight
    fits = probe_fits(model, lambda n: {"x": torch.ones(n, 2)}, "cpu", budget_bytes=1000, loss_fn=loss_fn)
    assert fits(4) and weight.grad is None  # gradients dropped after each probe
    assert not fits(11)  # ran, but its peak (1100) is past the budget
    assert not fits(13)  # out of memory, caught
    assert search_micro_batch(fits, 64, start=32) == 10
    assert split_effective_batch(64, 10) == (8, 8)


def test_auto_on_cuda_starts_the_probe_at_the_estimate(monkeypatch):
    """The CUDA branch's arithmetic, with the device calls stubbed and the probe replaced."""
    import torch

    import harness.training.micro_batch as mb

    model = tiny_lora_model()
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (10 * GIB, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: 1 * GIB)
    seen = {}
    monkeypatch.setattr(mb, "pick_micro_batch", lambda *a, **k: seen.update(k) or (8, 8))
    assert auto_micro_batch(model, None, 64, "cuda", rank=4, tokens_per_sample=100) == (8, 8)
    budget = 1 * GIB + 10 * GIB * 0.9 - 8 * lora
    assert seen["budget_bytes"] == pytest.approx(budget)
    mem = memory_model(shape_from_config(model.get_base_model().config), 4, loss="chunked")
    assert seen["start"] == analytic_micro_batch(mem, budget, 100) > 0


@pytest.mark.gpu
def test_probe_on_cuda_finds_a_size_within_a_budget():
    import torch

    from harness.training.micro_batch import probe_fits

    model = tiny_lora_model().cuda()

    def sample(n: int):
        ids = torch.randint(0, 300, (n, 256))
        return {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}

    base = torch.cuda.memory_allocated()
    assert probe_fits(model, sample, "cuda", budget_bytes=float("inf"))(4)
    per_sample = (torch.cuda.max_memory_allocated() - base) / 4
    micro, accum = pick_micro_batch(model, sample, 64, "cuda", 64, budget_bytes=base + per_sample * 10)
    assert 4 <= micro <= 16 and micro * accum == 64
    assert all(p.grad is None for p in model.parameters())
