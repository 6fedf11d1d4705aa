"""LoRA training on builtin:tiny: response-only labels, packing equals padding, the adapter learns."""

from __future__ import annotations

import pytest
import torch

from harness.capacity.adapters import attach
from harness.data.prompting import render_answer
from harness.errors import InputError
from harness.model import load_base_model
from harness.spec.schema import AdapterSpec, TrainSpec
from harness.tasks import synthetic
from harness.training.batching import (Example, collate, collate_packed, encode_example, pack_rows,
                                       packed_row_length)
from harness.training.loop import train_adapter
from harness.training.losses import IGNORE_INDEX


@pytest.fixture(scope="module")
def tiny():
    tokenizer, model, _ = load_base_model("builtin:tiny")
    return tokenizer, model


@pytest.fixture(scope="module")
def rows():
    return (synthetic.generate_rows("attribute_infer", "train", 3)
            + synthetic.generate_rows("query_ner", "train", 3))


def test_labels_cover_the_answer_and_eos_only(tiny, rows):
    tokenizer, _ = tiny
    ex = encode_example(rows[0], tokenizer, "raw", 256)
    supervised = [t for t in ex.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(supervised[:-1]) == " " + str(rows[0]["output_field"])  # raw: after a space
    assert supervised[-1] == tokenizer.eos_token_id
    n_prompt = ex.labels.index(supervised[0])
    assert all(t == IGNORE_INDEX for t in ex.labels[:n_prompt])
    assert ex.input_ids[n_prompt:] == supervised


def test_raw_examples_are_tokenised_as_the_running_text_they_continue(tiny, rows):
    """The answer's first token is the one the words get in running text (" pink", not "pink" after a
    newline): the tokens the pretraining corpus taught, which the tiny model's drills transfer from."""
    tokenizer, _ = tiny
    for row in rows:
        ex = encode_example(row, tokenizer, "raw", 512, mc_answer="option_text")
        answer = render_answer(row, "option_text")
        running = tokenizer(row["input_field"].rstrip() + " " + answer, add_special_tokens=False)["input_ids"]
        assert ex.input_ids == running + [tokenizer.eos_token_id]


def test_truncation_keeps_the_answer_and_the_prompt_tail(tiny, rows):
    tokenizer, _ = tiny
    full = encode_example(rows[0], tokenizer, "raw", 512)
    short = encode_example(rows[0], tokenizer, "raw", 24)
    assert len(short.input_ids) == 24
    assert short.input_ids[-8:] == full.input_ids[-8:] and short.labels[-3:] == full.labels[-3:]


@torch.no_grad()
def test_packed_loss_equals_padded_loss(tiny, rows):
    tokenizer, model = tiny
    examples = [encode_example(r, tokenizer, "raw", 256) for r in rows]
    padded = model(**collate(examples, tokenizer.pad_token_id), use_cache=False).loss
    packed = model(**collate_packed(examples), use_cache=False).loss
    assert packed.item() == pytest.approx(padded.item(), rel=1e-4)


@torch.no_grad()
def test_packed_samples_do_not_attend_across_boundaries(tiny, rows):
    tokenizer, model = tiny
    a, b = (encode_example(r, tokenizer, "raw", 256) for r in rows[:2])
    alone = model(input_ids=torch.tensor([b.input_ids]), use_cache=False).logits[0]
    packed = model(**{k: v for k, v in collate_packed([a, b]).items() if k != "labels"},
                   use_cache=False).logits[0, len(a.input_ids):]
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-4)


def _sized(*lengths: int) -> list[Example]:
    return [Example(list(range(1, n + 1)), [IGNORE_INDEX] + list(range(2, n + 1)), f"s{n}") for n in lengths]


def test_pack_rows_is_first_fit_decreasing_within_the_row_length():
    rows = pack_rows(_sized(20, 50, 10, 40, 30), 60)
    assert [[len(e.input_ids) for e in row] for row in rows] == [[50, 10], [40, 20], [30]]
    assert pack_rows(_sized(20, 50), None) == [_sized(20, 50)]  # None: one row
    with pytest.raises(ValueError, match="61-token sample"):
        pack_rows(_sized(61), 60)


def test_bounded_rows_pad_each_tail_as_its_own_sequence():
    batch = collate_packed(_sized(5, 3, 4), pad_id=0, pack_length=8)  # rows [5, 3] and [4 + 4 padding]
    assert batch["input_ids"].shape == (2, 8)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3, 0, 1, 2, 3]]
    assert batch["input_ids"][1, 4:].tolist() == [0] * 4
    assert batch["labels"][1, 4:].tolist() == [IGNORE_INDEX] * 4


@pytest.fixture
def kernel(tiny, request):
    """The tiny model with the attention implementation of the test's parameter, sdpa again after."""
    _, model = tiny
    model.set_attn_implementation(request.param)
    yield model
    model.set_attn_implementation("sdpa")


@pytest.fixture
def packed(tiny, rows):
    """(examples, row length, batch): rows one token longer than the longest + shortest samples, so
    some rows hold two samples and every row ends in padding."""
    tokenizer, _ = tiny
    examples = [encode_example(r, tokenizer, "raw", 256) for r in rows]
    lengths = [len(e.input_ids) for e in examples]
    length = max(lengths) + min(lengths) + 1
    return examples, length, collate_packed(examples, tokenizer.pad_token_id, pack_length=length)


@pytest.mark.parametrize("kernel", ["sdpa", "eager"], indirect=True)
@torch.no_grad()
def test_bounded_packed_rows_give_the_padded_loss(tiny, packed, kernel):
    tokenizer, _ = tiny
    examples, _, batch = packed
    padded = kernel(**collate(examples, tokenizer.pad_token_id), use_cache=False).loss
    assert 1 < batch["input_ids"].shape[0] < len(examples)  # several rows, some holding two samples
    assert kernel(**batch, use_cache=False).loss.item() == pytest.approx(padded.item(), rel=1e-4)


@pytest.mark.parametrize("kernel", ["sdpa", "eager"], indirect=True)
@torch.no_grad()
def test_samples_in_packed_rows_see_only_themselves(packed, kernel):
    examples, length, batch = packed
    logits = kernel(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    layout = pack_rows(examples, length)
    assert any(len(row) == 2 and sum(len(e.input_ids) for e in row) < logits.shape[1] for row in layout)
    for r, row in enumerate(layout):
        at = 0
        for e in row:
            alone = kernel(input_ids=torch.tensor([e.input_ids]), use_cache=False).logits[0]
            torch.testing.assert_close(logits[r, at : at + len(e.input_ids)], alone, rtol=1e-4, atol=1e-4)
            at += len(e.input_ids)


def test_the_row_length_follows_the_attention_kernel():
    assert packed_row_length(TrainSpec(packing=True, max_seq_len=256), longest=93) == 93
    assert packed_row_length(TrainSpec(packing=True, pack_length=1024), longest=93) == 1024
    assert packed_row_length(TrainSpec(packing=True, attention="flex_attention"), longest=93) is None
    assert packed_row_length(TrainSpec(packing=True, attention="flex_attention", pack_length=512), 93) == 512
    assert packed_row_length(TrainSpec(packing=True, attention="flash_attention_2"), longest=93) is None


@pytest.mark.slow
@torch.no_grad()
def test_flex_attention_packs_one_row_with_the_padded_loss(tiny, rows):
    """flex_attention builds a block mask from the position-id restarts (compiled on first use: ~30 s
    cold on this CPU, which is why only this one test runs it)."""
    tokenizer, model = tiny
    examples = [encode_example(r, tokenizer, "raw", 256) for r in rows]
    padded = model(**collate(examples, tokenizer.pad_token_id), use_cache=False).loss
    model.set_attn_implementation("flex_attention")
    try:
        packed = model(**collate_packed(examples, tokenizer.pad_token_id), use_cache=False).loss
    finally:
        model.set_attn_implementation("sdpa")
    assert packed.item() == pytest.approx(padded.item(), rel=1e-4)


def test_packed_training_learns_the_same_whatever_the_rows_and_kernel(rows):
    """Packing draws the same examples per step whatever the row length and attention kernel, so the
    loss curves agree up to float rounding. (Padded training buckets by length: other steps.)"""
    def run(**layout):
        tokenizer, model, _ = load_base_model("builtin:tiny")
        torch.manual_seed(0)  # the adapter's initialisation
        model = attach(model, AdapterSpec(rank=4, alpha=8.0)).model
        result = train_adapter(model, tokenizer, rows * 4, TrainSpec(steps=6, lr=5e-3, micro_batch=8, warmup_steps=1,
                            log_every=1, packing=True, **layout), seed=0, fmt="raw", device="cpu")
        assert model.config._attn_implementation == "sdpa"  # the training kernel is put back
        return result
    rows_of_the_longest = run()
    for layout in ({"pack_length": 4096}, {"pack_length": 160, "attention": "eager"}):
        other = run(**layout)
        assert [l for _, l in other.loss_curve] == pytest.approx([l for _, l in rows_of_the_longest.loss_curve],
                                                                 rel=1e-4)
        assert (other.tokens, other.tokens_per_subtask) == (rows_of_the_longest.tokens,
                                                            rows_of_the_longest.tokens_per_subtask)


@pytest.mark.parametrize("attention, message", [
    ("flash_attention_2", "train.attention: flash_attention_2 cannot run here"),
    ("flex_attention", "train.attention: flex_attention trains on CUDA only"),
])
def test_an_attention_kernel_that_cannot_train_here_is_named(tiny, rows, attention, message):
    tokenizer, _ = tiny
    _, model, _ = load_base_model("builtin:tiny")
    model = attach(model, AdapterSpec(rank=4, alpha=8.0)).model
    with pytest.raises(InputError, match=message):
        train_adapter(model, tokenizer, rows, TrainSpec(steps=1, attention=attention), seed=0, fmt="raw", device="cpu")
    assert model.config._attn_implementation == "sdpa"


def test_lora_training_lowers_the_loss_and_only_trains_the_adapter(rows):
    tokenizer, model, _ = load_base_model("builtin:tiny")
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    model = attach(model, AdapterSpec(rank=4, alpha=8.0)).model
    train_rows = synthetic.generate_rows("attribute_infer", "train", 64)
    result = train_adapter(model, tokenizer, train_rows, TrainSpec(steps=30, lr=5e-3, micro_batch=16,
                        log_every=5, warmup_steps=2), seed=0, fmt="raw", device="cpu")
    first, last = result.loss_curve[0][1], result.loss_curve[-1][1]
    assert last < first * 0.8, result.loss_curve
    assert 0 < result.trainable_params < sum(p.numel() for p in base.values()) * 0.2
    for name, p in model.get_base_model().named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, base[name.replace(".base_layer", "")]), name


def _curve(family: str, **train) -> list[float]:
    tokenizer, model, _ = load_base_model("builtin:tiny")
    extra = {"mole": dict(experts=2, top_k=1, router_aux_weight=0.01)}.get(family, {})
    adapted = attach(model, AdapterSpec(family=family, rank=4, alpha=8.0, **extra))
    rows = synthetic.generate_rows("attribute_infer", "train", 24)
    spec = TrainSpec(steps=4, lr=5e-3, micro_batch=8, log_every=1, warmup_steps=1, **train)
    return [loss for _, loss in train_adapter(adapted, tokenizer, rows, spec, seed=0, fmt="raw",
                                           device="cpu").loss_curve]


@pytest.mark.parametrize("family", ["lora", "mole"])
@pytest.mark.parametrize("levers", [{"loss": "chunked"}, {"loss": "fused"}, {"grad_checkpointing": True},
                                    {"loss": "chunked", "loss_chunk_tokens": 64}])
def test_speed_levers_train_the_same_as_the_plain_path(family, levers):
    plain = _curve(family, loss="plain")
    assert _curve(family, **levers) == pytest.approx(plain, rel=1e-4)


def test_auto_micro_batch_keeps_the_batch_size_on_the_cpu():
    from harness.training.loop import micro_batch_plan

    tokenizer, model, _ = load_base_model("builtin:tiny")
    examples = [encode_example(r, tokenizer, "raw", 128) for r in synthetic.generate_rows("query_ner", "train", 8)]
    spec = TrainSpec(micro_batch="auto", batch_size=24)
    assert micro_batch_plan(model, examples, spec, tokenizer.pad_token_id, "cpu", rank=4) == (24, 1, False)
    assert micro_batch_plan(model, examples, TrainSpec(micro_batch=8, grad_accum=3),
                            tokenizer.pad_token_id, "cpu", rank=4) == (8, 3, False)


def test_splitting_a_step_into_micro_batches_does_not_change_training():
    """The OOM retry and micro_batch auto change micro_batch x grad_accum, never the step."""
    def run(micro, accum):
        tokenizer, model, _ = load_base_model("builtin:tiny")
        torch.manual_seed(0)  # the same LoRA initialisation in both runs (a trial seeds before attaching)
        adapted = attach(model, AdapterSpec(rank=4, alpha=8.0))
        rows = synthetic.generate_rows("query_ner", "train", 20) + synthetic.generate_rows("attribute_infer", "train", 20)
        spec = TrainSpec(steps=4, lr=5e-3, micro_batch=micro, grad_accum=accum, log_every=1, warmup_steps=1)
        result = train_adapter(adapted, tokenizer, rows, spec, seed=0, fmt="raw", device="cpu")
        return result, {n: p.detach().clone() for n, p in adapted.model.named_parameters() if p.requires_grad}

    (whole, w1), (split, w2) = run(20, 1), run(5, 4)
    assert [l for _, l in split.loss_curve] == pytest.approx([l for _, l in whole.loss_curve], rel=1e-5)
    assert split.tokens == whole.tokens
    # Adam divides each gradient by its running RMS, so a rounding-level difference shows as ~1e-5, and
    # more where an element's gradient is near zero (up to 1.3e-4 here): the loss curve above is the exact check
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-3, atol=3e-4)


def test_steps_are_effective_batches_with_token_shares():
    from harness.training.batching import make_batches

    tokenizer, _, _ = load_base_model("builtin:tiny")
    examples = [encode_example(r, tokenizer, "raw", 128) for r in synthetic.generate_rows("query_ner", "train", 10)]
    step = next(make_batches(examples, 4, seed=0, pad_id=tokenizer.pad_token_id, packing=False, grad_accum=3))
    assert [len(m.batch["input_ids"]) for m in step] == [4, 4, 2]  # the 10 examples: one step of 12 at most
    assert sum(m.share for m in step) == pytest.approx(1.0)
    labelled = [int((m.batch["labels"][:, 1:] != IGNORE_INDEX).sum()) for m in step]
    assert [m.share for m in step] == pytest.approx([n / sum(labelled) for n in labelled])
    assert [m.tokens for m in step] == [int(m.batch["attention_mask"].sum()) for m in step]


def test_padded_batches_come_from_random_windows_not_one_length_stratum():
    """A whole-mixture length sort made each batch one length stratum (in a mixture, one or two
    subtasks); batches drawn from sorted windows of LENGTH_WINDOW_STEPS steps still pad little but
    mix lengths, and every epoch still visits every example once."""
    from harness.training.batching import LENGTH_WINDOW_STEPS, make_batches

    n = 4 * 4 * LENGTH_WINDOW_STEPS  # four windows of four-example steps
    examples = [Example(list(range(1, k + 2)), [IGNORE_INDEX] * k + [1], "") for k in range(n)]
    steps = make_batches(examples, 4, seed=0, pad_id=0, packing=False)
    epoch = [next(steps)[0].batch["attention_mask"].sum(-1).tolist() for _ in range(n // 4)]
    assert sorted(k for batch in epoch for k in batch) == [k + 1 for k in range(n)]
    spans = [max(batch) - min(batch) for batch in epoch]
    assert sum(spans) / len(spans) > 6  # a global sort gives 3 (four consecutive lengths) in every batch


def test_held_out_loss_is_the_same_with_the_chunked_loss(tiny, rows):
    from harness.training.loop import eval_loss

    tokenizer, model = tiny
    losses = [eval_loss(model, tokenizer, rows, TrainSpec(loss=loss), fmt="raw", device="cpu", batch_size=4)
              for loss in ("plain", "chunked")]
    assert 0 < losses[0] < 20 and losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_checkpointing_auto_turns_on_only_when_one_sample_does_not_fit(rows, monkeypatch):
    """micro_batch auto on a device where one sample fits only with activation checkpointing (the
    CUDA probe is stood in for: this machine has no GPU; tests/training/test_micro_batch.py covers the probe)."""
    from harness.training.loop import micro_batch_plan
    from harness.training.losses import ChunkedLossModel
    import harness.training.micro_batch

    asked = []

    def probe(model, sample_batch_fn, effective, device, *, grad_ckpt, **kwargs):
        asked.append(grad_ckpt)
        if not grad_ckpt:
            raise MemoryError("even micro-batch 1 does not fit")
        return 2, effective // 2

    monkeypatch.setattr(harness.training.micro_batch, "auto_micro_batch", probe)
    tokenizer, model, _ = load_base_model("builtin:tiny")
    model = attach(model, AdapterSpec(rank=4, alpha=8.0)).model
    examples = [encode_example(r, tokenizer, "raw", 128) for r in rows]
    spec = TrainSpec(micro_batch="auto", batch_size=8)
    assert micro_batch_plan(ChunkedLossModel(model), examples, spec, 0, "cuda", rank=4) == (2, 4, True)
    assert asked == [False, True] and model.is_activation_checkpointing
    asked.clear()
    with pytest.raises(MemoryError):  # grad_checkpointing false: the researcher said no
        micro_batch_plan(ChunkedLossModel(model), examples, spec.model_copy(update={"grad_checkpointing": False}),
                         0, "cuda", rank=4)
    assert asked == [False]
