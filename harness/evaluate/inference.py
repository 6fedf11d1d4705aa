"""Inference backends: batched greedy generation with left padding, and a multiple-choice fast path.

    responses = generate_responses(model, tokenizer, rows, fmt="raw", batch_size=64, device="cpu")

Rows are grouped by task type (each has its own new-token budget) and sorted by prompt length
within a group, so a batch pads little and stops early. Responses come back in the rows' order.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.prompting import MAX_NEW_TOKENS, PromptFormat, format_prompt


def _batches(order: list[int], size: int):
    for i in range(0, len(order), size):
        yield order[i : i + size]


@torch.no_grad()
def generate_responses(model: Any, tokenizer: Any, rows: list[dict[str, Any]], *, fmt: PromptFormat,
                       batch_size: int, device: str, max_prompt_tokens: int = 1024) -> list[str]:
    prompts = [format_prompt(r["input_field"], tokenizer, fmt) for r in rows]
    lengths = [len(p) for p in prompts]
    responses = [""] * len(rows)
    tokenizer.padding_side = "left"
    for task_type in sorted({r["task_type"] for r in rows}):
        group = sorted((i for i, r in enumerate(rows) if r["task_type"] == task_type),
                       key=lambda i: lengths[i])
        for idx in _batches(group, batch_size):
            texts = _generate_batch(model, tokenizer, [prompts[i] for i in idx],
                                    MAX_NEW_TOKENS[task_type], device, max_prompt_tokens)
            for i, text in zip(idx, texts):
                responses[i] = text
    return responses


def _generate_batch(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int,
                    device: str, max_prompt_tokens: int) -> list[str]:
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                    truncation=True, max_length=max_prompt_tokens)
    enc = {k: v.to(device) for k, v in enc.items()}
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new_tokens = out[:, enc["input_ids"].shape[1]:]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
