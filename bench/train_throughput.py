"""Training throughput: our LoRA trainer against a plain transformers + peft loop, side by side.

    python bench/train_throughput.py --shape tiny --device cpu --steps 10            # CPU, here
    python bench/train_throughput.py --shape qwen2.5-0.5b --device cuda --rank 16 64  # a GPU machine

Both paths train the same randomly initialised model of a real shape (no weights needed) with LoRA on
all linear layers and AdamW on the adapter, on the same instruction-length samples (the synthetic
world's training rows, token ids drawn at random when the vocabulary is larger than the tiny
tokenizer's). The plain loop pads each batch to its longest sample, as `transformers` collators do;
ours packs each micro-batch into one padding-free row. Printed per path: tokens/s (real tokens, not
padding), MFU (6 x trainable-forward FLOPs approximation: 2N forward + 4N backward over all weights),
peak memory. `--out FILE` writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from harness.planning import KNOWN_SHAPES, model_shape

PEAK_TFLOPS = {"cuda": 989.0, "cpu": None}  # H200 dense bf16 datasheet; no MFU on CPU


def build_model(shape_name: str, device: str, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = model_shape("builtin:tiny" if shape_name == "tiny" else shape_name)
    config = Qwen2Config(hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                         intermediate_size=shape.inter, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab,
                         tie_word_embeddings=shape.tied, max_position_embeddings=4096)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).to(device=device, dtype=dtype), shape


def sample_examples(n: int, vocab: int, seed: int = 0):
    """Instruction-length samples: lengths of the synthetic world's rows, random token ids."""
    from harness.model import load_base_model
    from harness.tasks import registry, synthetic
    from harness.train import encode_example

    tokenizer, _, _ = load_base_model("builtin:tiny")
    rows = [r for s in registry.all_subtasks() for r in synthetic.generate_rows(s.id, "train", 20)]
    random.Random(seed).shuffle(rows)
    examples = [encode_example(r, tokenizer, "raw", 1024) for r in rows[:n]]
    if vocab != len(tokenizer):
        rng = random.Random(seed)
        examples = [type(e)([rng.randrange(vocab) for _ in e.input_ids],
                            [l if l < 0 else rng.randrange(vocab) for l in e.labels], e.subtask)
                    for e in examples]
    return examples


def run_path(path: str, model, examples, batch: int, steps: int, device: str) -> dict:
    from harness.train import collate, collate_packed

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                            fused=device == "cuda")
    batches = [examples[i : i + batch] for i in range(0, len(examples) - batch + 1, batch)]
    times, tokens = [], 0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 2):  # two warm-up steps
        chunk = batches[step % len(batches)]
        inputs = collate_packed(chunk) if path == "ours" else collate(chunk, 0)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        _sync(device)
        start = time.perf_counter()
        loss = model(**inputs, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if step >= 2:
            times.append(time.perf_counter() - start)
            tokens += sum(len(e.input_ids) for e in chunk)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"path": path, "tokens_per_s": tokens / sum(times), "step_s_median": statistics.median(times),
            "peak_gib": peak}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="tiny", choices=["tiny", *KNOWN_SHAPES])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rank", type=int, nargs="+", default=[16])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from peft import LoraConfig, get_peft_model

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    rows = []
    for rank in args.rank:
        for path in ("plain", "ours"):
            model, shape = build_model(args.shape, args.device, dtype)
            model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
            examples = sample_examples(args.batch * (args.steps + 2), shape.vocab)
            result = run_path(path, model, examples, args.batch, args.steps, args.device)
            peak = PEAK_TFLOPS.get(args.device.split(":")[0])
            result.update(shape=args.shape, rank=rank, batch=args.batch, device=args.device,
                          mfu=(6 * shape.params * result["tokens_per_s"] / (peak * 1e12)) if peak else None)
            rows.append(result)
            print(f"{args.shape:14s} r{rank:<3d} {path:6s} {result['tokens_per_s']:10.0f} tok/s  "
                  f"step {result['step_s_median'] * 1e3:7.1f} ms  peak {result['peak_gib']:.2f} GiB"
                  + (f"  MFU {result['mfu']:.1%}" if result["mfu"] else ""))
            del model
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
