"""Training rows -> tokenised examples -> the micro-batches of each optimiser step.

    examples = [encode_example(row, tokenizer, fmt, max_len) for row in rows]
    batches = make_batches(examples, micro_batch, seed, pad_id, packing)   # endless optimiser steps

The loss is on the response tokens only (prompt tokens are labelled -100). Padded: rows are sorted
into length buckets and each batch is padded to its longest row, which keeps padding waste low on
instruction-length data. Packed: a micro-batch's samples are packed padding-free into rows of at
most pack_length tokens, position ids restarting per sample. A step's examples depend only on the
effective batch, so changing its split (micro_batch x grad_accum) changes no learning.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from harness.capacity.adapters import AdaptedModel
from harness.data.prompting import McAnswer, PromptFormat, continuation, format_prompt, render_answer
from harness.spec.schema import TrainSpec
from harness.training.losses import IGNORE_INDEX
from harness.training.ranks import DistContext, loss_terms


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    subtask: str
    group: str = ""  # the adapter group that trains on it (multi_lora); batches never mix groups


def encode_example(row: dict[str, Any], tokenizer: Any, fmt: PromptFormat, max_len: int,
                   group: str = "", mc_answer: McAnswer = "digit") -> Example:
    """Prompt and answer are tokenised separately so the prompt tokens match what generation sees."""
    prompt_ids = tokenizer(format_prompt(row["input_field"], tokenizer, fmt),
                           add_special_tokens=False)["input_ids"]
    answer = continuation(render_answer(row, mc_answer), fmt)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids + [tokenizer.eos_token_id]
    # Truncate the prompt from the left: the question's tail (options, "Answer:") matters most.
    keep = max(max_len - len(answer_ids), 1)
    prompt_ids = prompt_ids[-keep:]
    ids = (prompt_ids + answer_ids)[:max_len]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_len]
    return Example(ids, labels, row.get("subtask", ""), group)


@dataclass(frozen=True)
class MicroBatch:
    group: str  # the adapter group it trains (multi_lora); "" otherwise
    batch: dict[str, torch.Tensor]  # this rank's collated slice
    share: float  # its part of the step's loss-carrying tokens (all ranks together)
    tokens: int  # this rank's real tokens (padding not counted) and supervised tokens
    supervised: int


# Padded batches take their rows from a random window of this many steps' worth of examples, sorted by
# length. Sorting the whole mixture by length (as before) made every batch one or two subtasks of one
# length: on builtin:tiny the smoke mix (rank 16, 2 epochs of 200 rows a subtask) then answered its
# multiple-choice questions at 0.42, against 0.47 with windows of 16 steps (0.48 with 4) and 0.46 with
# random batches, which padded to 1.6x the training time; windows of 16 cost what the full sort did.
LENGTH_WINDOW_STEPS = 16


def make_batches(examples: list[Example], micro_batch: int, seed: int, pad_id: int, packing: bool,
                 dist: DistContext | None = None, grad_accum: int = 1, pack_length: int | None = None):
    """Endless shuffled optimiser steps: each one effective batch (micro_batch x grad_accum examples of
    one adapter group) as a list of MicroBatch, whose share is its part of the step's loss-carrying
    tokens.

    The step's examples depend only on the effective batch, and the shares make the summed loss the
    token mean over the whole step, so micro_batch 8 x 2 learns what 16 x 1 learns (the out-of-memory
    retry and micro_batch auto change the split, not the training). Packed: each micro-batch is packed
    into rows of at most pack_length tokens (collate_packed; None: one row). Padded: rows of similar
    length are batched together within random windows of LENGTH_WINDOW_STEPS steps. Data-parallel:
    every rank draws the same global micro-batches and collates its own slice (DistContext.local_batch).
    """
    dist = dist or DistContext.single()
    collate_fn = collator(packing, pad_id, pack_length)
    rng, size = random.Random(seed), micro_batch * grad_accum
    while True:
        chunks = []
        for group in sorted({e.group for e in examples}):
            members = [i for i, e in enumerate(examples) if e.group == group]
            rng.shuffle(members)
            if not packing:  # padded: sort each window of a few steps by length, so a batch pads little
                window = size * LENGTH_WINDOW_STEPS
                members = [i for w in range(0, len(members), window)
                           for i in sorted(members[w : w + window], key=lambda i: len(examples[i].input_ids))]
            chunks += [members[i : i + size] for i in range(0, len(members), size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            step = [examples[i] for i in chunk]
            total = sum(loss_terms(e) for e in step) or 1
            yield [MicroBatch(e[0].group, dist.local_batch(e, collate_fn), sum(loss_terms(x) for x in e) / total,
                              *dist.local_tokens(e))
                   for e in (step[i : i + micro_batch] for i in range(0, len(step), micro_batch))]


def collator(packing: bool, pad_id: int,
             pack_length: int | None = None) -> Callable[[list[Example]], dict[str, torch.Tensor]]:
    """How training micro-batches are laid out: padding-free packed rows (at most pack_length tokens
    each; None: one row), or padded rows."""
    if packing:
        return functools.partial(collate_packed, pad_id=pad_id, pack_length=pack_length)
    return functools.partial(collate, pad_id=pad_id)


def packed_row_length(spec: TrainSpec, longest: int) -> int | None:
    """Tokens per packed row: None (one row per micro-batch) where the attention kernel skips the
    cross-sample blocks (flash varlen, flex block masks); else train.pack_length, or by default the
    longest training sample: SDPA/eager attend over a dense block-diagonal mask, so a row costs the
    square of its length, and rows as long as the longest sample cost what its padded batch would.
    (builtin:tiny shape on EC-Guide lengths, CPU: rows of the longest sample ran 1.6-2.0x plain, rows of
    1024 tokens 1.3x, one row per micro-batch 0.8x; bench/RESULTS.md.)"""
    if spec.attention.startswith("flash_attention"):
        return None
    if spec.attention == "flex_attention" and spec.pack_length is None:
        return None
    return spec.pack_length or longest


def longest_sample(examples: list[Example]) -> int:
    return max(len(e.input_ids) for e in examples)


def pack_rows(batch: list[Example], pack_length: int | None) -> list[list[Example]]:
    """First-fit decreasing: longest samples first, each into the first row with room for it."""
    if pack_length is None:
        return [batch]
    rows: list[list[Example]] = []
    room: list[int] = []
    for e in sorted(batch, key=lambda e: len(e.input_ids), reverse=True):
        n = len(e.input_ids)
        if n > pack_length:
            raise ValueError(f"a {n}-token sample does not fit a packed row of {pack_length} tokens")
        i = next((i for i, free in enumerate(room) if free >= n), len(rows))
        if i == len(rows):
            rows.append([])
            room.append(pack_length)
        rows[i].append(e)
        room[i] -= n
    return rows


def collate_packed(batch: list[Example], pad_id: int = 0,
                   pack_length: int | None = None) -> dict[str, torch.Tensor]:
    """Examples concatenated into rows of at most pack_length tokens (None: one row), position ids
    restarting at 0 for each example.

    With no attention_mask, transformers reads the restarts as sequence boundaries and builds a
    block-diagonal causal mask (SDPA/eager/flex) or varlen attention (flash-attention, single row
    only), so no token attends across examples. No label crosses a boundary either: each example
    starts with prompt tokens, which are labelled -100. A short row's padding tail is one more
    "sequence" (positions from 0, labels -100) that no real token attends to.
    """
    rows = pack_rows(batch, pack_length)
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            ids[r, at : at + n] = torch.tensor(e.input_ids)
            labels[r, at : at + n] = torch.tensor(e.labels)
            positions[r, at : at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):  # right padding for training
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def group_rows(adapted: AdaptedModel, rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Row indices per evaluation group, in first-seen order (one group for unrouted families)."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(adapted.eval_group_of(row), []).append(i)
    return groups
