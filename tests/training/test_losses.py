"""The chunked causal-LM loss equals transformers' loss (value and LoRA gradients), padded and packed."""

from __future__ import annotations

import random

import pytest
import torch

from harness.training.batching import Example, collate, collate_packed
from harness.training.losses import IGNORE_INDEX
from harness.training.losses import ChunkedLossModel, causal_lm_loss, causal_lm_parts, selected_cross_entropy

VOCAB = 300


def small_lora_model(tied: bool = True, dtype: torch.dtype = torch.float32, lm_head_lora: bool = False):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=tied,
                         max_position_embeddings=512)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(dtype)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # init_lora_weights=False: B is random too, so every LoRA parameter gets a non-trivial gradient.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets + (["lm_head"] if lm_head_lora else []),
                      init_lora_weights=False, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def examples(n: int = 5, seed: int = 0) -> list[Example]:
    """Instruction-shaped rows: a prompt labelled -100, then a short answer."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt, answer = rng.randint(5, 30), rng.randint(1, 6)
        ids = [rng.randrange(2, VOCAB) for _ in range(prompt + answer)]
        out.append(Example(ids, [IGNORE_INDEX] * prompt + ids[prompt:], "s"))
    return out


BATCHES = {"padded": lambda ex: collate(ex, 0), "packed": collate_packed}


def loss_and_grads(model, batch, loss_fn):
    params = [p for p in model.parameters() if p.requires_grad]
    loss = loss_fn(model, batch)
    return loss.detach(), torch.autograd.grad(loss, params)


def reference(model, batch):
    return model(**batch, use_cache=False).loss


@pytest.fixture(scope="module")
def model():
    return small_lora_model()


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("impl", ["checkpoint", "fused"])
@pytest.mark.parametrize("chunk", [1, 7, 2048])
def test_equals_transformers_loss_and_lora_gradients_fp32(model, layout, impl, chunk):
    batch = BATCHES[layout](examples())
    ref_loss, ref_grads = loss_and_grads(model, batch, reference)
    loss, grads = loss_and_grads(model, batch, lambda m, b: causal_lm_loss(m, b, chunk, impl=impl))
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-5)
    assert len(grads) == 2 * 7 * 2  # A and B of 7 projections x 2 layers: all of them reached
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["checkpoint", "fused"])
def test_untied_head(impl):
    model = small_lora_model(tied=False)
    batch = collate(examples(), 0)
    ref_loss, ref_grads = loss_and_grads(model, batch, reference)
    loss, grads = loss_and_grads(model, batch, lambda m, b: causal_lm_loss(m, b, 4, impl=impl))
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_bf16_within_tolerance():
    model = small_lora_model(dtype=torch.bfloat16)
    batch = collate_packed(examples(4))
    ref_loss, ref_grads = loss_and_grads(model, batch, reference)
    for impl in ("checkpoint", "fused"):
        loss, grads = loss_and_grads(model, batch, lambda m, b: causal_lm_loss(m, b, 8, impl=impl))
        assert loss.dtype == torch.float32  # the cross-entropy runs in fp32, as transformers upcasts
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-2)
        for got, want in zip(grads, ref_grads):
            cos = torch.nn.functional.cosine_similarity(got.float().flatten(), want.float().flatten(), dim=0)
            assert cos > 0.99
            assert (got.float().norm() / want.float().norm()).item() == pytest.approx(1, abs=0.02)


def test_lm_head_sees_only_labelled_positions_a_chunk_at_a_time(model):
    batch = collate(examples(6), 0)
    _, head = causal_lm_parts(model)
    rows: list[int] = []
    hook = head.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    try:
        causal_lm_loss(model, batch, chunk_tokens=4).backward()
    finally:
        hook.remove()
    labelled = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert labelled < batch["labels"].numel() // 3  # most positions are prompt or padding
    assert max(rows) <= 4
    # forward once per chunk, then the checkpointed recompute in backward: every labelled row twice
    assert sum(rows) == 2 * labelled


def test_every_position_through_the_head_gives_the_same_loss(model):
    """select_labelled=False exists to measure the selection's saving; the value must not change."""
    batch = collate_packed(examples())
    ref_loss, ref_grads = loss_and_grads(model, batch, reference)
    loss, grads = loss_and_grads(model, batch, lambda m, b: causal_lm_loss(m, b, 16, select_labelled=False))
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="checkpoint"):
        causal_lm_loss(model, batch, impl="fused", select_labelled=False)


def test_num_items_in_batch_sums_then_divides(model):
    batch = collate(examples(), 0)
    labelled = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    mean = causal_lm_loss(model, batch)
    summed = causal_lm_loss(model, batch, num_items_in_batch=1)
    assert summed.item() == pytest.approx(mean.item() * labelled, rel=1e-5)


def test_no_labelled_position_gives_nan_like_transformers(model):
    batch = collate(examples(2), 0)
    batch["labels"][:] = IGNORE_INDEX
    loss = causal_lm_loss(model, batch)
    assert torch.isnan(loss) and torch.isnan(reference(model, batch))
    loss.backward()  # still a graph: nothing raises


def test_gradient_accumulation_is_unchanged():
    """Two half-loss backward passes leave the same .grad as transformers' loss does."""
    model = small_lora_model()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = {}
    for name, fn in {"plain": reference, "chunked": lambda m, b: causal_lm_loss(m, b, 8)}.items():
        for ex in (examples(3, seed=1), examples(3, seed=2)):
            (fn(model, collate_packed(ex)) / 2).backward()
        grads[name] = [p.grad.clone() for p in params]
        model.zero_grad(set_to_none=True)
    for got, want in zip(grads["chunked"], grads["plain"]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_lora_on_the_head_works_with_checkpoint_and_is_refused_by_fused():
    model = small_lora_model(lm_head_lora=True)
    batch = collate(examples(), 0)
    ref_loss, ref_grads = loss_and_grads(model, batch, reference)
    loss, grads = loss_and_grads(model, batch, lambda m, b: causal_lm_loss(m, b, 5))
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="nn.Linear"):
        causal_lm_loss(model, batch, impl="fused")


def test_as_a_module_and_under_ddp(model, tmp_path):
    """ChunkedLossModel(model)(**batch).loss is the drop-in; under DDP (one gloo rank) the gradients
    still reach every LoRA weight and equal transformers'."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model.zero_grad(set_to_none=True)  # earlier tests of this module-scoped model left .grad behind
    batch = collate_packed(examples())
    ref_loss, ref_grads = loss_and_grads(model, batch, reference)
    loss = ChunkedLossModel(model, 8)(**batch, use_cache=False).loss
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-5)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        net = DistributedDataParallel(ChunkedLossModel(model, 8))
        net(**batch, use_cache=False).loss.backward()
        params = [p for p in model.parameters() if p.requires_grad]
        for p, want in zip(params, ref_grads):
            torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-5)
    finally:
        model.zero_grad(set_to_none=True)
        dist.destroy_process_group()


def test_selected_cross_entropy_matches_full_cross_entropy():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True)
    hidden = torch.randn(23, 16, requires_grad=True)
    targets = torch.randint(0, 50, (23,))
    want = torch.nn.functional.cross_entropy(head(hidden), targets, reduction="sum")
    (want_h,) = torch.autograd.grad(want, hidden)
    for impl in ("checkpoint", "fused"):
        got = selected_cross_entropy(hidden, targets, head, 5, impl=impl)
        (got_h,) = torch.autograd.grad(got, hidden)
        assert got.item() == pytest.approx(want.item(), rel=1e-6)
        torch.testing.assert_close(got_h, want_h, rtol=1e-5, atol=1e-6)


def test_parts_unwrap_the_loss_module(model):
    decoder, head = causal_lm_parts(model)
    assert causal_lm_parts(ChunkedLossModel(model)) == (decoder, head)
    assert type(decoder).__name__ == "Qwen2Model" and head is model.get_base_model().lm_head


def test_unwrapping_errors_are_clear():
    with pytest.raises(TypeError, match="decoder/lm_head"):
        causal_lm_parts(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="chunk_tokens"):
        selected_cross_entropy(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), torch.nn.Linear(4, 3), 0)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["checkpoint", "fused"])
def test_cuda_bf16_matches_transformers(impl):
    model = small_lora_model(dtype=torch.bfloat16).cuda()
    for layout, make in BATCHES.items():
        batch = {k: v.cuda() for k, v in make(examples(16)).items()}
        ref_loss, ref_grads = loss_and_grads(model, batch, reference)
        loss, grads = loss_and_grads(model, batch, lambda m, b: causal_lm_loss(m, b, 32, impl=impl))
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-2), layout
        for got, want in zip(grads, ref_grads):
            cos = torch.nn.functional.cosine_similarity(got.float().flatten(), want.float().flatten(), dim=0)
            assert cos > 0.99, layout


def test_a_model_that_scales_its_logits_trains_with_the_plain_loss():
    """Granite divides its logits by config.logits_scaling after the head; the chunked loss would
    train on logits 8x too flat, so the trainer falls back to transformers' own loss."""
    from transformers import GraniteConfig, GraniteForCausalLM

    from harness.spec.schema import TrainSpec
    from harness.training.levers import apply_levers, uses_chunked_loss
    from harness.training.losses import causal_lm_parts, logits_postprocessing

    config = GraniteConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, logits_scaling=8.0)
    torch.manual_seed(0)
    model = GraniteForCausalLM(config)
    assert logits_postprocessing(model) == "logits_scaling=8.0"
    with pytest.raises(NotImplementedError, match="logits_scaling=8.0 is not applied"):
        causal_lm_parts(model)
    assert not uses_chunked_loss(model, TrainSpec(loss="chunked"))
    assert apply_levers(model, TrainSpec(loss="fused"), "cpu") is model  # model(**batch).loss: the right one
    config.logits_scaling = 1.0
    assert logits_postprocessing(model) is None and uses_chunked_loss(model, TrainSpec(loss="chunked"))
