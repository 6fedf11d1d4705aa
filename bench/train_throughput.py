"""Training throughput: our LoRA training levers against a plain transformers + peft loop, side by side.

    python bench/train_throughput.py --shape tiny --device cpu --steps 10                  # CPU, here
    python bench/train_throughput.py --shape tiny --steps 6 --configs bucket chunked bucket+chunked
    python bench/train_throughput.py --shape qwen2.5-0.5b --device cuda --rank 16 64 --batch 64 \\
        --configs bucket+chunked+compile+fused-adamw                                      # a GPU machine

Every path trains the same randomly initialised model of a real shape (no weights needed; `--layers`
keeps fewer decoder layers for a CPU-sized version) with LoRA on all linear layers and AdamW on the
adapter, on the same instruction-length samples (the synthetic world's training rows, token ids drawn at
random when the vocabulary is larger than the tiny tokenizer's; about 69 tokens, 7% of them labelled), or with
`--data GLOB` the rows of real ShopBench files (EC-Guide with the SmolLM2 tokenizer: 133 tokens on
average, 46 at the 10th percentile, 234 at the 90th).
Every path sees exactly the same samples in its timed steps, so tokens/s compare like for like.

plain   what a transformers + peft user writes: batches in data order padded to their longest sample,
        `model(**batch).loss` (full-vocabulary logits in fp32), torch's default AdamW.
ours    the plain loop plus the levers named by the flags, or one configuration per `--configs` entry
        (levers joined by '+'), each in a freshly built model:
          bucket       length-bucketed padded batches, as harness.training.batching.make_batches pads
          packing      each micro-batch packed into padding-free rows of at most --pack-length tokens
                       (harness.training.batching.collate_packed, first-fit decreasing; default the longest sample,
                       as the trainer; 0: one row per micro-batch)
          flex         attention through torch's flex_attention (harness.training.levers.attention_kernel): the
                       packed block mask skips cross-sample blocks, so packing runs one row
          chunked      harness.training.losses.causal_lm_loss: LM head on labelled positions only, chunked,
                       checkpointed (--loss chunked); fused-ce: the same with the gradient computed in
                       the forward pass (--loss fused); chunked-all: chunked over every position, to
                       measure what dropping the unlabelled ones saves (--loss chunked-all)
          compile      torch.compile of every decoder layer (harness.training.levers.compile_decoder_layers)
          fused-adamw  AdamW(fused=True)
          grad-ckpt    activation checkpointing, non-reentrant (harness.training.levers.enable_activation_checkpointing)
          auto-batch   micro-batch from harness.training.micro_batch.pick_micro_batch (a device probe), with
                       gradient accumulation keeping --batch as the effective batch

Printed per path: tokens/s (real tokens, not padding) and its ratio to plain, median step time, peak
memory (CUDA: max allocated; CPU: the process's peak RSS, high-water mark reset before each path) and its
ratio to plain, and MFU on CUDA (useful FLOPs per token as DESIGN.md section 8's anchor counts them: 4 x
the matmul parameters, LM head included, plus attention over the sample; LoRA's own FLOPs not counted).
`--out FILE` writes the rows as a JSON list, rewritten after every row so a killed run keeps its rows.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import platform
import random
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from harness.shapes import KNOWN_SHAPES, ModelShape, model_shape

PEAK_TFLOPS = {"cuda": 989.0, "cpu": None}  # H200 dense bf16 datasheet; no MFU on CPU
LEVER_NAMES = ("bucket", "packing", "flex", "chunked-all", "chunked", "fused-ce", "compile", "fused-adamw",
               "grad-ckpt", "auto-batch")
LOSS_LEVERS = {"chunked-all": "chunked-all", "chunked": "chunked", "fused-ce": "fused"}  # lever -> --loss


@dataclass(frozen=True)
class Levers:
    bucket: bool = False
    packing: bool = False
    flex: bool = False
    loss: str = "plain"  # plain | chunked-all | chunked | fused
    compile: bool = False
    fused_adamw: bool = False
    grad_ckpt: bool = False
    auto_batch: bool = False

    @property
    def name(self) -> str:
        on = {"bucket": self.bucket, "packing": self.packing, "flex": self.flex, "compile": self.compile,
              "fused-adamw": self.fused_adamw, "grad-ckpt": self.grad_ckpt, "auto-batch": self.auto_batch,
              **{lever: self.loss == loss for lever, loss in LOSS_LEVERS.items()}}
        return "+".join(n for n in LEVER_NAMES if on[n]) or "none"


def parse_levers(text: str) -> Levers:
    """'bucket+chunked+compile' -> Levers(bucket=True, loss='chunked', compile=True); 'none' -> no lever."""
    lv = Levers()
    for name in filter(None, text.split("+")):
        if name == "none":
            continue
        if name not in LEVER_NAMES:
            raise SystemExit(f"unknown lever {name!r}; choose from {', '.join(LEVER_NAMES)} (join with '+')")
        if name in LOSS_LEVERS:
            lv = replace(lv, loss=LOSS_LEVERS[name])
        else:
            lv = replace(lv, **{name.replace("-", "_"): True})
    return lv


# ------------------------------------------------------------------------------------------------
# model and data


def bench_shape(name: str, layers: int | None) -> ModelShape:
    shape = model_shape("builtin:tiny" if name == "tiny" else name)
    return replace(shape, layers=layers) if layers else shape


def build_model(shape: ModelShape, rank: int, device: str, dtype: torch.dtype):
    """Random-initialised Qwen2 of `shape`, created on the device in its dtype, LoRA on all linear layers."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                         intermediate_size=shape.inter, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab,
                         tie_word_embeddings=shape.tied, max_position_embeddings=4096, use_cache=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in bf16 directly: no fp32 copy of a 7B model
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                             lora_dropout=0.0, task_type="CAUSAL_LM"))
    model.train()
    return model


def sample_examples(n: int, vocab: int, seed: int = 0, data: str = "synthetic", tokenizer: str = "builtin:tiny",
                    max_len: int = 1024):
    """n instruction-length samples, cycled: the synthetic world's rows, or the rows of the ShopBench
    files matching the glob `data` (real instruction data, lengths that vary widely), tokenised by
    builtin:tiny's tokenizer or that of `tokenizer`; token ids drawn at random past its vocabulary."""
    from harness.training.batching import encode_example

    tok = _load_tokenizer(tokenizer)
    rng = random.Random(seed)
    base = [encode_example(r, tok, "raw", max_len) for r in _rows(data, rng)]
    examples = []
    while len(examples) < n:
        rng.shuffle(base)
        examples += base[: n - len(examples)]
    if vocab != len(tok):
        examples = [type(e)([rng.randrange(vocab) for _ in e.input_ids],
                            [l if l < 0 else rng.randrange(vocab) for l in e.labels], e.subtask)
                    for e in examples]
    return examples


def _rows(data: str, rng: random.Random, per_source: int = 400) -> list[dict]:
    import glob

    from harness.tasks import registry, synthetic
    from harness.tasks.shopbench_io import read_shopbench

    if data == "synthetic":
        return [r for s in registry.all_subtasks() for r in synthetic.generate_rows(s.id, "train", 20)]
    paths = sorted(glob.glob(data))
    if not paths:
        raise SystemExit(f"--data {data!r}: no file matches; give 'synthetic' or a glob of ShopBench files")
    rows = []
    for path in paths:  # the same number from each file, so no one task's lengths dominate
        file_rows = read_shopbench(path, skip_bad=True).rows
        rows += rng.sample(file_rows, min(per_source, len(file_rows)))
    return rows


def _load_tokenizer(model_id: str):
    """The tokenizer trials use (builtin:tiny's is shipped: no model build); token ids are all the bench needs."""
    from harness.model import TINY_ID, build_tiny_tokenizer, load_tokenizer, resolve_model_path

    return build_tiny_tokenizer() if model_id == TINY_ID else load_tokenizer(resolve_model_path(model_id)[0])


def make_steps(examples, batch: int, levers: Levers | None, seed: int = 0) -> list[list]:
    """The samples of each step. Plain (levers None): data order. Bucketed: sorted by length, cut into
    batches, batches shuffled (harness.training.batching.make_batches' padded mode). Every layout covers the same
    samples, so the timed work is identical in tokens."""
    order = list(range(len(examples)))
    if levers is not None and levers.bucket and not levers.packing:
        rng = random.Random(seed)
        order.sort(key=lambda i: (len(examples[i].input_ids), rng.random()))
        chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
        rng.shuffle(chunks)
        order = [i for c in chunks for i in c]
    return [[examples[i] for i in order[s : s + batch]] for s in range(0, len(order), batch)]


def collate_for(levers: Levers | None, pack_length: int):
    from harness.training.batching import collator

    packing = levers is not None and levers.packing
    return collator(packing, 0, None if (levers and levers.flex) or not pack_length else pack_length)


def loss_for(levers: Levers | None, chunk_tokens: int):
    from harness.training.losses import causal_lm_loss

    loss = "plain" if levers is None else levers.loss
    if loss == "plain":
        return lambda model, batch: model(**batch, use_cache=False).loss
    impl = "fused" if loss == "fused" else "checkpoint"
    select = loss != "chunked-all"
    return lambda model, batch: causal_lm_loss(model, batch, chunk_tokens, impl=impl, select_labelled=select)


# ------------------------------------------------------------------------------------------------
# measurement


class PeakMemory:
    """CUDA: max allocated. CPU: the process's peak RSS, its high-water mark reset at start (Linux)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _malloc_trim()  # hand freed heap back to the OS, so RSS is live memory, not the last path's leftovers
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")  # reset VmHWM
            except OSError:
                pass
            self.base = _proc_status_kib("VmRSS") * 1024

    def peak(self) -> tuple[float, float]:
        """(peak GiB, peak above the start GiB)."""
        peak = torch.cuda.max_memory_allocated() if self.cuda else _proc_status_kib("VmHWM") * 1024
        return peak / 2**30, (peak - self.base) / 2**30


def _malloc_trim() -> None:
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _proc_status_kib(key: str) -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def flops_per_token(shape: ModelShape, mean_len: float) -> float:
    """DESIGN.md section 8's count: forward 2N + backward activation-gradients 2N over the matmul
    weights (decoder layers + LM head; frozen base, so no weight gradients), plus attention."""
    matmul = shape.params - shape.vocab * shape.hidden * (1 if shape.tied else 2) + shape.vocab * shape.hidden
    attention = 2 * 2 * shape.layers * mean_len * shape.hidden
    return 4 * matmul + 2 * attention


def run_path(model, steps: list[list], levers: Levers | None, args, device: str, rank: int) -> dict[str, Any]:
    """Warm up on the first --warmup steps, then time every step; one optimiser step per effective batch."""
    from harness.training import levers as lv_mod

    lv = levers or Levers()
    if lv.flex:  # a fresh model per configuration: nothing to put back
        from harness.training.losses import unwrap_causal_lm

        unwrap_causal_lm(model).set_attn_implementation("flex_attention")
    if lv.grad_ckpt:
        lv_mod.enable_activation_checkpointing(model)
    if lv.compile:
        lv_mod.compile_decoder_layers(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = lv_mod.make_adamw(params, lr=1e-4, fused=lv.fused_adamw)
    longest = max(len(e.input_ids) for chunk in steps for e in chunk)
    pack_length = longest if args.pack_length is None else args.pack_length
    collate, loss_fn = collate_for(levers, pack_length), loss_for(levers, args.chunk_tokens)
    micro, accum, probe_s = len(steps[0]), 1, 0.0
    if lv.auto_batch:
        micro, accum, probe_s = _auto_micro_batch(model, steps, collate, loss_fn, device, args, lv, rank)
    memory = PeakMemory(device)
    memory.start()
    warmup = args.warmup if args.warmup is not None else (4 if lv.compile or lv.flex else 2)
    times, tokens = [], 0
    t_warm = time.perf_counter()
    for i in range(warmup + len(steps)):
        chunk = steps[i % len(steps)] if i < warmup else steps[i - warmup]
        _sync(device)
        start = time.perf_counter()
        for m in range(0, len(chunk), micro):
            inputs = {k: v.to(device, non_blocking=True) for k, v in collate(chunk[m : m + micro]).items()}
            (loss_fn(model, inputs) / accum).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i == warmup - 1:
            warm_s = time.perf_counter() - t_warm
        if i >= warmup:
            times.append(time.perf_counter() - start)
            tokens += sum(len(e.input_ids) for e in chunk)
    peak, delta = memory.peak()
    return {"tokens_per_s": tokens / sum(times), "step_s_median": statistics.median(times),
            "peak_gib": peak, "peak_delta_gib": delta, "tokens": tokens, "micro_batch": micro,
            "grad_accum": accum, "warmup_s": round(warm_s if warmup else 0.0, 2), "probe_s": round(probe_s, 2)}


def _auto_micro_batch(model, steps, collate, loss_fn, device, args, levers: Levers,
                      rank: int) -> tuple[int, int, float]:
    """What the trainer does for micro_batch: auto (harness.training.micro_batch.auto_micro_batch)."""
    from harness.training.micro_batch import GIB, auto_micro_batch

    batch = len(steps[0])
    longest = sorted((e for chunk in steps for e in chunk), key=lambda e: -len(e.input_ids))
    start = time.perf_counter()
    micro, accum = auto_micro_batch(
        model, lambda n: collate(longest[:n]), batch, device, rank=rank,
        tokens_per_sample=len(longest[0].input_ids),
        loss="plain" if levers.loss == "plain" else "chunked", grad_ckpt=levers.grad_ckpt,
        chunk_tokens=args.chunk_tokens, loss_fn=loss_fn,
        budget_bytes=args.memory_budget_gib * GIB if args.memory_budget_gib else None)
    print(f"auto-batch: picked {micro} x {accum} in {time.perf_counter() - start:.1f} s", flush=True)
    return micro, accum, time.perf_counter() - start


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------
# driver


def configurations(args) -> list[Levers | None]:
    """None is the plain baseline."""
    ours = [parse_levers(c) for c in args.configs] if args.configs else [Levers(
        bucket=args.bucket, packing=args.packing, flex=args.flex, loss=args.loss, compile=args.compile,
        fused_adamw=args.fused_adamw, grad_ckpt=args.grad_ckpt, auto_batch=args.auto_batch)]
    return ([] if args.no_plain else [None]) + ours


def machine(device: str) -> dict[str, Any]:
    import peft
    import transformers

    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"
    return {"device_name": name,
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "threads": torch.get_num_threads()}


def measure(args) -> list[dict[str, Any]]:
    device = args.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    shape = bench_shape(args.shape, args.layers)
    info = machine(device)
    rows: list[dict[str, Any]] = []
    for batch in args.batch:
        examples = sample_examples(batch * args.steps, shape.vocab, data=args.data, tokenizer=args.tokenizer,
                                   max_len=args.max_seq_len)
        mean_len = statistics.mean(len(e.input_ids) for e in examples)
        labelled = sum(l >= 0 for e in examples for l in e.labels) / sum(len(e.labels) for e in examples)
        for rank in args.rank:
            plain = None
            for levers in configurations(args):
                model = build_model(shape, rank, device, dtype)
                try:
                    result = run_path(model, make_steps(examples, batch, levers), levers, args, device, rank)
                except Exception as exc:  # one failing lever must not lose the other rows
                    result = {"error": repr(exc)[:300]}
                del model
                gc.collect()
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                row = _row(args, shape, rank, batch, levers, result, info, mean_len, labelled, plain)
                if levers is None and "error" not in result:
                    plain = row
                rows.append(row)
                print(_line(row), flush=True)
                if args.out:
                    with open(args.out, "w") as fh:
                        json.dump(rows, fh, indent=2)
    return rows


def _row(args, shape, rank, batch, levers, result, info, mean_len, labelled, plain) -> dict[str, Any]:
    peak = PEAK_TFLOPS.get(args.device.split(":")[0])
    row = {"path": "plain" if levers is None else "ours", "levers": "none" if levers is None else levers.name,
           "shape": args.shape, "layers": shape.layers, "rank": rank, "batch": batch, "device": args.device,
           "steps": args.steps, "mean_tokens_per_sample": round(mean_len, 1),
           "labelled_fraction": round(labelled, 4), **result, **info}
    if "tokens_per_s" in result:
        row["mfu"] = (flops_per_token(shape, mean_len) * result["tokens_per_s"] / (peak * 1e12)) if peak else None
        if plain is not None:
            row["x_plain_tokens_per_s"] = result["tokens_per_s"] / plain["tokens_per_s"]
            row["x_plain_peak"] = result["peak_gib"] / plain["peak_gib"] if plain["peak_gib"] else None
    return row


def _line(row: dict[str, Any]) -> str:
    head = (f"{row['shape']:12s} L{row['layers']:<2d} r{row['rank']:<3d} b{row['batch']:<4d} {row['path']:5s} "
            f"{row['levers']:36s}")
    if "error" in row:
        return head + " ERROR " + row["error"]
    text = (f"{head} {row['tokens_per_s']:10.0f} tok/s  step {row['step_s_median'] * 1e3:8.1f} ms  "
            f"peak {row['peak_gib']:6.2f} GiB (+{row['peak_delta_gib']:.2f})")
    if "x_plain_tokens_per_s" in row:
        text += f"  x{row['x_plain_tokens_per_s']:.2f} tok/s  x{row['x_plain_peak'] or math.nan:.2f} mem"
    if row.get("mfu"):
        text += f"  MFU {row['mfu']:.1%}"
    if row.get("grad_accum", 1) > 1 or row["levers"].find("auto-batch") >= 0:
        text += f"  micro {row['micro_batch']} x {row['grad_accum']}"
    return text


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| shape | rank | batch | path | levers | tokens/s | x plain | step ms | peak GiB (above start) "
           "| x plain mem | MFU |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['shape']} L{r['layers']} | {r['rank']} | {r['batch']} | {r['path']} | "
                       f"{r['levers']} | error: {r['error'][:60]} | | | | | |")
            continue
        base = "1.00" if r["path"] == "plain" else ""
        x = f"{r['x_plain_tokens_per_s']:.2f}" if "x_plain_tokens_per_s" in r else base
        xm = f"{r['x_plain_peak']:.2f}" if r.get("x_plain_peak") else base
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "-"
        out.append(f"| {r['shape']} L{r['layers']} | {r['rank']} | {r['batch']} | {r['path']} | {r['levers']} | "
                   f"{r['tokens_per_s']:.0f} | {x} | {r['step_s_median'] * 1e3:.1f} | {r['peak_gib']:.2f} "
                   f"({r['peak_delta_gib']:.2f}) | {xm} | {mfu} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="tiny", choices=["tiny", *KNOWN_SHAPES])
    ap.add_argument("--layers", type=int, default=None, help="keep this many decoder layers (CPU-sized models)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rank", type=int, nargs="+", default=[16])
    ap.add_argument("--batch", type=int, nargs="+", default=[16], help="samples per optimiser step")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2, 4 with compile)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data", default="synthetic",
                    help="'synthetic' or a glob of ShopBench files, e.g. '../shared/data/ec_guide/EC-Guide/*/*.json'")
    ap.add_argument("--tokenizer", default="builtin:tiny", help="whose token counts the samples have")
    ap.add_argument("--max-seq-len", type=int, default=1024, help="samples are truncated to this many tokens")
    levers = ap.add_argument_group("levers of the 'ours' path (or use --configs)")
    levers.add_argument("--loss", choices=["plain", "chunked-all", "chunked", "fused"], default="plain")
    levers.add_argument("--chunk-tokens", type=int, default=2048, help="tokens per LM-head chunk")
    levers.add_argument("--bucket", action="store_true", help="length-bucketed padded batches")
    levers.add_argument("--packing", action="store_true")
    levers.add_argument("--pack-length", type=int, default=None,
                        help="tokens per packed row (default: the longest sample, as the trainer); 0: one row")
    levers.add_argument("--flex", action="store_true", help="flex_attention (packing: one row)")
    levers.add_argument("--compile", action="store_true")
    levers.add_argument("--fused-adamw", action="store_true")
    levers.add_argument("--grad-ckpt", action="store_true")
    levers.add_argument("--auto-batch", action="store_true", help="micro-batch from a device probe")
    levers.add_argument("--memory-budget-gib", type=float, default=None, help="budget for --auto-batch")
    ap.add_argument("--configs", nargs="+", default=None,
                    help=f"several 'ours' configurations, levers joined by '+': {', '.join(LEVER_NAMES)}")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain baseline")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("harness.training.micro_batch").setLevel(logging.INFO)  # the auto-batch probes
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(args)
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
