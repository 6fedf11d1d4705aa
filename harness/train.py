"""LoRA fine-tuning with peft: rows -> tokenised examples -> batches -> adapter. Returns a TrainResult.

The loss is on the response tokens only (prompt tokens are labelled -100). Batches are padded to
their longest row after sorting rows into length buckets, which keeps padding waste low on
instruction-length data. The loop reports (step, loss) through a callback so the caller decides
where it goes (Ray Tune, W&B, stdout); it never touches files.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.config import TrainSpec
from harness.prompting import PromptFormat, format_prompt, render_answer

IGNORE_INDEX = -100
LogFn = Callable[[int, float], None]

TARGET_MODULES = {
    "all-linear": "all-linear",
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
}


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclass
class TrainResult:
    steps: int
    tokens: int  # supervised (response) tokens seen
    final_loss: float
    wall_s: float
    tokens_per_s: float  # all tokens through the model (prompt + response) per second
    peak_mem_mb: float
    trainable_params: int
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    tokens_per_subtask: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    subtask: str


def encode_example(row: dict[str, Any], tokenizer: Any, fmt: PromptFormat, max_len: int) -> Example:
    """Prompt and answer are tokenised separately so the prompt tokens match what generation sees."""
    prompt_ids = tokenizer(format_prompt(row["input_field"], tokenizer, fmt),
                           add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(render_answer(row), add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids + [tokenizer.eos_token_id]
    # Truncate the prompt from the left: the question's tail (options, "Answer:") matters most.
    keep = max(max_len - len(answer_ids), 1)
    prompt_ids = prompt_ids[-keep:]
    ids = (prompt_ids + answer_ids)[:max_len]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_len]
    return Example(ids, labels, row.get("subtask", ""))


def make_batches(examples: list[Example], micro_batch: int, seed: int, pad_id: int, packing: bool):
    """Endless shuffled micro-batches of `micro_batch` examples.

    Packed: each micro-batch is one row with no padding at all (see collate_packed). Padded: rows of
    similar length are batched together to limit the padding.
    """
    rng = random.Random(seed)
    while True:
        if packing:
            order = list(range(len(examples)))
            rng.shuffle(order)
        else:
            order = sorted(range(len(examples)), key=lambda i: (len(examples[i].input_ids), rng.random()))
        chunks = [order[i : i + micro_batch] for i in range(0, len(order), micro_batch)]
        rng.shuffle(chunks)
        for chunk in chunks:
            batch = [examples[i] for i in chunk]
            yield collate_packed(batch) if packing else collate(batch, pad_id)


def collate_packed(batch: list[Example]) -> dict[str, torch.Tensor]:
    """All examples concatenated into one row, position ids restarting at 0 for each example.

    With no attention_mask, transformers reads the restarts as sequence boundaries and builds a
    block-diagonal causal mask (SDPA/eager) or varlen attention (flash-attention), so no token
    attends across examples. No label crosses a boundary either: each example starts with prompt
    tokens, which are labelled -100.
    """
    ids = [t for e in batch for t in e.input_ids]
    labels = [t for e in batch for t in e.labels]
    positions = [p for e in batch for p in range(len(e.input_ids))]
    return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([positions])}


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


def attach_lora(model: Any, rank: int, alpha: float, spec: TrainSpec):
    from peft import LoraConfig, get_peft_model

    targets = spec.target_modules if isinstance(spec.target_modules, list) else TARGET_MODULES[spec.target_modules]
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=spec.lora_dropout,
                        target_modules=targets, task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, config)


def _lr_lambda(spec: TrainSpec) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    def factor(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        progress = (step - spec.warmup_steps) / max(spec.steps - spec.warmup_steps, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def train_lora(model: Any, tokenizer: Any, rows: list[dict[str, Any]], spec: TrainSpec, *,
               seed: int, fmt: PromptFormat, device: str, on_log: LogFn | None = None) -> TrainResult:
    """Fine-tune the (already LoRA-wrapped) model in place."""
    if not rows:
        raise ValueError("no training rows")
    torch.manual_seed(seed)
    examples = [encode_example(r, tokenizer, fmt, spec.max_seq_len) for r in rows]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(spec))
    batches = make_batches(examples, spec.micro_batch, seed, tokenizer.pad_token_id, spec.packing)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model.train()
    start, seen_tokens, sup_tokens, curve, loss_val = time.perf_counter(), 0, 0, [], float("nan")
    for step in range(1, spec.steps + 1):
        loss_val, n_tok, n_sup = _optimizer_step(model, batches, spec.grad_accum, device)
        if not math.isfinite(loss_val):
            raise NonFiniteLossError(f"loss became {loss_val} at step {step} (lr {spec.lr}); "
                                     "lower train.lr or check the data")
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        seen_tokens, sup_tokens = seen_tokens + n_tok, sup_tokens + n_sup
        if step % spec.log_every == 0 or step == spec.steps:
            curve.append((step, loss_val))
            if on_log:
                on_log(step, loss_val)
    model.eval()
    wall = time.perf_counter() - start
    return TrainResult(
        steps=spec.steps, tokens=sup_tokens, final_loss=loss_val, wall_s=wall,
        tokens_per_s=seen_tokens / wall if wall else 0.0, peak_mem_mb=_peak_mem_mb(device),
        trainable_params=sum(p.numel() for p in params), loss_curve=curve,
        tokens_per_subtask=_tokens_per_subtask(examples),
    )


def _optimizer_step(model: Any, batches, grad_accum: int, device: str) -> tuple[float, int, int]:
    """Forward/backward over grad_accum micro-batches; returns (mean loss, tokens, supervised tokens)."""
    total_loss, tokens, supervised = 0.0, 0, 0
    for _ in range(grad_accum):
        batch = {k: v.to(device) for k, v in next(batches).items()}
        loss = model(**batch, use_cache=False).loss / grad_accum
        loss.backward()
        total_loss += loss.item()
        tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        supervised += int((batch["labels"] != IGNORE_INDEX).sum())
    return total_loss, tokens, supervised


def _tokens_per_subtask(examples: list[Example]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in examples:
        out[e.subtask] = out.get(e.subtask, 0) + len(e.input_ids)
    return out


def _peak_mem_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@torch.no_grad()
def eval_loss(model: Any, tokenizer: Any, rows: list[dict[str, Any]], spec: TrainSpec, *,
              fmt: PromptFormat, device: str, batch_size: int = 32) -> float:
    """Mean response-token loss on rows (the held-out loss that early stopping watches)."""
    examples = [encode_example(r, tokenizer, fmt, spec.max_seq_len) for r in rows]
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[i : i + batch_size],
                                                     tokenizer.pad_token_id).items()}
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += model(**batch, use_cache=False).loss.item() * n
        count += n
    return total / max(count, 1)
