"""Evaluation throughput: questions per second of three inference paths, side by side in one run.

    python bench/eval_throughput.py --out eval_throughput_cpu.json        # builtin:tiny, CPU, ~1 min
    python bench/eval_throughput.py --model-shape qwen2.5-0.5b --device cuda --per-subtask 48 \\
        --plain-limit 32 --repeats 2 --out eval_throughput_h200.json      # a GPU machine, 2-5 min

Paths, all greedy and with the per-task-type new-token budgets of `harness.data.prompting.MAX_NEW_TOKENS`:
  plain      one `model.generate` per question (batch 1), the naive loop
  batched    `generate_responses`: task-type groups, length-sorted, left-padded batches
  mc-logits  `generate_responses(mc_logits=True)`: multiple-choice rows from one forward pass over the
             prompt (option-digit logits); the other task types as in `batched`
Each path is timed on the multiple-choice questions and on the whole synthetic held-out set
(`build_eval_sets(EvalSpec(per_subtask=N))`, all 19 subtasks), median of --repeats runs after a warm-up.

builtin:tiny (default) gets a LoRA adapter trained for --lora-steps steps first, so it answers in the
trained format and stops at EOS as a fine-tuned trial's model does. --model-shape builds a randomly
initialised model of that shape (no weights needed) in bf16 with an untrained LoRA adapter of
--lora-rank, fed by the builtin:tiny tokenizer (its ids are a subset of the larger vocabulary); a random
model never emits EOS, so every generation there runs its full budget (the worst case for generation).
The run also checks that mc-logits picks the option generation picked whenever generation answered an
option digit. `--out FILE` writes the table and the machine as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import torch

from harness.data.mixture import build_eval_sets
from harness.data.prompting import MAX_NEW_TOKENS, format_prompt
from harness.evaluate.inference import count_options, generate_responses
from harness.spec.schema import EvalSpec, TrainSpec

FMT = "raw"  # builtin:tiny has no chat template; the random shapes use its tokenizer


def load_model(args: argparse.Namespace):
    """(tokenizer, LoRA-wrapped model in eval mode, description)."""
    from harness.capacity.adapters import attach
    from harness.model import load_base_model
    from harness.spec.schema import AdapterSpec
    from harness.training.loop import train_adapter

    tokenizer, tiny, _ = load_base_model("builtin:tiny")
    spec = TrainSpec(steps=max(args.lora_steps, 1), lr=3e-3, warmup_steps=2, micro_batch=16)
    if args.model_shape is None:
        model = attach(tiny, AdapterSpec(rank=args.lora_rank, alpha=2 * args.lora_rank)).model
        if args.lora_steps:
            train_adapter(model, tokenizer, _train_rows(), spec, seed=0, fmt=FMT, device="cpu")
        desc = f"builtin:tiny + LoRA r{args.lora_rank} ({args.lora_steps} steps)"
    else:
        base = random_model(args.model_shape, tokenizer, args.device)
        model = attach(base, AdapterSpec(rank=args.lora_rank, alpha=2 * args.lora_rank)).model
        desc = f"random {args.model_shape} + untrained LoRA r{args.lora_rank}"
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    return tokenizer, model.to(device=args.device, dtype=dtype).eval(), desc


def random_model(shape_name: str, tokenizer: Any, device: str = "cpu"):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from harness.spec.estimate import model_shape

    shape = model_shape(shape_name)
    if shape is None:
        raise SystemExit(f"unknown --model-shape {shape_name!r}")
    config = Qwen2Config(hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                         intermediate_size=shape.inter, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab,
                         tie_word_embeddings=shape.tied, max_position_embeddings=32768,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):  # initialise where it runs: seconds saved on the CPU for large shapes
        return Qwen2ForCausalLM(config)


def _train_rows() -> list[dict[str, Any]]:
    from harness.tasks import registry, synthetic

    return [r for s in registry.all_subtasks() for r in synthetic.generate_rows(s.id, "train", 16, seed=0)]


@torch.no_grad()
def plain_responses(model, tokenizer, rows, device: str) -> list[str]:
    """The naive loop: one prompt, one generate call, per question."""
    out = []
    for row in rows:
        enc = tokenizer(format_prompt(row["input_field"], tokenizer, FMT), return_tensors="pt",
                        add_special_tokens=False).to(device)
        ids = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS[row["task_type"]], do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        out.append(tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def paths(model, tokenizer, args) -> dict[str, Any]:
    common = dict(fmt=FMT, batch_size=args.batch_size, device=args.device)
    return {
        "plain": lambda rows: plain_responses(model, tokenizer, rows, args.device),
        "batched": lambda rows: generate_responses(model, tokenizer, rows, **common),
        "mc-logits": lambda rows: generate_responses(model, tokenizer, rows, mc_logits=True, **common),
    }


def timed(fn, rows, repeats: int, device: str) -> tuple[float, list[str]]:
    """Median wall seconds over `repeats` runs, and the last run's responses."""
    walls, responses = [], []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        responses = fn(rows)
        _sync(device)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), responses


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(model, tokenizer, rows, args) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    mc = [r for r in rows if r["task_type"] == "multiple-choice"]
    sets = {"mc": mc, "all": rows}
    results, answers = [], {}
    for name, fn in paths(model, tokenizer, args).items():
        fn(rows[:: max(len(rows) // 8, 1)])  # warm-up: allocator, kernels, every task type
        for set_name, set_rows in sets.items():
            subset = _spread(set_rows, args.plain_limit) if name == "plain" else set_rows
            wall, responses = timed(fn, subset, args.repeats, args.device)
            results.append({"path": name, "set": set_name, "questions": len(subset), "wall_s": wall,
                            "questions_per_s": len(subset) / wall})
            if set_name == "mc" and name != "plain":
                answers[name] = responses
    return results, agreement(mc, answers["batched"], answers["mc-logits"])


def _spread(rows: list, limit: int) -> list:
    """Every k-th row, so a limited plain run keeps the task mix."""
    if not limit or limit >= len(rows):
        return rows
    step = len(rows) / limit
    return [rows[int(i * step)] for i in range(limit)]


def agreement(mc_rows, generated: list[str], fast: list[str]) -> dict[str, Any]:
    digit = [i for i, g in enumerate(generated)
             if g.strip()[:1].isdigit() and int(g.strip()[0]) < count_options(mc_rows[i]["input_field"])]
    agree = sum(fast[i] == generated[i].strip()[0] for i in digit)
    return {"mc_questions": len(mc_rows), "generation_answered_a_digit": len(digit), "agree": agree}


def machine(device: str) -> dict[str, Any]:
    import transformers

    info = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def print_table(results: list[dict[str, Any]], check: dict[str, Any]) -> None:
    plain = {r["set"]: r["questions_per_s"] for r in results if r["path"] == "plain"}
    print(f"{'path':<10} {'set':<4} {'questions':>9} {'wall s':>8} {'q/s':>9} {'x plain':>8}")
    for r in results:
        print(f"{r['path']:<10} {r['set']:<4} {r['questions']:>9} {r['wall_s']:>8.2f} "
              f"{r['questions_per_s']:>9.1f} {r['questions_per_s'] / plain[r['set']]:>8.2f}")
    print(f"mc-logits vs batched generation: {check['agree']}/{check['generation_answered_a_digit']} agree "
          f"where generation answered an option digit ({check['mc_questions']} MC questions)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-shape", default=None, help="e.g. qwen2.5-0.5b: random weights of that shape")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--per-subtask", type=int, default=24, help="held-out questions per synthetic subtask")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--plain-limit", type=int, default=0, help="questions for the plain path (0: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--lora-steps", type=int, default=30,
                    help="builtin:tiny only; 0 keeps the adapter untrained (never stops at EOS)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 suits a shared machine)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer, model, desc = load_model(args)
    rows = build_eval_sets(EvalSpec(per_subtask=args.per_subtask))["synthetic-heldout"]
    results, check = measure(model, tokenizer, rows, args)
    print(f"{desc} on {args.device}, batch {args.batch_size}, {len(rows)} held-out questions")
    print_table(results, check)
    if args.out:
        doc = {"model": desc, "args": vars(args), "machine": machine(args.device), "results": results,
               "mc_agreement": check}
        with open(args.out, "w") as fh:
            json.dump(doc, fh, indent=2)


if __name__ == "__main__":
    main()
