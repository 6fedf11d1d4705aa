"""Option scoring: one full (prompt + option) sequence per option vs one prompt pass and its KV cache.

    python bench/option_scoring.py                       # builtin:tiny, CPU, 1 thread, ~1-2 min
    python bench/option_scoring.py --lora-rank 16 --out option_scoring_cpu.json

`harness.evaluate.inference.option_scores` scores every option text of a question by its summed
log-probability as the continuation (mc_answer option_text / choice_text). Paths, timed side by side:
  full    `_option_scores_full`: one (prompt + option) sequence per option, length-sorted batches
          (what option_scores did before), so a 4-option question runs its prompt 4 times
  shared  `_option_scores_shared`: each prompt once with use_cache=True, its cache copied to one row
          per option (reorder_cache), the option tokens run after it (what option_scores does now)
Rows: --per-subtask synthetic held-out questions of every multiple-choice, retrieval and ranking subtask
in `harness.tasks.registry`, prompts formatted as evaluation formats them (`format_prompt`, format
auto); options as `_answer_by_texts` reads them (option texts then EOS; candidate texts then LIST_END).
Each task type is timed on its own, median of --repeats runs after a warm-up; the two paths alternate
so load from other jobs falls on both. The max absolute score difference between them is printed too.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.data.prompting import LISTED, candidate_texts, format_prompt, option_texts, resolve_format  # noqa: E402
from harness.evaluate.inference import (LIST_END, MC, _option_scores_full,  # noqa: E402
                                        _option_scores_shared)
from harness.tasks import registry, synthetic  # noqa: E402

TASK_TYPES = (MC, *LISTED)


def load(args: argparse.Namespace) -> tuple[Any, Any, str]:
    from harness.model import load_base_model

    tokenizer, model, _ = load_base_model("builtin:tiny")
    desc = "builtin:tiny"
    if args.lora_rank:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=args.lora_rank, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
        desc += f" + untrained LoRA r{args.lora_rank} (peft)"
    return tokenizer, model.to(args.device).eval(), desc


def question_sets(tokenizer: Any, per_subtask: int) -> dict[str, tuple[list[str], list[list[str]], list]]:
    """task type -> (prompts, options, ends), as evaluation builds them."""
    fmt = resolve_format("auto", tokenizer)
    sets: dict[str, tuple[list[str], list[list[str]], list]] = {t: ([], [], []) for t in TASK_TYPES}
    for subtask in registry.all_subtasks():
        if subtask.task_type not in sets:
            continue
        prompts, options, ends = sets[subtask.task_type]
        for row in synthetic.generate_rows(subtask.id, "heldout", per_subtask, seed=0):
            texts = (option_texts if subtask.task_type == MC else candidate_texts)(row["input_field"])
            if texts:
                prompts.append(format_prompt(row["input_field"], tokenizer, fmt))
                options.append(texts)
                ends.append(None if subtask.task_type == MC else LIST_END)
    return sets


def run(model: Any, tokenizer: Any, sets: dict, args: argparse.Namespace) -> list[dict[str, Any]]:
    paths = {"full": _option_scores_full, "shared": _option_scores_shared}
    kw = dict(batch_size=args.batch_size, device=args.device, max_prompt_tokens=args.max_prompt_tokens)
    for name, fn in paths.items():  # warm-up: allocator, every task type
        for prompts, options, ends in sets.values():
            fn(model, tokenizer, prompts[:8], options[:8], ends[:8], **kw)
    results = []
    for task_type, (prompts, options, ends) in sets.items():
        walls: dict[str, list[float]] = {name: [] for name in paths}
        scores: dict[str, Any] = {}
        for _ in range(args.repeats):
            for name, fn in paths.items():
                start = time.perf_counter()
                scores[name] = fn(model, tokenizer, prompts, options, ends, **kw)
                walls[name].append(time.perf_counter() - start)
        if scores["shared"] is None:
            raise SystemExit("the model returned no usable KV cache: option_scores would fall back to full")
        diff = max(abs(a - b) for fr, sr in zip(scores["full"], scores["shared"]) for a, b in zip(fr, sr))
        full, shared = statistics.median(walls["full"]), statistics.median(walls["shared"])
        tokens = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        results.append({"task_type": task_type, "questions": len(prompts), "options": sum(map(len, options)),
                        "mean_prompt_tokens": sum(tokens) / len(tokens), "full_s": full, "shared_s": shared,
                        "speedup": full / shared, "max_abs_diff": diff})
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'task type':<16} {'questions':>9} {'options':>7} {'prompt tok':>10} {'full s':>8} "
          f"{'shared s':>8} {'speedup':>7} {'max |diff|':>10}")
    for r in results:
        print(f"{r['task_type']:<16} {r['questions']:>9} {r['options']:>7} {r['mean_prompt_tokens']:>10.1f} "
              f"{r['full_s']:>8.2f} {r['shared_s']:>8.2f} {r['speedup']:>7.2f} {r['max_abs_diff']:>10.2e}")
    full, shared = sum(r["full_s"] for r in results), sum(r["shared_s"] for r in results)
    print(f"{'all':<16} {sum(r['questions'] for r in results):>9} {sum(r['options'] for r in results):>7} "
          f"{'':>10} {full:>8.2f} {shared:>8.2f} {full / shared:>7.2f} "
          f"{max(r['max_abs_diff'] for r in results):>10.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--per-subtask", type=int, default=100, help="held-out questions per subtask")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-prompt-tokens", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lora-rank", type=int, default=0, help="wrap in an untrained peft LoRA of this rank (0: none)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 suits a shared machine)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer, model, desc = load(args)
    sets = question_sets(tokenizer, args.per_subtask)
    with torch.no_grad():
        results = run(model, tokenizer, sets, args)
    print(f"{desc} on {args.device}, batch {args.batch_size}, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print_table(results)
    if args.out:
        import transformers

        machine = {"platform": platform.platform(), "torch": torch.__version__,
                   "transformers": transformers.__version__, "torch_threads": torch.get_num_threads()}
        with open(args.out, "w") as fh:
            json.dump({"model": desc, "args": vars(args), "machine": machine, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
