"""Batched generation and the multiple-choice fast path, on builtin:tiny (CPU, a few seconds)."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")

from harness.data.mixture import build_eval_sets  # noqa: E402
from harness.data.prompting import MAX_NEW_TOKENS, format_prompt  # noqa: E402
from harness.evaluate import inference  # noqa: E402
from harness.evaluate.inference import (  # noqa: E402
    answer_lead_ids,
    count_options,
    digit_token_ids,
    generate_responses,
    mc_option_rows,
    respond_by_task_type,
)
from harness.spec.schema import EvalSpec  # noqa: E402

MC_PROMPT = "Which is a fruit?\n0. chair\n1. apple\n2. lamp\n3. sock\nAnswer: "


@pytest.fixture(scope="module")
def tiny():
    from harness.model import load_base_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a ~1M-parameter model gains nothing from threads on a shared machine
    tok, model, _ = load_base_model("builtin:tiny")
    yield tok, model
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def heldout() -> list[dict]:
    return build_eval_sets(EvalSpec(per_subtask=2))["synthetic-heldout"]


class _DigitBiasedHead(torch.nn.Module):
    """The tiny model's LM head plus a constant bias on the option digits 0-3: it then often
    answers with a digit, and which digit still depends on the prompt."""

    def __init__(self, head, bias):
        super().__init__()
        self.head, self.bias = head, bias

    def forward(self, hidden):
        return self.head(hidden) + self.bias


@pytest.fixture
def digit_model(tiny):
    tok, model = tiny
    head = model.lm_head
    bias = torch.zeros(model.config.vocab_size)
    bias[[i for d in range(4) for i in digit_token_ids(tok)[d]]] = 12.0  # digits win on most prompts, not all
    model.lm_head = _DigitBiasedHead(head, bias)
    yield model
    model.lm_head = head


def _mc(rows):
    return [r for r in rows if r["task_type"] == "multiple-choice"]


# ---------------------------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize("prompt, n", [
    (MC_PROMPT, 4),
    ("Q?\n 0. a\n1. b\n2. c\nAnswer: ", 3),  # EC-Guide MDM indents the first option
    ("Given:\n1. first item\n2. second item\nPick one:\n0. x\n1. y\nAnswer: ", 2),  # 1-based list first
    ("What is the weight of the paper?\nAnswer: ", 0),
    ("0. a\n1. b\n7. stray\n", 2),
])
def test_count_options(prompt, n):
    assert count_options(prompt) == n


class _SplitDigitTokenizer:
    """Spells '3' and '7' as two tokens, every other digit as one."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [100, ord(text[-1])] if text.strip() in ("3", "7") else [ord(c) for c in text]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_digit_token_ids_leaves_out_multi_token_digits():
    ids = digit_token_ids(_SplitDigitTokenizer())
    assert sorted(ids) == [0, 1, 2, 4, 5, 6, 8, 9]
    assert ids[0] == [ord("0")]  # " 0" is two tokens here, so only "0" counts


def test_mc_rows_with_unusable_digits_are_generated_with_a_log_line(caplog):
    rows = [{"task_type": "multiple-choice"}, {"task_type": "multiple-choice"},
            {"task_type": "multiple-choice"}, {"task_type": "retrieval"}]
    prompts = ["Q\n0. a\n1. b\n2. c\nAnswer: ", "Q\n0. a\n1. b\n2. c\n3. d\nAnswer: ", "Q\nAnswer: ",
               MC_PROMPT]
    with caplog.at_level(logging.WARNING, logger="harness.evaluate.inference"):
        fast = mc_option_rows(rows, prompts, _SplitDigitTokenizer())
    assert list(fast) == [0]  # row 1 needs '3'; row 2 lists no options; row 3 is not MC
    assert fast[0] == [[ord("0")], [ord("1")], [ord("2")]]
    assert "not single tokens" in caplog.text and "[3, 7]" in caplog.text
    assert "list no '0. ...' options" in caplog.text


def test_respond_by_task_type_uses_each_budget_and_keeps_row_order():
    rows = [{"task_type": t} for t in ["generation", "multiple-choice", "ranking", "multiple-choice"]]
    prompts = ["g" * 5, "m" * 9, "r", "m" * 2]
    calls = []

    def fake_generate(batch, max_new_tokens):
        calls.append((list(batch), max_new_tokens))
        return [f"{p}:{max_new_tokens}" for p in batch]

    out = respond_by_task_type(rows, prompts, fake_generate, batch_size=1)
    assert out == [f"{p}:{MAX_NEW_TOKENS[r['task_type']]}" for r, p in zip(rows, prompts)]
    mc_calls = [c for c in calls if c[1] == MAX_NEW_TOKENS["multiple-choice"]]
    assert [c[0] for c in mc_calls] == [["mm"], ["m" * 9]]  # shortest prompt first


# ---------------------------------------------------------------------------------------------
# On builtin:tiny


def test_mc_logits_agrees_with_generation_whenever_generation_answers_a_digit(tiny, digit_model, heldout):
    """builtin:tiny spells " 3" as one token, so the digits are read right after the prompt, where the
    biased model writes them (the LoRA test below covers a tokenizer that writes the space first)."""
    tok, _ = tiny
    rows = _mc(heldout)
    generated = generate_responses(digit_model, tok, rows, fmt="raw", batch_size=8, device="cpu")
    fast = generate_responses(digit_model, tok, rows, fmt="raw", batch_size=8, device="cpu",
                              mc_logits=True)
    generated = [g.lstrip() for g in generated]  # raw answers continue the prompt after a space
    digit_rows = [i for i, g in enumerate(generated)
                  if g[:1].isdigit() and int(g[0]) < count_options(rows[i]["input_field"])]
    assert len(digit_rows) >= len(rows) // 2, generated  # the bias makes most answers digits
    assert len({generated[i][0] for i in digit_rows}) > 1, "answers should not be all the same digit"
    assert [fast[i] for i in digit_rows] == [generated[i][0] for i in digit_rows]
    assert all(f.isdigit() and int(f) < count_options(r["input_field"]) for f, r in zip(fast, rows))


def test_mc_logits_leaves_other_task_types_to_generation(tiny, heldout):
    tok, model = tiny
    rows = _mc(heldout)[:4] + [r for r in heldout if r["task_type"] in ("retrieval", "ranking")][:4]
    plain = generate_responses(model, tok, rows, fmt="raw", batch_size=16, device="cpu")
    mixed = generate_responses(model, tok, rows, fmt="raw", batch_size=16, device="cpu", mc_logits=True)
    for row, a, b in zip(rows, plain, mixed):
        if row["task_type"] != "multiple-choice":
            assert a == b
        else:
            assert b.isdigit()
    assert tok.padding_side == "left" and tok.truncation_side == "right"  # restored as loaded


def test_mc_digits_that_are_not_single_tokens_fall_back_to_generation(tiny, digit_model, heldout,
                                                                      monkeypatch):
    tok, _ = tiny
    rows = _mc(heldout)[:6]
    generated = generate_responses(digit_model, tok, rows, fmt="raw", batch_size=8, device="cpu")
    only_0_to_2 = {d: ids for d, ids in digit_token_ids(tok).items() if d < 3}  # too few for 4 options
    monkeypatch.setattr(inference, "digit_token_ids", lambda _tok: only_0_to_2)
    fallback = generate_responses(digit_model, tok, rows, fmt="raw", batch_size=8, device="cpu",
                                  mc_logits=True)
    assert fallback == generated


def test_long_prompts_are_cut_from_the_left(tiny, digit_model):
    tok, _ = tiny
    padding = "filler words that do not matter\n" * 40
    tail_ids = tok(format_prompt(MC_PROMPT, tok, "raw"), add_special_tokens=False)["input_ids"]
    long_ids = tok(format_prompt(padding + MC_PROMPT, tok, "raw"), add_special_tokens=False)["input_ids"]
    assert len(long_ids) > 3 * len(tail_ids) and long_ids[-len(tail_ids):] == tail_ids
    rows = [{"input_field": p, "task_type": "multiple-choice"} for p in (MC_PROMPT, padding + MC_PROMPT)]
    for mc_logits in (False, True):
        short, long = generate_responses(digit_model, tok, rows, fmt="raw", batch_size=2, device="cpu",
                                         max_prompt_tokens=len(tail_ids), mc_logits=mc_logits)
        assert short == long


@pytest.mark.slow
def test_mc_logits_agrees_with_generation_after_lora_training(tiny):
    """The same agreement on a briefly fine-tuned model (its own answers, no bias); ~6 s on a CPU thread.
    Its tokenizer splits every digit off, as Qwen2's does, so it writes " 3" as a space then the digit
    and the fast path reads the digits after that space (answer_lead_ids). builtin:tiny's own BPE
    keeps " 3" whole, where the lead is empty."""
    import copy

    from tokenizers import Regex, pre_tokenizers

    from harness.capacity.adapters import attach
    from harness.spec.schema import TrainSpec
    from harness.spec.schema import AdapterSpec
    from harness.tasks import registry, synthetic
    from harness.training.loop import train_adapter

    whole, base = tiny
    assert answer_lead_ids(whole, "raw") == []
    tok = copy.deepcopy(whole)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"), tok.backend_tokenizer.pre_tokenizer])
    assert answer_lead_ids(tok, "raw") == tok(" ", add_special_tokens=False)["input_ids"]
    spec = TrainSpec(steps=30, lr=3e-3, warmup_steps=2, micro_batch=16)
    train = [r for s in registry.all_subtasks() for r in synthetic.generate_rows(s.id, "train", 16, seed=0)]
    model = attach(copy.deepcopy(base), AdapterSpec(rank=8, alpha=16)).model
    train_adapter(model, tok, train, spec, seed=0, fmt="raw", device="cpu")
    rows = _mc(build_eval_sets(EvalSpec(per_subtask=6))["synthetic-heldout"])
    generated = generate_responses(model, tok, rows, fmt="raw", batch_size=16, device="cpu")
    fast = generate_responses(model, tok, rows, fmt="raw", batch_size=16, device="cpu", mc_logits=True)
    generated = [g.lstrip() for g in generated]  # raw answers continue the prompt after a space
    digit_rows = [i for i, g in enumerate(generated) if g[:1].isdigit()]
    assert len(digit_rows) >= len(rows) // 2
    assert [fast[i] for i in digit_rows] == [generated[i][0] for i in digit_rows]


def _unpadded_logprob(model, tok, prompt: str, text: str) -> float:
    """The option's summed log-probability, one unpadded sequence at a time (the reference)."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    a = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + a])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    return float(sum(logprobs[len(p) - 1 + i, t] for i, t in enumerate(a)))


def test_option_text_answers_pick_the_likeliest_continuation_whatever_the_padding(tiny, heldout):
    from harness.data.prompting import option_texts
    from harness.evaluate.inference import option_scores

    tok, model = tiny
    rows = [r for r in heldout if r["task_type"] == "multiple-choice"][:8]
    prompts = [format_prompt(r["input_field"], tok, "raw") for r in rows]
    options = [option_texts(r["input_field"]) for r in rows]
    assert all(len(o) >= 2 for o in options)
    expected = [max(range(len(o)), key=lambda k: _unpadded_logprob(model, tok, p, o[k]))
                for p, o in zip(prompts, options)]
    scores = option_scores(model, tok, prompts, options, [None] * len(prompts), batch_size=5, device="cpu")
    assert [mine.index(max(mine)) for mine in scores] == expected


def test_option_text_responses_are_the_option_numbers(tiny, heldout):
    tok, model = tiny
    rows = heldout[:40]
    responses = generate_responses(model, tok, rows, fmt="raw", batch_size=16, device="cpu",
                                   mc_answer="option_text")
    for row, response in zip(rows, responses):
        if row["task_type"] == "multiple-choice":
            assert response.isdigit() and int(response) < count_options(row["input_field"])


def test_choice_text_orders_listed_candidates_by_their_likelihood_as_the_first_item(tiny, heldout):
    from harness.data.prompting import candidate_texts, continuation
    from harness.evaluate.inference import LIST_END, option_scores
    from harness.evaluate.parsers import parse_ranking, parse_retrieval

    tok, model = tiny
    rows = [r for r in heldout if r["task_type"] in ("ranking", "retrieval")][:12]
    assert {r["task_type"] for r in rows} == {"ranking", "retrieval"}
    responses = generate_responses(model, tok, rows, fmt="raw", batch_size=16, device="cpu",
                                   mc_answer="choice_text")
    prompts = [format_prompt(r["input_field"], tok, "raw") for r in rows]
    texts = [[continuation(t, "raw") for t in candidate_texts(r["input_field"])] for r in rows]
    scores = option_scores(model, tok, prompts, texts, [LIST_END] * len(rows), batch_size=16, device="cpu")
    for row, response, mine in zip(rows, responses, scores):
        order = [int(k) for k in response.split(",")]
        assert [mine[k - 1] for k in order] == sorted(mine, reverse=True)[: len(order)]
        if row["task_type"] == "ranking":  # a permutation of every candidate: always parses
            assert sorted(order) == list(range(1, len(mine) + 1)) and parse_ranking(response) == order
        else:
            assert len(set(order)) == 3 and parse_retrieval(response) == order


# ---------------------------------------------------------------------------------------------
# option_scores: one prompt forward, options from its KV cache


def _scoring_set(tok, n=5):
    """Multiple-choice (4 options, EOS after) and retrieval (7 candidates, LIST_END after) rows,
    interleaved, plus a one-option and a no-option prompt: uneven option counts in every group."""
    from harness.data.prompting import candidate_texts, option_texts
    from harness.evaluate.inference import LIST_END
    from harness.tasks import synthetic

    mc = synthetic.generate_rows("complement_category", "heldout", n, seed=0)
    ret = synthetic.generate_rows("also_bought", "heldout", n, seed=0)
    prompts, options, ends = [], [], []
    for m, r in zip(mc, ret):
        prompts += [format_prompt(m["input_field"], tok, "raw"), format_prompt(r["input_field"], tok, "raw")]
        options += [option_texts(m["input_field"]), candidate_texts(r["input_field"])]
        ends += [None, LIST_END]
    prompts += [prompts[0], prompts[1]]
    options += [options[0][:1], []]
    ends += [None, LIST_END]
    assert {len(o) for o in options} == {0, 1, 4, 7}
    return prompts, options, ends


def _max_diff(a, b) -> float:
    assert [len(r) for r in a] == [len(r) for r in b]
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


class _ForwardLog:
    """Records each forward's rows, width, largest position id and whether it was given a cache."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, _module, _args, kwargs):
        ids, pos = kwargs["input_ids"], kwargs.get("position_ids")
        cached = kwargs.get("cache", kwargs.get("past_key_values")) is not None
        self.calls.append((ids.shape[0], ids.shape[1], int(pos.max()) if pos is not None else None, cached))


@pytest.mark.parametrize("batch_size, max_prompt_tokens", [(64, 1024), (9, 1024), (3, 1024), (5, 20), (1, 20)])
def test_shared_option_scores_equal_full_sequence_scores(tiny, batch_size, max_prompt_tokens):
    from harness.evaluate.inference import _option_scores_full, _option_scores_shared, option_scores

    tok, model = tiny
    prompts, options, ends = _scoring_set(tok)
    if max_prompt_tokens < 1024:  # every prompt is cut from the left
        assert min(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts) > max_prompt_tokens
    kw = dict(batch_size=batch_size, device="cpu", max_prompt_tokens=max_prompt_tokens)
    full = _option_scores_full(model, tok, prompts, options, ends, **kw)
    forwards = _ForwardLog(model)
    try:
        shared = _option_scores_shared(model, tok, prompts, options, ends, **kw)
    finally:
        forwards.handle.remove()
    assert shared is not None, "builtin:tiny returns a DynamicCache: the shared path must run"
    assert _max_diff(shared, full) < 1e-4
    assert shared[-1] == [] and len(shared[-2]) == 1
    assert option_scores(model, tok, prompts, options, ends, **kw) == shared
    # each prompt ran once; no forward had more than batch_size rows
    prompt_rows = sum(rows for rows, _, _, cached in forwards.calls if not cached)
    assert prompt_rows == sum(1 for o in options if o)
    assert max(rows for rows, _, _, _ in forwards.calls) <= batch_size
    if batch_size < 7:  # a 7-candidate prompt is scored in several chunks from its cache
        assert sum(cached for *_, cached in forwards.calls) > prompt_rows


def test_shared_option_scores_on_a_peft_model(tiny):
    import copy

    from peft import LoraConfig, get_peft_model

    from harness.evaluate.inference import _option_scores_full, _option_scores_shared

    tok, base = tiny
    torch.manual_seed(0)
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, param in model.named_parameters():  # LoRA B starts at zero: make the adapter change the scores
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    model.eval()
    prompts, options, ends = _scoring_set(tok, n=3)
    kw = dict(batch_size=5, device="cpu", max_prompt_tokens=1024)
    shared = _option_scores_shared(model, tok, prompts, options, ends, **kw)
    assert shared is not None, "the peft wrapper passes the cache through: the shared path must run"
    assert _max_diff(shared, _option_scores_full(model, tok, prompts, options, ends, **kw)) < 1e-4
    assert _max_diff(shared, _option_scores_full(base, tok, prompts, options, ends, **kw)) > 1e-3


class _NoCacheKwargs(torch.nn.Module):
    """A causal LM whose forward takes no cache arguments at all."""

    def __init__(self, lm):
        super().__init__()
        self.lm, self.config = lm, lm.config

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False)


class _NoCacheReturned(_NoCacheKwargs):
    """Takes any keyword but returns no cache (as a checkpointed model in training mode does)."""

    def forward(self, input_ids, **kwargs):
        kwargs.update(use_cache=False)
        return self.lm(input_ids=input_ids, **kwargs)


@pytest.mark.parametrize("wrapper", [_NoCacheKwargs, _NoCacheReturned])
def test_option_scores_fall_back_to_full_sequences_without_a_cache(tiny, wrapper, caplog):
    from harness.evaluate.inference import _option_scores_full, _option_scores_shared, option_scores

    tok, base = tiny
    model = wrapper(base)
    prompts, options, ends = _scoring_set(tok, n=2)
    kw = dict(batch_size=4, device="cpu", max_prompt_tokens=1024)
    assert _option_scores_shared(model, tok, prompts, options, ends, **kw) is None
    with caplog.at_level(logging.INFO, logger="harness.evaluate.inference"):
        scores = option_scores(model, tok, prompts, options, ends, **kw)
    assert scores == _option_scores_full(base, tok, prompts, options, ends, **kw)
    assert "no reorderable KV cache" in caplog.text


def test_shared_prompt_keeps_the_budget_of_its_longest_option(tiny):
    """A prompt longer than the positions allow is cut once, by its longest answer: every position
    stays below max_position_embeddings, and the scores are the full path's with that one budget."""
    from harness.evaluate.inference import _answer_ids, _option_scores_full, _option_scores_shared

    tok, model = tiny
    limit = model.config.max_position_embeddings
    prompt = format_prompt("filler words that do not matter\n" * 120 + MC_PROMPT, tok, "raw")
    options = [["apple", "a very long answer about an apple and a pear and a plum and a lamp and a sock"]]
    assert len(tok(prompt, add_special_tokens=False)["input_ids"]) > limit
    longest = max(len(a) for a in _answer_ids(tok, options[0], None))
    lengths = {len(a) for a in _answer_ids(tok, options[0], None)}
    assert len(lengths) == 2 and longest > 10
    forwards = _ForwardLog(model)
    try:
        shared = _option_scores_shared(model, tok, [prompt], options, [None], batch_size=8, device="cpu",
                                       max_prompt_tokens=1024)
    finally:
        forwards.handle.remove()
    assert max(pos for _, _, pos, _ in forwards.calls) < limit
    same_budget = _option_scores_full(model, tok, [prompt], options, [None], batch_size=8, device="cpu",
                                      max_prompt_tokens=limit - longest)
    assert _max_diff(shared, same_budget) < 1e-4
