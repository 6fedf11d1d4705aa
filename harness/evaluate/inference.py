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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

from harness.data.prompting import (LIST_SEPARATOR, LISTED, MAX_NEW_TOKENS, McAnswer, PromptFormat,
                                    candidate_texts, format_prompt, option_texts)
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
        fast = _answer_by_one_forward(model, tokenizer, rows, prompts, responses, mc_logits=mc_logits,
                                       mc_answer=mc_answer, batch_size=batch_size, device=device,
                                       max_prompt_tokens=max_prompt_tokens)
        rest = [i for i in range(len(rows)) if i not in fast]
        generate = partial(_generate_batch, model, tokenizer, device=device,
                           max_prompt_tokens=max_prompt_tokens)
        texts = respond_by_task_type([rows[i] for i in rest], [prompts[i] for i in rest],
                                     generate, batch_size)
        for i, text in zip(rest, texts):
            responses[i] = text
    return responses


def _answer_by_one_forward(model: Any, tokenizer: Any, rows: list[dict[str, Any]], prompts: list[str],
                            responses: list[str], *, mc_logits: bool, mc_answer: McAnswer, batch_size: int,
                            device: str, max_prompt_tokens: int) -> set[int]:
    """Fill in the responses of the rows a one-forward path answers (multiple-choice by option texts
    or digit logits; with choice_text, retrieval and ranking by candidate texts); the indices it
    answered, which generation then skips."""
    if mc_answer != "digit":
        return _answer_by_texts(model, tokenizer, rows, prompts, responses, listed=mc_answer == "choice_text",
                                batch_size=batch_size, device=device, max_prompt_tokens=max_prompt_tokens)
    if mc_logits:
        digits = mc_option_rows(rows, prompts, tokenizer)
        idx = sorted(digits, key=lambda i: len(prompts[i]))
        choices = answer_by_option_logits(model, tokenizer, [prompts[i] for i in idx], [digits[i] for i in idx],
                                          batch_size=batch_size, device=device,
                                          max_prompt_tokens=max_prompt_tokens)
    else:
        return set()
    for i, choice in zip(idx, choices):
        responses[i] = str(choice)
    return set(idx)


def _answer_by_texts(model: Any, tokenizer: Any, rows: list[dict[str, Any]], prompts: list[str],
                     responses: list[str], *, listed: bool, batch_size: int, device: str,
                     max_prompt_tokens: int) -> set[int]:
    """Multiple-choice rows by their likeliest option text; with `listed` (mc_answer choice_text) also
    retrieval and ranking rows, whose candidates are ordered by how likely each text is as the
    answer's first item (then the list separator). Responses are numbers, as the parsers read them."""
    texts = {i: option_texts(r["input_field"]) for i, r in enumerate(rows) if r["task_type"] == MC}
    if listed:
        texts |= {i: candidate_texts(r["input_field"]) for i, r in enumerate(rows) if r["task_type"] in LISTED}
    idx = [i for i, options in texts.items() if options]
    ends = [LIST_END if rows[i]["task_type"] in LISTED else None for i in idx]
    scores = option_scores(model, tokenizer, [prompts[i] for i in idx], [texts[i] for i in idx], ends,
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


@torch.no_grad()
def answer_by_option_logits(model: Any, tokenizer: Any, prompts: Sequence[str],
                            options: Sequence[list[list[int]]], *, batch_size: int, device: str,
                            max_prompt_tokens: int = 1024) -> list[int]:
    """For each prompt, the option whose digit token scores highest as the next token.
    options[i][k]: the token ids that spell option k (the best of them counts)."""
    choices: list[int] = []
    budget = _prompt_budget(model, max_prompt_tokens, new_tokens=1)
    with _left_sided(tokenizer):
        for start in range(0, len(prompts), batch_size):
            logits = _last_logits(model, tokenizer, list(prompts[start : start + batch_size]),
                                  device, budget).float()
            for row_logits, opts in zip(logits, options[start : start + batch_size]):
                scores = torch.stack([row_logits[ids].max() for ids in opts])
                choices.append(int(scores.argmax()))
    return choices


@torch.no_grad()
def answer_by_option_text(model: Any, tokenizer: Any, prompts: Sequence[str], options: Sequence[list[str]], *,
                          batch_size: int, device: str, max_prompt_tokens: int = 1024) -> list[int]:
    """For each prompt, the option whose text (then EOS) has the highest summed log-probability as
    the continuation: lm-eval's multiple-choice scoring by continuation likelihood."""
    scores = option_scores(model, tokenizer, prompts, options, [None] * len(prompts), batch_size=batch_size,
                           device=device, max_prompt_tokens=max_prompt_tokens)
    return [mine.index(max(mine)) for mine in scores]  # the first best wins a tie


def option_scores(model: Any, tokenizer: Any, prompts: Sequence[str], options: Sequence[list[str]],
                  ends: Sequence[str | None], *, batch_size: int, device: str,
                  max_prompt_tokens: int = 1024) -> list[list[float]]:
    """Per prompt, each option's summed log-probability as the continuation: its text, then `end`'s
    tokens (None: EOS, where the answer is the option alone)."""
    seqs = []
    for prompt, opts, end in zip(prompts, options, ends):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for text in opts:
            answer = tokenizer(text + (end or ""), add_special_tokens=False)["input_ids"]
            answer += [tokenizer.eos_token_id] if end is None else []
            keep = max(_prompt_budget(model, max_prompt_tokens, len(answer)), 1)
            seqs.append((prompt_ids[-keep:], answer))
    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k][0]) + len(seqs[k][1]))  # batches pad little
    flat = [0.0] * len(seqs)
    for k in range(0, len(order), batch_size):
        batch = order[k : k + batch_size]
        for j, score in zip(batch, _continuation_logprob(model, [seqs[j] for j in batch], tokenizer.pad_token_id,
                                                         device)):
            flat[j] = score
    out, start = [], 0
    for opts in options:  # each prompt's options are consecutive in `flat`
        out.append(flat[start : start + len(opts)])
        start += len(opts)
    return out


def _continuation_logprob(model: Any, seqs: list[tuple[list[int], list[int]]], pad_id: int,
                          device: str) -> list[float]:
    """Summed log-probability of each answer after its prompt; left-padded batch, positions from the mask."""
    width = max(len(p) + len(a) for p, a in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (p, a) in enumerate(seqs):
        tokens = p + a
        ids[row, width - len(tokens):] = torch.tensor(tokens)
        mask[row, width - len(tokens):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float(), -1)
    out = []
    for row, (_, a) in enumerate(seqs):
        start = width - len(a)  # the answer's first token is predicted at start - 1
        picked = logprobs[row, start - 1 : width - 1].gather(-1, ids[row, start:width].unsqueeze(-1))
        out.append(float(picked.sum()))
    return out


def _last_logits(model: Any, tokenizer: Any, prompts: list[str], device: str,
                 max_prompt_tokens: int) -> torch.Tensor:
    """Next-token logits after each left-padded prompt, [batch, vocab]."""
    enc = _encode(tokenizer, prompts, device, max_prompt_tokens)
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
