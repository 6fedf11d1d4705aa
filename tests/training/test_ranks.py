"""Data-parallel trials (harness.training.ranks) on the CPU with gloo: two ranks with DDP learn the same
LoRA weights as one process on the same global batches, and a failure on any rank is reported with
that rank's reason, without hanging and without leaving processes behind.

The training loop here is the one harness.training.loop runs with a DistContext (local_batch, accumulate,
micro_loss, local_tokens, reduce_step), on a small random Qwen2 built here."""

from __future__ import annotations

import os
import random
import time

import psutil
import pytest
import torch

from harness.training.batching import Example, collate
from harness.training.losses import IGNORE_INDEX
from harness.training.ranks import DistContext, DistributedError, launch_ranks

pytestmark = pytest.mark.slow

ENTRY = __name__ + ":{}"  # helpers import this module (training.test_ranks): pytest put tests/ on rank 0's sys.path
LIMITS = {"rendezvous_timeout_s": 60, "collective_timeout_s": 60, "join_timeout_s": 30}
TRAIN = {"seed": 0, "steps": 3, "micro_batch": 5, "grad_accum": 2, "lr": 0.02, "n_examples": 11}


# ---------------------------------------------------------------------------------------------
# The training run both sides do (also the helpers' entry)


def tiny_lora_model(seed: int):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0)
    model = Qwen2ForCausalLM(config)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0,
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def examples(n: int, seed: int) -> list[Example]:
    """Rows of different lengths (so shards differ in padding and in supervised tokens)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt, answer = rng.randint(3, 12), rng.randint(1, 8)
        ids = [rng.randrange(1, 96) for _ in range(prompt + answer)]
        out.append(Example(ids, [IGNORE_INDEX] * prompt + ids[prompt:], "s"))
    return out


def global_micro_batches(items: list[Example], size: int, seed: int):
    """Endless shuffled micro-batches, the same on every rank (as harness.training.batching.make_batches);
    the data runs out mid-batch, so one micro-batch has fewer rows than there are ranks."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(items)))
        rng.shuffle(order)
        for i in range(0, len(order), size):
            yield [items[j] for j in order[i : i + size]]


def train(payload: dict, dist: DistContext) -> dict | None:
    cfg = payload["train"]
    model = tiny_lora_model(cfg["seed"] + dist.rank)  # differs per rank: DDP must sync the start
    ddp = dist.wrap(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"])
    stream = global_micro_batches(examples(cfg["n_examples"], cfg["seed"]), cfg["micro_batch"], cfg["seed"])
    curve, tokens = [], [0, 0]
    for _ in range(cfg["steps"]):
        loss_sum, tok, sup = 0.0, 0, 0
        for i in range(cfg["grad_accum"]):
            micro = next(stream)
            batch = dist.local_batch(micro, lambda rows: collate(rows, pad_id=0))
            with dist.accumulate(ddp, i, cfg["grad_accum"]):
                loss = dist.micro_loss(ddp, batch) / cfg["grad_accum"]
                loss.backward()
            loss_sum += loss.item()
            n_tok, n_sup = dist.local_tokens(micro)
            tok, sup = tok + n_tok, sup + n_sup
        loss_sum, tok, sup = dist.reduce_step(loss_sum, tok, sup)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        curve.append(loss_sum)
        tokens = [tokens[0] + tok, tokens[1] + sup]
        fail_here(payload, dist, len(curve))
    if not dist.is_main:
        return None
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return {"lora": lora, "curve": curve, "tokens": tokens}


def train_entry(payload: dict, dist: DistContext) -> None:
    train(payload, dist)


def fail_here(payload: dict, dist: DistContext, step: int) -> None:
    """Faults for the failure tests: {"rank": r, "step": s, "how": "raise" | "kill"}."""
    fault = payload.get("fault")
    if not fault or fault["rank"] != dist.rank or fault["step"] != step:
        return
    if fault["how"] == "kill":
        os.kill(os.getpid(), 9)
    raise RuntimeError(f"injected failure on rank {dist.rank} at step {step}")


def collectives_entry(payload: dict, dist: DistContext) -> None:
    """A light run for every rank (no model): a few all-reduces, with the payload's fault."""
    for step in range(1, payload["steps"] + 1):
        dist.all_reduce_sum([1.0])
        fail_here(payload, dist, step)


def helpers_left() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if "harness.training.ranks" in " ".join(p.cmdline())]


# ---------------------------------------------------------------------------------------------
# Equivalence


def test_two_ranks_learn_what_one_process_learns():
    payload = {"train": TRAIN}
    single = train(payload, DistContext.single())
    with launch_ranks(2, entry=ENTRY.format("train_entry"), payload=payload, threads=1, **LIMITS) as dist:
        assert (dist.rank, dist.world, dist.backend) == (0, 2, "gloo")
        double = train(payload, dist)
    assert not helpers_left()
    assert double["tokens"] == single["tokens"]  # the stand-in row of a short micro-batch counts for nothing
    torch.testing.assert_close(torch.tensor(double["curve"]), torch.tensor(single["curve"]),
                               rtol=1e-5, atol=1e-6)
    assert single["lora"].keys() == double["lora"].keys()
    moved = max(float(t.abs().max()) for n, t in single["lora"].items() if "lora_B" in n)
    assert moved > 1e-3  # the adapter really trained (B starts at zero)
    for name, weight in single["lora"].items():
        torch.testing.assert_close(double["lora"][name], weight, rtol=1e-4, atol=1e-5, msg=name)


def test_shards_are_disjoint_contiguous_and_cover_the_batch():
    items = list(range(7))
    parts = [DistContext(rank=r, world=3).shard(items) for r in range(3)]
    assert parts == [[0, 1, 2], [3, 4], [5, 6]]
    assert [DistContext(rank=r, world=3).shard([9]) for r in range(3)] == [[9], [], []]


# ---------------------------------------------------------------------------------------------
# Failures: reported with the failing rank's reason, in seconds, nothing left running


@pytest.mark.parametrize("how, reason", [("raise", "RuntimeError: injected failure on rank 1 at step 2"),
                                         ("kill", "killed by SIGKILL")])
def test_a_failing_helper_fails_the_run_with_its_reason(how, reason):
    payload = {"steps": 50, "fault": {"rank": 1, "step": 2, "how": how}}
    started = time.monotonic()
    with pytest.raises(DistributedError, match=f"rank 1 failed: {reason}"):
        with launch_ranks(2, entry=ENTRY.format("collectives_entry"), payload=payload, **LIMITS) as dist:
            collectives_entry(payload, dist)
    assert time.monotonic() - started < 30
    assert not helpers_left() and not torch.distributed.is_initialized()


def test_a_failing_rank0_keeps_its_own_reason_and_stops_the_helpers():
    payload = {"steps": 50, "fault": {"rank": 0, "step": 2, "how": "raise"}}
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="injected failure on rank 0 at step 2"):
        with launch_ranks(2, entry=ENTRY.format("collectives_entry"), payload=payload, **LIMITS) as dist:
            collectives_entry(payload, dist)
    assert time.monotonic() - started < 30
    assert not helpers_left() and not torch.distributed.is_initialized()


def test_a_helper_that_cannot_start_fails_the_launch_at_once():
    started = time.monotonic()
    with pytest.raises(DistributedError, match="rank 1 failed: ModuleNotFoundError: No module named 'no_such_module'"):
        with launch_ranks(2, entry="no_such_module:run", payload={}, **LIMITS):
            pytest.fail("rank 0 must not start training without its helpers")
    assert time.monotonic() - started < 30
    assert not helpers_left()
