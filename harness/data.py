"""Mixture builder: (domains, subtasks, volume, seed) -> training rows + fingerprint + diversity stats.

    mixture = build_mixture(trial.subtasks, trial.volume, data_spec, eval_rows=eval_sets)

Budget modes (`data.mode`):
    per_subtask   every subtask gets `volume` rows: total volume grows with diversity
    fixed_total   `volume` rows in all, split evenly: diversity at constant volume
    homogeneous   every subtask gets `volume` rows, repeating rows when a source runs dry: more rows
                  of the same subtasks without new content (the "piling on homogeneous data" arm)

Evaluation sets are built here too, since the contamination check compares the two.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.config import SYNTHETIC_HELDOUT, SYNTHETIC_SOURCE, DataSpec, EvalSpec, content_hash
from harness.errors import InputError


@dataclass(frozen=True)
class MixtureStats:
    examples: dict[str, int]  # rows per subtask
    n_domains: int
    n_subtasks: int
    entropy_bits: float  # Shannon entropy of the subtask proportions
    contaminated_removed: int  # training rows dropped because an evaluation row has the same input
    skipped_rows: dict[str, int] = field(default_factory=dict)  # bad rows skipped, per source file

    def diversity(self) -> dict[str, float]:
        return {"n_domains": self.n_domains, "n_subtasks": self.n_subtasks, "entropy": self.entropy_bits}


@dataclass(frozen=True)
class Mixture:
    rows: list[dict[str, Any]]
    fingerprint: str
    stats: MixtureStats


def normalise_text(text: str) -> str:
    """Case- and whitespace-insensitive key for contamination checks."""
    return re.sub(r"\s+", " ", text).strip().lower()


# ---------------------------------------------------------------------------------------------
# Row pools per subtask


@lru_cache(maxsize=8)
def _real_source(src_json: str):
    from harness.tasks.sources import SourceSpec, load_source

    return load_source(SourceSpec.model_validate_json(src_json))


def _pool(subtask: str, n: int, data: DataSpec, banned: set[str]):
    """Up to n clean training rows of one subtask (rows matching an evaluation input dropped), the
    number dropped, a fingerprint of where the rows came from, and skipped bad rows per file."""
    for src in data.sources:
        if src != SYNTHETIC_SOURCE and src.subtask == subtask:
            loaded = _real_source(src.model_dump_json())
            clean = [r for r in loaded.rows if normalise_text(r["input_field"]) not in banned]
            skipped = {src.path: loaded.skipped} if loaded.skipped else {}
            return clean, len(loaded.rows) - len(clean), loaded.fingerprint, skipped
    from harness.tasks import synthetic

    # The world is prefix-stable: ask for more rows until n survive the contamination filter.
    want = n
    while True:
        rows = synthetic.generate_rows(subtask, "train", want, seed=data.world_seed)
        clean = [r for r in rows if normalise_text(r["input_field"]) not in banned]
        if len(clean) >= n:
            return clean[:n], want - n, f"synthetic:{data.world_seed}", {}
        want += n - len(clean)


def _budgets(subtasks: list[str], volume: int, mode: str) -> dict[str, int]:
    if mode == "fixed_total":
        base, extra = divmod(volume, len(subtasks))
        return {s: base + (1 if i < extra else 0) for i, s in enumerate(subtasks)}
    return {s: volume for s in subtasks}


def _take(pool: list[dict[str, Any]], n: int, rng: random.Random, repeat: bool, subtask: str):
    if len(pool) >= n:
        return rng.sample(pool, n)
    if not repeat:
        raise InputError(f"subtask {subtask!r}: asked for {n} training rows but its source has only "
                         f"{len(pool)}; lower the volume or use data.mode: homogeneous to repeat rows")
    return [pool[i % len(pool)] for i in range(n)]


def build_mixture(subtasks: list[str], volume: int, data: DataSpec,
                  eval_rows: dict[str, list[dict[str, Any]]] | None = None,
                  tokenizer_id: str = "") -> Mixture:
    """Deterministic for (subtasks, volume, data spec): seeds vary training, not the mixture."""
    budgets = _budgets(subtasks, volume, data.mode)
    banned = set()
    if data.contamination_check and eval_rows:
        banned = {normalise_text(r["input_field"]) for rows in eval_rows.values() for r in rows}
    rng = random.Random(data.mixture_seed)
    rows, sources, skipped, removed = [], {}, {}, 0
    for sub in subtasks:
        clean, dropped, source_fp, sub_skipped = _pool(sub, budgets[sub], data, banned)
        removed += dropped
        picked = _take(clean, budgets[sub], rng, data.mode == "homogeneous", sub)
        rows += [{**r, "subtask": r.get("subtask", sub)} for r in picked]
        sources[sub] = source_fp
        skipped.update(sub_skipped)
    rng.shuffle(rows)
    stats = _stats(rows, removed, skipped)
    fingerprint = content_hash({
        "row_ids": [r.get("row_id") or content_hash(r)[:16] for r in rows],
        "budgets": budgets, "sources": sources, "mode": data.mode,
        "seed": data.mixture_seed, "tokenizer": tokenizer_id,
    })[:16]
    return Mixture(rows=rows, fingerprint=fingerprint, stats=stats)


def _stats(rows: list[dict[str, Any]], removed: int, skipped: dict[str, int]) -> MixtureStats:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["subtask"]] = counts.get(r["subtask"], 0) + 1
    total = sum(counts.values()) or 1
    entropy = -sum(c / total * math.log2(c / total) for c in counts.values() if c)
    domains = {r.get("domain") for r in rows}
    return MixtureStats(examples=counts, n_domains=len(domains), n_subtasks=len(counts),
                        entropy_bits=round(entropy, 6), contaminated_removed=removed,
                        skipped_rows=skipped)


# ---------------------------------------------------------------------------------------------
# Evaluation sets


def build_eval_sets(spec: EvalSpec, world_seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """name -> rows. The synthetic held-out set covers every subtask of every domain, so a trial's
    overall score always spans all four tracks, whatever it was trained on."""
    from harness.tasks import registry, synthetic
    from harness.tasks.shopbench_io import read_shopbench

    sets: dict[str, list[dict[str, Any]]] = {}
    for ref in spec.sets:
        if ref == SYNTHETIC_HELDOUT:
            sets["synthetic-heldout"] = [
                row for sub in registry.all_subtasks()
                for row in synthetic.generate_rows(sub.id, "heldout", spec.per_subtask, seed=world_seed)
            ]
        else:
            rows = read_shopbench(Path(ref.path)).rows
            sets[ref.name or Path(ref.path).stem] = rows[: ref.limit] if ref.limit else rows
    return sets
