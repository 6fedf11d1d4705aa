"""Mixture builder: (domains, subtasks, volume, seed) -> training rows + fingerprint + diversity stats.

    mixture = build_mixture(trial.subtasks, trial.volume, data_spec, eval_rows=eval_sets)

Budget modes (`data.mode`):
    per_subtask   every subtask gets `volume` rows: total volume grows with diversity
    fixed_total   `volume` rows in all, split evenly: diversity at constant volume
    homogeneous   every subtask gets `volume` rows, repeating rows when a source runs dry: more rows
                  of the same subtasks without new content (the "piling on homogeneous data" arm).
                  Past the synthetic world's capacity (~1000-6000 train rows per subtask) every row
                  the world has is taken, then repeated in order; the other modes stop there with
                  an InputError naming the subtask and how many rows it has.

Evaluation sets are built here too, since the contamination check compares the two. Built
mixtures get their embedding diversity and are cached by harness.data.cache.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.spec.schema import (SOURCES_HELDOUT, SYNTHETIC_HELDOUT, SYNTHETIC_SOURCE, DataSpec, EvalSpec,
                                 content_hash)


@dataclass(frozen=True)
class MixtureStats:
    examples: dict[str, int]  # rows per subtask
    n_domains: int
    n_subtasks: int
    entropy_bits: float  # Shannon entropy of the subtask proportions
    contaminated_removed: int  # training rows dropped because an evaluation row has the same input
    skipped_rows: dict[str, int] = field(default_factory=dict)  # bad rows skipped, per source file
    vendi: float | None = None  # Vendi score of an embedded sample of the inputs (harness.data.diversity)
    vendi_sample: int = 0  # rows in that sample (the score is bounded by it)

    def diversity(self) -> dict[str, float]:
        out = {"n_domains": self.n_domains, "n_subtasks": self.n_subtasks, "entropy": self.entropy_bits}
        if self.vendi is not None:
            out.update(vendi=self.vendi, vendi_sample=self.vendi_sample)
        return out


@dataclass(frozen=True)
class Mixture:
    rows: list[dict[str, Any]]
    fingerprint: str
    stats: MixtureStats
    # Where the rows came from (budgets, source fingerprints, mode, seed): with the rows and a
    # tokenizer id, all the fingerprint needs, so a cached mixture is fingerprinted like a new one.
    provenance: dict[str, Any] = field(default_factory=dict)


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
    number dropped, a fingerprint of where the rows came from, skipped bad rows per file, and a
    phrase naming the source for error messages. Fewer than n rows when the source runs dry."""
    for src in data.sources:
        if src != SYNTHETIC_SOURCE and src.subtask == subtask:
            loaded = _real_source(src.model_dump_json())
            clean = [r for r in loaded.rows if normalise_text(r["input_field"]) not in banned]
            skipped = {src.path: loaded.skipped} if loaded.skipped else {}
            return clean, len(loaded.rows) - len(clean), loaded.fingerprint, skipped, f"its source {src.path}"
    if data.world.variant == "recall":
        rows = _recall_rows(subtask, data)
        clean = [r for r in rows if normalise_text(r["input_field"]) not in banned]
        return (clean[:n], len(rows) - len(clean), f"recall:{data.world_seed}:{data.world.facts}", {},
                f"the recall world (data.world.keys {data.world.keys})")
    # The world is prefix-stable: ask for more rows until n survive the contamination filter, or
    # until the world has no more (homogeneous mode then repeats; the other modes stop in _take).
    want, rows, clean, exhausted = n, [], [], False
    while len(clean) < n and not exhausted:
        rows = _synthetic_prefix(subtask, want, data.world_seed)
        exhausted = len(rows) < want
        clean = [r for r in rows if normalise_text(r["input_field"]) not in banned]
        want += n - len(clean)
    return (clean[:n], len(rows) - len(clean), f"synthetic:{data.world_seed}", {},
            f"the synthetic world (data.world_seed {data.world_seed})")


def _recall_rows(subtask: str, data: DataSpec) -> list[dict[str, Any]]:
    from harness.tasks.recall import recall_rows

    return recall_rows(subtask, keys=data.world.keys, facts=data.world.facts, seed=data.world_seed)


def _synthetic_prefix(subtask: str, want: int, seed: int) -> list[dict[str, Any]]:
    """The first `want` train rows of a subtask, or every row the world has when it has fewer.
    The world's capacity is counted only when the plain request fails (counting streams it all)."""
    from harness.tasks import synthetic

    try:
        return synthetic.generate_rows(subtask, "train", want, seed=seed)
    except InputError:
        capacity = synthetic.row_capacity(subtask, "train", seed)  # re-raises an unknown subtask
        if want <= capacity:
            raise
        return synthetic.generate_rows(subtask, "train", capacity, seed=seed)


def _budgets(subtasks: list[str], volume: int, mode: str) -> dict[str, int]:
    if mode == "fixed_total":
        base, extra = divmod(volume, len(subtasks))
        return {s: base + (1 if i < extra else 0) for i, s in enumerate(subtasks)}
    return {s: volume for s in subtasks}


def _take(pool: list[dict[str, Any]], n: int, rng: random.Random, mode: str, subtask: str,
          origin: str, removed: int) -> list[dict[str, Any]]:
    if len(pool) >= n:
        return rng.sample(pool, n)
    if mode != "homogeneous":
        if not pool:
            raise InputError(f"subtask {subtask!r}: {origin} has no training rows left "
                             f"({removed} matched evaluation inputs and were removed)")
        after = f" after removing {removed} that match evaluation inputs" if removed else ""
        share = " (its share of the total volume)" if mode == "fixed_total" else ""
        raise InputError(f"subtask {subtask!r}: data.mode {mode} asks for {n} training rows{share} but "
                         f"{origin} has only {len(pool)} distinct rows for it{after}; lower the volume "
                         f"(grid.volume or data.per_subtask) so each subtask needs at most {len(pool)}, "
                         "or set data.mode: homogeneous to repeat rows")
    if not pool:
        raise InputError(f"subtask {subtask!r}: data.mode homogeneous has no row to repeat: {origin} "
                         f"has none left ({removed} matched evaluation inputs and were removed)")
    return [pool[i % len(pool)] for i in range(n)]


def build_mixture(subtasks: list[str], volume: int, data: DataSpec,
                  eval_rows: dict[str, list[dict[str, Any]]] | None = None,
                  tokenizer_id: str = "") -> Mixture:
    """Deterministic for (subtasks, volume, data spec): seeds vary training, not the mixture.
    No embedding diversity here (see load_or_build_mixture): counting stats only, fast."""
    budgets = _budgets(subtasks, volume, data.mode)
    banned = _banned(data, eval_rows)
    rng = random.Random(data.mixture_seed)
    rows, sources, skipped, removed = [], {}, {}, 0
    for sub in subtasks:
        clean, dropped, source_fp, sub_skipped, origin = _pool(sub, budgets[sub], data, banned)
        removed += dropped
        picked = _take(clean, budgets[sub], rng, data.mode, sub, origin, dropped)
        rows += [{**r, "subtask": r.get("subtask", sub)} for r in picked]
        sources[sub] = source_fp
        skipped.update(sub_skipped)
    rng.shuffle(rows)
    provenance = {"budgets": budgets, "sources": sources, "mode": data.mode, "seed": data.mixture_seed}
    return Mixture(rows=rows, fingerprint=mixture_fingerprint(rows, provenance, tokenizer_id),
                   stats=_stats(rows, removed, skipped), provenance=provenance)


def mixture_fingerprint(rows: list[dict[str, Any]], provenance: dict[str, Any], tokenizer_id: str) -> str:
    """Hash of the row ids in order, where they came from, and the tokenizer they will meet."""
    return content_hash({
        "row_ids": [r.get("row_id") or content_hash(r)[:16] for r in rows],
        **provenance, "tokenizer": tokenizer_id,
    })[:16]


def _banned(data: DataSpec, eval_rows: dict[str, list[dict[str, Any]]] | None) -> set[str]:
    """Normalised evaluation inputs that training rows may not repeat."""
    if not (data.contamination_check and eval_rows):
        return set()
    return {normalise_text(r["input_field"]) for rows in eval_rows.values() for r in rows}


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


def build_eval_sets(spec: EvalSpec, data: DataSpec | None = None) -> dict[str, list[dict[str, Any]]]:
    """name -> rows. The synthetic held-out set covers every subtask of every domain, so a trial's
    overall score always spans all four tracks, whatever it was trained on; the sources' held-out
    set likewise covers every real source of the sweep (`data`), whatever a trial trains on."""
    from harness.tasks import recall, registry, synthetic
    from harness.tasks.shopbench_io import read_shopbench

    data = data or DataSpec()
    sets: dict[str, list[dict[str, Any]]] = {}
    for ref in spec.sets:
        if ref == SOURCES_HELDOUT:
            sets["sources-heldout"] = sources_heldout(data, spec.heldout_per_source)
        elif ref == SYNTHETIC_HELDOUT and data.world.variant == "recall":
            sets["synthetic-heldout"] = [row for sub in recall.recall_subtasks()
                                         for row in _recall_rows(sub, data)]
        elif ref == SYNTHETIC_HELDOUT:
            sets["synthetic-heldout"] = [
                row for sub in registry.all_subtasks()
                for row in synthetic.generate_rows(sub.id, "heldout", spec.per_subtask, seed=data.world_seed)
            ]
        else:
            rows = read_shopbench(Path(ref.path)).rows
            sets[ref.name or Path(ref.path).stem] = rows[: ref.limit] if ref.limit else rows
    return sets


def sources_heldout(data: DataSpec, per_source: int) -> list[dict[str, Any]]:
    """`per_source` rows of each real source, with distinct inputs, picked by a hash of the
    normalised input: the same rows whatever the file order, the mixture seed or the trial. Passed
    as an evaluation set, the contamination check keeps their inputs out of every mixture."""
    rows = []
    for src in data.sources:
        if src == SYNTHETIC_SOURCE:
            continue
        distinct = {normalise_text(r["input_field"]): r for r in _real_source(src.model_dump_json()).rows}
        chosen = sorted(distinct, key=lambda text: hashlib.sha256(text.encode()).hexdigest())[:per_source]
        rows += [distinct[text] for text in chosen]
    return rows
