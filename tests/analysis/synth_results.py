"""Synthesise a results directory of fake but schema-valid records, with a planted effect.

The score of a trial is planted as

    score = base + b_div * n_domains + b_cap * log2(rank)
            + interaction * n_domains * log2(rank) + noise

and spread over four tracks (offsets summing to zero) and two tasks per track (likewise), so a
record's overall score equals the mean of its track scores, as the schema says. Records go through
the real harness.results models and write_record, so a schema change shows up here first.

Records carry the capacity factor keys (capacity_family, capacity, adapter_params, capacity_budget);
`legacy=True` writes them as records from before capacity families did (no such keys).
make_family_results plants a different interaction per family, each on log2 of its size: the
parameter budget's rank ('r8' -> 8) when matched to budgets, else the family's own rank.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from harness.results import (EvalResult, RunInfo, TaskResult, TrainInfo, TrialRecord, TrialStatus,
                             atomic_write_text, write_record)

DOMAINS = ("behavior", "concept", "reasoning", "multilingual")
TRACKS = {"concept": "1", "reasoning": "2", "behavior": "3", "multilingual": "4"}
TRACK_OFFSETS = {"1": 0.03, "2": -0.01, "3": 0.02, "4": -0.04}  # sum to zero
EVAL_SET = "synthetic-heldout"
# Trainable parameters per unit of rank, and a rank-independent part (DoRA magnitudes, MoLE router).
PARAMS_PER_RANK = {"lora": 4096, "dora": 4096, "multi_lora": 2 * 4096, "mole": 4 * 4096}
PARAMS_FIXED = {"lora": 0, "dora": 512, "multi_lora": 0, "mole": 1024}
LABEL_EXTRA = {"multi_lora": "-g2", "mole": "-e4k2"}


def planted_score(n_domains: int, rank: int, *, interaction: float = 0.03, base: float = 0.3,
                  b_div: float = 0.05, b_cap: float = 0.02) -> float:
    cap = math.log2(rank)
    return base + b_div * n_domains + b_cap * cap + interaction * n_domains * cap


def _hash(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def _eval(score: float) -> dict[str, EvalResult]:
    tasks, tracks = {}, {}
    for domain, track in TRACKS.items():
        tracks[track] = score + TRACK_OFFSETS[track]
        for k, delta in ((1, 0.01), (2, -0.01)):
            tasks[f"{domain}_task{k}"] = TaskResult(score=tracks[track] + delta, metric="accuracy",
                                                   n=50, track=track)
    overall = sum(tracks.values()) / len(tracks)
    return {EVAL_SET: EvalResult(tasks=tasks, tracks=tracks, overall=overall,
                                 pooled=sum(t.score for t in tasks.values()) / len(tasks))}


def adapter_params(family: str, rank: int) -> int:
    return PARAMS_PER_RANK[family] * rank + PARAMS_FIXED[family]


def factors(n_domains: int, rank: int, seed: int, *, family: str = "lora",
            budget: str | None = None, legacy: bool = False) -> dict:
    domains = list(DOMAINS[:n_domains])
    subtasks = [f"{d}/sub{k}" for d in domains for k in (1, 2)]
    out = {"domains": domains, "subtasks": subtasks, "n_domains": len(domains),
           "n_subtasks": len(subtasks), "volume": 400, "lora_rank": rank,
           "lora_alpha": 2 * rank, "seed": seed}
    if not legacy:
        label = f"{family}{LABEL_EXTRA.get(family, '')}-r{rank}"
        out.update(capacity_family=family, capacity=label,
                   adapter_params=adapter_params(family, rank), capacity_budget=budget)
    return out


def make_record(n_domains: int, rank: int, seed: int, score: float | None, *,
                sweep: str = "synthetic", status: TrialStatus = TrialStatus.SUCCESS,
                reason: str | None = None, family: str = "lora", budget: str | None = None,
                legacy: bool = False) -> TrialRecord:
    """One trial record; score None (or a non-success status) gives a record without eval."""
    f = factors(n_domains, rank, seed, family=family, budget=budget, legacy=legacy)
    plain = family == "lora" and budget is None  # ids as before capacity families
    cell = _hash(sweep, n_domains, rank) if plain else _hash(sweep, n_domains, rank, family, budget)
    ok = status is TrialStatus.SUCCESS and score is not None
    curve = [(s, 3.0 * math.exp(-s / 40) + 1.2 - 0.05 * n_domains - 0.01 * math.log2(rank))
             for s in range(0, 151, 10)] if ok else [(0, 3.2), (10, 2.9)]
    n_sub = f["n_subtasks"]
    return TrialRecord(
        run=RunInfo(trial_id=_hash(cell, seed, status.value), cell_id=cell, kind="trial",
                    sweep=sweep, factors=f),
        data={"fingerprint": _hash("data", n_domains, seed),
              "diversity": {"n_domains": n_domains, "n_subtasks": n_sub,
                            "entropy": math.log(n_sub)}},
        train=TrainInfo(status=status, reason=reason, steps=150 if ok else 10,
                        final_loss=curve[-1][1], wall_s=12.0, tokens_per_s=900.0,
                        trainable_params=adapter_params(family, rank),
                        adapter_bytes=0 if legacy else 2 * adapter_params(family, rank),
                        loss_curve=curve),
        eval=_eval(score) if ok else {},
    )


def make_baseline(score: float, *, sweep: str = "synthetic", legacy: bool = False) -> TrialRecord:
    """The untrained base model: lora_rank 0, no domains, no capacity family."""
    f = {"domains": [], "subtasks": [], "n_domains": 0, "n_subtasks": 0, "volume": 0,
         "lora_rank": 0, "lora_alpha": 0, "seed": 0}
    if not legacy:
        f.update(capacity_family=None, capacity=None, adapter_params=0, capacity_budget=None)
    return TrialRecord(run=RunInfo(trial_id=_hash("baseline", sweep), cell_id="baseline",
                                   kind="baseline", sweep=sweep, factors=f),
                       train=TrainInfo(status=TrialStatus.SUCCESS), eval=_eval(score))


def write_trials(root: Path, records: list[TrialRecord]) -> None:
    for record in records:
        folder = "baseline" if record.run.kind == "baseline" else "trials"
        write_record(record, Path(root) / folder)


def make_results(root: Path, *, sweep: str = "synthetic", n_domains=(1, 2, 3, 4), ranks=(2, 4, 8),
                 seeds=(0, 1, 2), interaction: float = 0.03, noise: float = 0.01,
                 rng_seed: int = 0, baseline: float | None = 0.25, failed: int = 0,
                 legacy: bool = False) -> Path:
    """A full factorial results directory under root (plain LoRA); returns root."""
    root = Path(root)
    rng = np.random.default_rng(rng_seed)
    records = [make_record(d, r, s, planted_score(d, r, interaction=interaction)
                           + rng.normal(0.0, noise), sweep=sweep, legacy=legacy)
               for d in n_domains for r in ranks for s in seeds]
    records += [make_record(n_domains[-1], ranks[-1], 100 + i, None, sweep=sweep, legacy=legacy,
                            status=TrialStatus.FAILED, reason="CUDA out of memory | micro_batch 1")
                for i in range(failed)]
    return _finish(root, records, sweep, baseline, legacy)


def _finish(root: Path, records: list[TrialRecord], sweep: str, baseline: float | None,
            legacy: bool = False) -> Path:
    if baseline is not None:
        records.append(make_baseline(baseline, sweep=sweep, legacy=legacy))
    write_trials(root, records)
    atomic_write_text(root / "sweep.yaml", f"name: {sweep}\nbase_model: builtin:tiny\n")
    return root


# A family's rank at a budget 'r<k>': the rank whose parameters come nearest plain LoRA's at k.
RANK_PER_BUDGET_RANK = {"lora": 1, "dora": 1, "multi_lora": 2, "mole": 4}  # divide k by this


def make_family_results(root: Path, interactions: dict[str, float], *,
                        sweep: str = "synthetic", n_domains=(1, 2, 3, 4),
                        sizes=(4, 8, 16), seeds=(0, 1, 2), matched: bool = True,
                        offsets: dict[str, float] | None = None, noise: float = 0.01,
                        rng_seed: int = 0, baseline: float | None = 0.25) -> Path:
    """Several capacity families, each with its own planted interaction on log2(size).

    matched: sizes are budgets 'r4', 'r8', ... (capacity_budget set; each family at the rank that
    fits the budget); otherwise sizes are each family's own ranks and there is no budget.
    """
    root, rng, offsets = Path(root), np.random.default_rng(rng_seed), offsets or {}
    records = []
    for family, interaction in interactions.items():
        for d in n_domains:
            for size in sizes:
                rank = max(size // RANK_PER_BUDGET_RANK[family], 1) if matched else size
                budget = f"r{size}" if matched else None
                for s in seeds:
                    score = (planted_score(d, size, interaction=interaction)
                             + offsets.get(family, 0.0) + rng.normal(0.0, noise))
                    records.append(make_record(d, rank, s, score, sweep=sweep, family=family,
                                               budget=budget))
    return _finish(root, records, sweep, baseline)
