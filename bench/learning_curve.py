"""Learning curve of the smoke mix: multiple-choice accuracy per subtask as LoRA training proceeds.

    python bench/learning_curve.py                                  # builtin:tiny, r16, 200 rows x 2 epochs
    python bench/learning_curve.py --rows 300 --rank 4 --every 0.5  # another budget, eval every half epoch
    python bench/learning_curve.py --model /path/to/tiny-dir        # a candidate builtin:tiny built elsewhere

The numbers in issue 15's notes (what the drills, the corpus direction, pretraining length and the
batching windows each bought) come from this script: one process, one CPU thread, about 2-3 minutes
for the default. It trains a LoRA adapter on the synthetic training rows of the given domains the way
a trial does (`encode_example` with `mc_answer`, `make_batches`' length windows, AdamW, the trial's
warm-up-then-cosine schedule, gradient clipping at 1.0) and scores every multiple-choice subtask's
held-out rows as a trial's evaluation does (`generate_responses`: by option-text likelihood).
`--base-only` prints the untrained model's scores and stops, after two probes of what pretraining
taught, asked the way the corpus writes them: each drill kind's accuracy on fresh drills, and the
stars of held-out reviews ("A review says: ... The reviewer gave"). It is a probe, not a trial: no
Ray, no records, no retrieval, ranking or generation scores (README command 1's report has those).
"""

from __future__ import annotations

import argparse
import math
import random
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.capacity.adapters import attach  # noqa: E402
from harness.data.prompting import resolve_format  # noqa: E402
from harness.data.prompting import continuation, format_prompt  # noqa: E402
from harness.evaluate.inference import generate_responses, option_scores  # noqa: E402
from harness.model import load_base_model  # noqa: E402
from harness.spec.schema import AdapterSpec, TrainSpec  # noqa: E402
from harness.tasks import registry, synthetic, world  # noqa: E402
from harness.training import batching  # noqa: E402
from harness.training.batching import encode_example, make_batches  # noqa: E402
from harness.training.levers import make_adamw  # noqa: E402
from harness.training.loop import _lr_lambda  # noqa: E402

DOMAINS = ("concept", "reasoning", "behavior", "multilingual")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="builtin:tiny")
    p.add_argument("--domains", default=",".join(DOMAINS), help="comma-separated domains to train on")
    p.add_argument("--rows", type=int, default=200, help="training rows per subtask")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=None, help="default: 2 x rank, as the smoke sweep")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--window", type=int, default=batching.LENGTH_WINDOW_STEPS,
                   help="make_batches' length-sort window in steps (a huge number sorts the whole mixture)")
    p.add_argument("--mc-answer", default="choice_text", choices=("option_text", "choice_text"))
    p.add_argument("--heldout", type=int, default=100, help="held-out rows per multiple-choice subtask")
    p.add_argument("--every", type=float, default=1.0, help="evaluate every this many epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--base-only", action="store_true")
    return p.parse_args()


def evaluate(model, tok, fmt, held: dict[str, list[dict]], mc_answer: str) -> dict[str, float]:
    """Accuracy per subtask, answered as a trial's evaluation answers them (`generate_responses`)."""
    model.eval()
    scores = {}
    for subtask, rows in held.items():
        responses = generate_responses(model, tok, rows, fmt=fmt, batch_size=64, device="cpu",
                                       mc_answer=mc_answer)
        scores[subtask] = sum(r == str(row["output_field"]) for r, row in zip(responses, rows)) / len(rows)
    model.train()
    return scores


def _accuracy(model, tok, fmt, prompts: list[str], options: list[list[str]], gold: list[int]) -> float:
    """Share of prompts whose likeliest option (summed log-probability) is the gold one."""
    scores = option_scores(model, tok, [format_prompt(p, tok, fmt) for p in prompts],
                           [[continuation(o, fmt) for o in opts] for opts in options], [None] * len(prompts),
                           batch_size=64, device="cpu")
    return sum(max(range(len(s)), key=s.__getitem__) == g for s, g in zip(scores, gold)) / len(gold)


def pretraining_probes(model, tok, fmt, n: int = 200) -> dict[str, float]:
    """Accuracy on n fresh drills of each choice kind (the corpus' layout, answer after "Answer:"),
    and on the stars of n held-out reviews, which the corpus states for training reviews only."""
    w = world.build_world(0)
    out = {}
    for drill in world._DRILLS:  # the corpus' generators: a probe of exactly what it taught
        rng, prompts, options, gold = random.Random(f"probe|{drill.__name__}"), [], [], []
        for _ in range(n):
            text = drill(w, rng)
            head, answer = text.rsplit("\nAnswer: ", 1)
            opts = re.findall(r"(?m)^\d+\. (.*)$", head)
            if answer not in opts:
                continue  # the copy drill: no options
            prompts.append(head + "\nAnswer:")
            options.append(opts)
            gold.append(opts.index(answer))
        if prompts:
            out[drill.__name__.removeprefix("_drill_")] = _accuracy(model, tok, fmt, prompts, options, gold)
    held = [r for r in w.reviews if w.split_of(r.key) == "heldout"][:n]
    stars = ["1 star", "2 stars", "4 stars", "5 stars"]
    out["review stars"] = _accuracy(model, tok, fmt, [f"A review says: {r.text} The reviewer gave" for r in held],
                                    [stars] * len(held), [world.RATINGS.index(r.rating) for r in held])
    return out


def show(label: str, scores: dict[str, float], started: float) -> None:
    cells = " ".join(f"{k}={v:.2f}" for k, v in scores.items())
    mean = statistics.mean(scores.values())
    print(f"{label} t={time.perf_counter() - started:.0f}s MC mean {mean:.3f} | {cells}", flush=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok, model, info = load_base_model(args.model)
    fmt = resolve_format("auto", tok)
    subtasks = [s.id for d in args.domains.split(",") for s in registry.subtasks_of(d)]
    multiple_choice = [s for s in subtasks if registry.get_subtask(s).task_type == "multiple-choice"]
    held = {s: synthetic.generate_rows(s, "heldout", args.heldout) for s in multiple_choice}
    print(f"{info.model_id} ({info.revision}, {info.n_params / 1e6:.2f}M params); {len(subtasks)} subtasks, "
          f"{len(multiple_choice)} multiple-choice scored on {args.heldout} held-out rows each", flush=True)
    started = time.perf_counter()
    show("base", evaluate(model, tok, fmt, held, args.mc_answer), started)
    if args.base_only:
        probes = pretraining_probes(model, tok, fmt)
        print("pretraining probes (chance 0.25): " + " ".join(f"{k}={v:.2f}" for k, v in probes.items()))
        return
    rows = [r for s in subtasks for r in synthetic.generate_rows(s, "train", args.rows)]
    examples = [encode_example(r, tok, fmt, 512, mc_answer=args.mc_answer) for r in rows]
    model = attach(model, AdapterSpec(rank=args.rank, alpha=args.alpha or 2 * args.rank)).model
    params = [p for p in model.parameters() if p.requires_grad]
    steps = math.ceil(args.epochs * len(examples) / args.micro_batch)
    spec = TrainSpec(steps=steps, lr=args.lr, warmup_steps=min(args.warmup, steps),
                     micro_batch=args.micro_batch)
    opt = make_adamw(params, spec.lr, spec.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(spec))  # the trial's schedule
    batching.LENGTH_WINDOW_STEPS = args.window
    batches = make_batches(examples, args.micro_batch, args.seed, tok.pad_token_id, packing=False)
    every = max(1, round(args.every * len(examples) / args.micro_batch))
    losses: list[float] = []
    model.train()
    for step in range(1, steps + 1):
        loss = model(**next(batches)[0].batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % every == 0 or step == steps:
            epoch = step * args.micro_batch / len(examples)
            show(f"epoch {epoch:.1f} step {step} loss {statistics.mean(losses[-50:]):.3f}",
                 evaluate(model, tok, fmt, held, args.mc_answer), started)


if __name__ == "__main__":
    main()
