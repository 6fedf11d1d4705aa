"""Inference backends: batched greedy generation with left padding, and a multiple-choice fast path.

    responses = generate_responses(model, tokenizer, rows, fmt="raw", batch_size=64, device="cpu")
    responses = generate_responses(..., mc_logits=True)   # multiple-choice rows from one forward pass

Rows are grouped by task type (each has its own new-token budget) and sorted by prompt length
within a group, so a batch pads little and stops early. Responses come back in the rows' order.
Prompts longer than the budget are cut from the left: the question's tail (options, "Answer:") is
what the answer depends on, and training truncates the same way (`harness.training.batching.encode_example`).

The multiple-choice fast path reads the options ("0. ...", "1. ...") from the prompt, runs one
forward pass over the prompt and answers with the option digit whose token has the highest
next-token logit. Greedy generation answers with the argmax over the whole vocabulary, so whenever
its first token is an option digit the two agree; the fast path just never wanders off into text.
A digit counts with or without a leading space (" 3" parses as 3 too). Rows whose option digits are
not single tokens in this tokenizer, or whose options cannot be read, are generated instead.

With `mc_answer` option_text a multiple-choice row is answered by the option whose text is likeliest
as the continuation; with choice_text retrieval and ranking rows too, their numbered candidates
ordered by likelihood (`option_scores`). Either way the response is numbers, as the parsers read.
`option_scores` runs each prompt once and scores its options from the prompt's KV cache.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

from harness.data.prompting import (LIST_SEPARATOR, LISTED, MAX_NEW_TOKENS, McAnswer, PromptFormat,
                                    candidate_texts, continuation, format_prompt, option_texts)
from harness.evaluate.parsers import RETRIEVAL_LENGTH

log = logging.getLogger(__name__)

MC = "multiple-choice"
LIST_END = LIST_SEPARATOR.rstrip()  # what follows a candidate's text when more are listed after it
# The ShopBench parser reads one character, so only options 0-9 can ever be answered.
MAX_OPTIONS = 10
_OPTION_LINE = re.compile(r"^[ \t]*(\d+)\.\s", re.MULTILINE)

GenerateFn = Callable[[list[str], int], list[str]]  # (prompts, max_new_tokens) -> continuations


@torch.no_grad()
def generate_responses(model: Any, tokenizer: Any, rows: list[dict[str, Any]], *, fmt: PromptFormat,
                       batch_size: int, device: str, max_prompt_tokens: int = 1024,
                       mc_logits: bool = False, mc_answer: McAnswer = "digit") -> list[str]:
    """One raw response per row, in order. mc_logits: answer multiple-choice rows by option logits;
    mc_answer option_text: by the likeliest option text (the response is that option's number)."""
    prompts = [format_prompt(r["input_field"], tokenizer, fmt) for r in rows]
    responses = [""] * len(rows)
    with _left_sided(tokenizer):
        fast = _answer_by_one_forward(model, tokenizer, rows, prompts, responses, fmt=fmt,
                                       mc_logits=mc_logits, mc_answer=mc_answer, batch_size=batch_size,
                                       device=device, max_prompt_tokens=max_prompt_tokens)
        rest = [i for i in range(len(rows)) if i not in fast]
        generate = partial(_generate_batch, model, tokenizer, device=device,
                           max_prompt_tokens=max_prompt_tokens)
        texts = respond_by_task_type([rows[i] for i in rest], [prompts[i] for i in rest],
                                     generate, batch_size)
        for i, text in zip(rest, texts):
            responses[i] = text
    return responses


def _answer_by_one_forward(model: Any, tokenizer: Any, rows: list[dict[str, Any]], prompts: list[str],
                            responses: list[str], *, fmt: PromptFormat, mc_logits: bool, mc_answer: McAnswer,
                            batch_size: int, device: str, max_prompt_tokens: int) -> set[int]:
    """Fill in the responses of the rows a one-forward path answers (multiple-choice by option texts
    or digit logits; with choice_text, retrieval and ranking by candidate texts); the indices it
    answered, which generation then skips."""
    if mc_answer != "digit":
        return _answer_by_texts(model, tokenizer, rows, prompts, responses, fmt=fmt,
                                listed=mc_answer == "choice_text", batch_size=batch_size, device=device,
                                max_prompt_tokens=max_prompt_tokens)
    if mc_logits:
        digits = mc_option_rows(rows, prompts, tokenizer)
        idx = sorted(digits, key=lambda i: len(prompts[i]))
        choices = answer_by_option_logits(model, tokenizer, [prompts[i] for i in idx], [digits[i] for i in idx],
                                          batch_size=batch_size, device=device,
                                          max_prompt_tokens=max_prompt_tokens,
                                          lead=answer_lead_ids(tokenizer, fmt))
    else:
        return set()
    for i, choice in zip(idx, choices):
        responses[i] = str(choice)
    return set(idx)


def _answer_by_texts(model: Any, tokenizer: Any, rows: list[dict[str, Any]], prompts: list[str],
                     responses: list[str], *, fmt: PromptFormat, listed: bool, batch_size: int, device: str,
                     max_prompt_tokens: int) -> set[int]:
    """Multiple-choice rows by their likeliest option text; with `listed` (mc_answer choice_text) also
    retrieval and ranking rows, whose candidates are ordered by how likely each text is as the
    answer's first item (then the list separator), each written as training wrote it (`continuation`).
    Responses are numbers, as the parsers read them."""
    texts = {i: option_texts(r["input_field"]) for i, r in enumerate(rows) if r["task_type"] == MC}
    if listed:
        texts |= {i: candidate_texts(r["input_field"]) for i, r in enumerate(rows) if r["task_type"] in LISTED}
    idx = [i for i, options in texts.items() if options]
    ends = [LIST_END if rows[i]["task_type"] in LISTED else None for i in idx]
    written = [[continuation(text, fmt) for text in texts[i]] for i in idx]
    scores = option_scores(model, tokenizer, [prompts[i] for i in idx], written, ends,
                           batch_size=batch_size, device=device, max_prompt_tokens=max_prompt_tokens)
    for i, row_scores in zip(idx, scores):
        responses[i] = _response_from_scores(rows[i]["task_type"], row_scores)
    return set(idx)


def _response_from_scores(task_type: str, scores: list[float]) -> str:
    """multiple-choice: the best option's number (the first best on a tie); ranking: every candidate,
    likeliest first; retrieval: the likeliest RETRIEVAL_LENGTH. Candidates are numbered from 1."""
    if task_type == MC:
        return str(scores.index(max(scores)))
    order = [i + 1 for i in sorted(range(len(scores)), key=lambda i: -scores[i])]
    return ",".join(str(i) for i in (order if task_type == "ranking" else order[:RETRIEVAL_LENGTH]))


def respond_by_task_type(rows: Sequence[dict[str, Any]], prompts: Sequence[str],
                         generate: GenerateFn, batch_size: int) -> list[str]:
    """Call `generate` per task type (its own token budget) on length-sorted batches; row order out."""
    responses = [""] * len(rows)
    for task_type in sorted({r["task_type"] for r in rows}):
        group = sorted((i for i, r in enumerate(rows) if r["task_type"] == task_type),
                       key=lambda i: len(prompts[i]))
        for idx in _batches(group, batch_size):
            texts = generate([prompts[i] for i in idx], MAX_NEW_TOKENS[task_type])
            for i, text in zip(idx, texts):
                responses[i] = text
    return responses


# ---------------------------------------------------------------------------------------------
# Multiple-choice fast path


def count_options(prompt: str) -> int:
    """How many options the prompt lists as '0. ...', '1. ...' (the last such run); 0 if none."""
    runs: list[int] = []
    for match in _OPTION_LINE.finditer(prompt):
        k = int(match.group(1))
        if k == 0:
            runs.append(1)
        elif runs and k == runs[-1]:
            runs[-1] += 1
        else:  # a numbered line that does not continue the run ends it
            runs.append(0)
    return next((n for n in reversed(runs) if n), 0)


def digit_token_ids(tokenizer: Any) -> dict[int, list[int]]:
    """digit -> ids of the single tokens that decode to it ("3", and " 3" where that is one token).
    A digit missing from the result has no single-token spelling in this tokenizer."""
    out: dict[int, list[int]] = {}
    for d in range(MAX_OPTIONS):
        ids = set()
        for text in (str(d), " " + str(d)):
            enc = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(enc) == 1 and tokenizer.decode(enc).strip() == str(d):
                ids.add(enc[0])
        if ids:
            out[d] = sorted(ids)
    return out


def mc_option_rows(rows: Sequence[dict[str, Any]], prompts: Sequence[str],
                   tokenizer: Any) -> dict[int, list[list[int]]]:
    """row index -> per-option candidate token ids, for the MC rows the fast path can answer.
    The others are left to generation, with one log line saying how many and why."""
    digits = digit_token_ids(tokenizer)
    fast: dict[int, list[list[int]]] = {}
    unreadable, untokenisable = 0, 0
    for i, (row, prompt) in enumerate(zip(rows, prompts)):
        if row["task_type"] != MC:
            continue
        n = min(count_options(prompt), MAX_OPTIONS)
        if n == 0:
            unreadable += 1
        elif any(d not in digits for d in range(n)):
            untokenisable += 1
        else:
            fast[i] = [digits[d] for d in range(n)]
    if unreadable:
        log.warning("mc_logits: %d multiple-choice rows list no '0. ...' options; generating them",
                    unreadable)
    if untokenisable:
        log.warning("mc_logits: option digits %s are not single tokens in this tokenizer; generating "
                    "%d multiple-choice rows instead", sorted(set(range(MAX_OPTIONS)) - set(digits)),
                    untokenisable)
    return fast


def answer_lead_ids(tokenizer: Any, fmt: PromptFormat) -> list[int]:
    """The tokens a digit answer starts with before its digit: `continuation`'s space where the tokenizer
    spells " 3" as " " then "3" (Qwen2's splits digits from the space), else none
    (no lead in this format, or " 3" is one token, which digit_token_ids already counts)."""
    lead = continuation("", fmt)
    if not lead:
        return []
    lead_ids = tokenizer(lead, add_special_tokens=False)["input_ids"]
    spelled = tokenizer(continuation("3", fmt), add_special_tokens=False)["input_ids"]
    return lead_ids if len(spelled) == len(lead_ids) + 1 and spelled[:-1] == lead_ids else []


@torch.no_grad()
def answer_by_option_logits(model: Any, tokenizer: Any, prompts: Sequence[str],
                            options: Sequence[list[list[int]]], *, batch_size: int, device: str,
                            max_prompt_tokens: int = 1024, lead: Sequence[int] = ()) -> list[int]:
    """For each prompt, the option whose digit token scores highest as the next token after `lead`
    (answer_lead_ids: the space a raw answer starts with, where it is a token of its own).
    options[i][k]: the token ids that spell option k (the best of them counts)."""
    choices: list[int] = []
    budget = _prompt_budget(model, max_prompt_tokens, new_tokens=1 + len(lead))
    with _left_sided(tokenizer):
        for start in range(0, len(prompts), batch_size):
            logits = _last_logits(model, tokenizer, list(prompts[start : start + batch_size]),
                                  device, budget, lead).float()
            for row_logits, opts in zip(logits, options[start : start + batch_size]):
                scores = torch.stack([row_logits[ids].max() for ids in opts])
                choices.append(int(scores.argmax()))
    return choices


def option_scores(model: Any, tokenizer: Any, prompts: Sequence[str], options: Sequence[list[str]],
                  ends: Sequence[str | None], *, batch_size: int, device: str,
                  max_prompt_tokens: int = 1024) -> list[list[float]]:
    """Per prompt, each option's summed log-probability as the continuation: its text, then `end`'s
    tokens (None: EOS, where the answer is the option alone).

    Each prompt runs through the model once: its KV cache is copied to one row per option and only
    the option tokens run after it (the first option token's log-probability comes from the prompt's
    last logits). A 4-option question costs one prompt pass instead of four. Prompts are batched
    shortest first, left-padded, and grouped so a group's options total about `batch_size` rows (a
    prompt with more options than that has them scored `batch_size` at a time from its cache).

    Truncation: a prompt keeps its last `_prompt_budget(model, max_prompt_tokens, n)` tokens, n being
    its *longest* answer (option + end), so the shared prompt and any of its options fit the model's
    positions. Before the cache was shared, each option's copy of the prompt was cut by its own
    answer's length; the two differ only when max_position_embeddings - longest answer is below
    max_prompt_tokens and the prompt is longer than that, and then by a few more prompt tokens cut
    from the left for the shorter options.

    A model whose forward takes or returns no usable cache is scored one full (prompt + option)
    sequence per option instead (`_option_scores_full`, the earlier path, same numbers up to float
    rounding)."""
    scores = _option_scores_shared(model, tokenizer, prompts, options, ends, batch_size=batch_size,
                                   device=device, max_prompt_tokens=max_prompt_tokens)
    if scores is None:
        # No cache to share: a forward without use_cache, one returning the cache as tuples (no
        # reorder_cache), or one that drops it (checkpointed and in training mode). builtin:tiny (Qwen2)
        # and its peft wrapper return a DynamicCache on transformers 5.24 (tests/evaluate/test_inference.py).
        log.info("option_scores: %s returns no reorderable KV cache; scoring one full sequence per option",
                 type(model).__name__)
        scores = _option_scores_full(model, tokenizer, prompts, options, ends, batch_size=batch_size,
                                     device=device, max_prompt_tokens=max_prompt_tokens)
    return scores


def _answer_ids(tokenizer: Any, opts: Sequence[str], end: str | None) -> list[list[int]]:
    """Each option's answer tokens: its text then `end`'s tokens, or its text then EOS when end is None."""
    answers = []
    for text in opts:
        answer = tokenizer(text + (end or ""), add_special_tokens=False)["input_ids"]
        answers.append(answer + ([tokenizer.eos_token_id] if end is None else []))
    return answers


@torch.no_grad()
def _option_scores_shared(model: Any, tokenizer: Any, prompts: Sequence[str], options: Sequence[list[str]],
                          ends: Sequence[str | None], *, batch_size: int, device: str,
                          max_prompt_tokens: int) -> list[list[float]] | None:
    """option_scores from one forward per prompt and its KV cache; None if the model gives no usable cache."""
    items = []  # (kept prompt ids, answers) per prompt
    for prompt, opts, end in zip(prompts, options, ends):
        answers = _answer_ids(tokenizer, opts, end)
        longest = max((len(a) for a in answers), default=1)
        keep = max(_prompt_budget(model, max_prompt_tokens, longest), 1)
        items.append((tokenizer(prompt, add_special_tokens=False)["input_ids"][-keep:], answers))
    out: list[list[float]] = [[] for _ in items]
    order = sorted((i for i, (_, answers) in enumerate(items) if answers), key=lambda i: len(items[i][0]))
    for group in _option_groups(order, [len(answers) for _, answers in items], batch_size):
        scores = _shared_prompt_scores(model, [items[i] for i in group], tokenizer.pad_token_id, device,
                                       batch_size)
        if scores is None:
            return None
        for i, mine in zip(group, scores):
            out[i] = mine
    return out


def _option_groups(order: list[int], counts: list[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive prompts of `order` whose option counts total at most batch_size (at least one prompt)."""
    group: list[int] = []
    total = 0
    for i in order:
        if group and total + counts[i] > batch_size:
            yield group
            group, total = [], 0
        group.append(i)
        total += counts[i]
    if group:
        yield group


def _shared_prompt_scores(model: Any, items: list[tuple[list[int], list[list[int]]]], pad_id: int,
                          device: str, batch_size: int) -> list[list[float]] | None:
    """Summed answer log-probabilities for a group of prompts: one left-padded forward over the prompts
    with a KV cache, then the answers (right-padded) from that cache, at most batch_size rows a forward.
    None when the model returns no cache that `reorder_cache` can expand."""
    ids, mask = _left_padded([p for p, _ in items], pad_id, device)
    prompt_out = _prompt_forward(model, ids, mask)
    if prompt_out is None:
        return None
    last_logprobs, cache_key, cache = prompt_out
    lengths = mask.sum(-1)  # real prompt tokens: the first answer token's position
    pairs = [(row, answer) for row, (_, answers) in enumerate(items) for answer in answers]
    flat: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        # reorder_cache (what beam search uses, on every transformers Cache since 4.36) selects rows
        # in place, repeats allowed; a later chunk of the same group needs the prompt rows again.
        rows_cache = cache if start + batch_size >= len(pairs) else copy.deepcopy(cache)
        src = torch.tensor([row for row, _ in chunk], device=device)
        rows_cache.reorder_cache(src)
        flat.extend(_answer_logprobs(model, chunk, src, last_logprobs, mask, lengths, cache_key, rows_cache,
                                     pad_id))
    return _split_by_counts(flat, [len(answers) for _, answers in items])


def _split_by_counts(flat: list[float], counts: list[int]) -> list[list[float]]:
    """Consecutive runs of `flat`, one per count: each prompt's option scores."""
    out, start = [], 0
    for n in counts:
        out.append(flat[start : start + n])
        start += n
    return out


def _left_padded(seqs: list[list[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token lists left-padded to the longest: every row ends in the last column."""
    width = max(len(seq) for seq in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def _prompt_forward(model: Any, ids: torch.Tensor,
                    mask: torch.Tensor) -> tuple[torch.Tensor, str, Any] | None:
    """(last-position log-probabilities [prompts, vocab], the output key the cache came under, the cache),
    or None when the model's forward rejects use_cache or returns no reorderable cache."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # a plain forward does not derive them from the mask
    kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    try:
        try:  # logits_to_keep=1 skips the LM head on every position but the last (transformers>=4.50)
            out = model(**kwargs, logits_to_keep=1)
        except TypeError:
            out = model(**kwargs)
    except TypeError:  # a forward without use_cache: no cache to share
        return None
    # transformers 5.x returns the cache as `cache` (reading `past_key_values` still works, with a
    # deprecation warning) and takes it back under that name; 4.x uses `past_key_values` for both.
    # Older versions and custom models may return a tuple of tensors, which has no reorder_cache.
    found = [(key, value) for key, value in out.items() if key in ("cache", "past_key_values")] \
        if hasattr(out, "items") else []
    if not found or not hasattr(found[0][1], "reorder_cache"):
        return None
    key, cache = found[0]
    return torch.log_softmax(out.logits[:, -1, :].float(), -1), key, cache


def _answer_logprobs(model: Any, chunk: list[tuple[int, list[int]]], src: torch.Tensor,
                     last_logprobs: torch.Tensor, prompt_mask: torch.Tensor, lengths: torch.Tensor,
                     cache_key: str, cache: Any, pad_id: int) -> list[float]:
    """Summed log-probability of each (prompt row, answer) pair; `cache` holds row k's prompt at row k."""
    first = [float(last_logprobs[row, answer[0]]) for row, answer in chunk]
    width = max(len(answer) for _, answer in chunk) - 1  # the last answer token is never an input
    if width == 0:
        return first
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for k, (_, answer) in enumerate(chunk):
        ids[k, : len(answer) - 1] = torch.tensor(answer[:-1])
        mask[k, : len(answer) - 1] = 1
    ids, mask = ids.to(src.device), mask.to(src.device)
    full_mask = torch.cat([prompt_mask[src], mask], dim=-1)
    positions = lengths[src].unsqueeze(-1) + torch.arange(width, device=src.device)
    logits = model(input_ids=ids, attention_mask=full_mask, position_ids=positions, use_cache=True,
                   **{cache_key: cache}).logits
    logprobs = torch.log_softmax(logits.float(), -1)
    out = []
    for k, (_, answer) in enumerate(chunk):
        targets = torch.tensor(answer[1:], device=src.device).unsqueeze(-1)
        out.append(first[k] + float(logprobs[k, : len(answer) - 1].gather(-1, targets).sum()))
    return out


@torch.no_grad()
def _option_scores_full(model: Any, tokenizer: Any, prompts: Sequence[str], options: Sequence[list[str]],
                        ends: Sequence[str | None], *, batch_size: int, device: str,
                        max_prompt_tokens: int = 1024) -> list[list[float]]:
    """option_scores without a KV cache: one (prompt + option) sequence per option, each option's copy of
    the prompt cut to the budget its own answer leaves. For models without a usable cache, and the
    reference the shared path is tested against."""
    seqs = []
    for prompt, opts, end in zip(prompts, options, ends):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for answer in _answer_ids(tokenizer, opts, end):
            keep = max(_prompt_budget(model, max_prompt_tokens, len(answer)), 1)
            seqs.append((prompt_ids[-keep:], answer))
    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k][0]) + len(seqs[k][1]))  # batches pad little
    flat = [0.0] * len(seqs)
    for k in range(0, len(order), batch_size):
        batch = order[k : k + batch_size]
        for j, score in zip(batch, _continuation_logprob(model, [seqs[j] for j in batch], tokenizer.pad_token_id,
                                                         device)):
            flat[j] = score
    return _split_by_counts(flat, [len(opts) for opts in options])


def _continuation_logprob(model: Any, seqs: list[tuple[list[int], list[int]]], pad_id: int,
                          device: str) -> list[float]:
    """Summed log-probability of each answer after its prompt; left-padded batch, positions from the mask."""
    ids, mask = _left_padded([p + a for p, a in seqs], pad_id, device)
    width = ids.shape[1]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float(), -1)
    out = []
    for row, (_, a) in enumerate(seqs):
        start = width - len(a)  # the answer's first token is predicted at start - 1
        picked = logprobs[row, start - 1 : width - 1].gather(-1, ids[row, start:width].unsqueeze(-1))
        out.append(float(picked.sum()))
    return out


def _last_logits(model: Any, tokenizer: Any, prompts: list[str], device: str,
                 max_prompt_tokens: int, lead: Sequence[int] = ()) -> torch.Tensor:
    """Next-token logits after each left-padded prompt and then the `lead` tokens, [batch, vocab]."""
    enc = _encode(tokenizer, prompts, device, max_prompt_tokens)
    if lead:  # left padding: every row ends at the last column, so the lead goes after it in all of them
        tail = torch.tensor(list(lead), device=device).expand(len(prompts), -1)
        enc = {"input_ids": torch.cat([enc["input_ids"], tail], -1),
               "attention_mask": torch.cat([enc["attention_mask"], torch.ones_like(tail)], -1)}
    # generate() derives positions from the mask; a plain forward does not, so pass them as it does.
    positions = (enc["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    try:  # logits_to_keep=1 skips the LM head on every position but the last (transformers>=4.50)
        out = model(**enc, position_ids=positions, logits_to_keep=1)
    except TypeError:
        out = model(**enc, position_ids=positions)
    return out.logits[:, -1, :]


# ---------------------------------------------------------------------------------------------
# Generation


def _generate_batch(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, *,
                    device: str, max_prompt_tokens: int) -> list[str]:
    budget = _prompt_budget(model, max_prompt_tokens, new_tokens=max_new_tokens)
    enc = _encode(tokenizer, prompts, device, budget)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new_tokens = out[:, enc["input_ids"].shape[1]:]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def _encode(tokenizer: Any, prompts: list[str], device: str, max_prompt_tokens: int) -> dict[str, Any]:
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                    truncation=True, max_length=max_prompt_tokens)
    return {k: v.to(device) for k, v in enc.items()}


def _prompt_budget(model: Any, max_prompt_tokens: int, new_tokens: int) -> int:
    """Prompt tokens to keep so prompt + answer fit the model's positions (builtin:tiny has 512)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and limit > new_tokens:
        return min(max_prompt_tokens, limit - new_tokens)
    return max_prompt_tokens


@contextmanager
def _left_sided(tokenizer: Any) -> Iterator[None]:
    """Left padding (decoder-only batches end where the answer starts) and left truncation, restored after."""
    saved = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    try:
        yield
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = saved


def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(order), size):
        yield order[i : i + size]
