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

Evaluation sets are built here too, since the contamination check compares the two.

Embedding diversity and the mixture cache:

    mixture = load_or_build_mixture(subtasks, volume, data_spec, eval_sets, tokenizer_id=rev,
                                    cache_dir=results_dir / "mixtures")
    prepare_mixtures(trials, results_dir / "mixtures")     # the driver, once per distinct mixture

`load_or_build_mixture` adds the Vendi score (harness.data.diversity) to the stats and keeps built
mixtures under `<cache_dir>/<key>/` (rows.jsonl + mixture.json), keyed by `mixture_key`: a hash of
everything that decides the rows and stats (subtasks, volume, the data spec, the evaluation inputs
the contamination check removes, the source files' size and mtime, the code of the mixture builder
and the synthetic world, the embedding model). The tokenizer is not in the key: it enters only the
fingerprint, which is recomputed from the cached rows on every read, so fingerprints are the same
whether a mixture was built or read. Both files are written atomically (temp file + os.replace),
mixture.json last, and it carries the sha256 of rows.jsonl: a reader sees a whole entry or none.
An entry that does not read back (bad JSON, a checksum mismatch, a truncated file) is logged as a
warning naming the file and rebuilt in place; a sweep never stops on a broken cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.spec.schema import (SOURCES_HELDOUT, SYNTHETIC_HELDOUT, SYNTHETIC_SOURCE, DataSpec, EvalSpec,
                                 content_hash)

log = logging.getLogger(__name__)


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


# ---------------------------------------------------------------------------------------------
# Embedding diversity and the mixture cache

MIXTURE_CACHE_VERSION = 1  # bump when the entry layout changes
ROWS_FILE, META_FILE = "rows.jsonl", "mixture.json"
EvalRows = dict[str, list[dict[str, Any]]]


def with_embedding_diversity(mixture: Mixture, data: DataSpec) -> Mixture:
    """The mixture with its Vendi score in the stats (data.embedding_diversity_sample rows; 0: none)."""
    if data.embedding_diversity_sample == 0 or not mixture.rows:
        return mixture
    from harness.data.diversity import mixture_vendi

    score, n = mixture_vendi(mixture.rows, data.embedding_diversity_sample, seed=data.mixture_seed)
    return replace(mixture, stats=replace(mixture.stats, vendi=round(score, 6), vendi_sample=n))


def load_or_build_mixture(subtasks: list[str], volume: int, data: DataSpec,
                          eval_rows: EvalRows | None = None, tokenizer_id: str = "",
                          cache_dir: Path | None = None) -> Mixture:
    """build_mixture plus the embedding diversity, read from `cache_dir` when an entry for the same
    inputs is there, else built and written there. Without a cache_dir: built in memory."""
    if cache_dir is None:
        return with_embedding_diversity(build_mixture(subtasks, volume, data, eval_rows, tokenizer_id), data)
    mixture, _ = _cached_or_built(subtasks, volume, data, eval_rows, tokenizer_id, Path(cache_dir))
    return mixture


def _cached_or_built(subtasks: list[str], volume: int, data: DataSpec, eval_rows: EvalRows | None,
                     tokenizer_id: str, cache_dir: Path) -> tuple[Mixture, bool]:
    """(mixture, whether it was built now)."""
    key = mixture_key(subtasks, volume, data, eval_rows)
    entry = cache_dir / key
    cached = read_cached_mixture(entry, key, tokenizer_id)
    if cached is not None:
        return cached, False
    mixture = with_embedding_diversity(build_mixture(subtasks, volume, data, eval_rows, tokenizer_id), data)
    write_cached_mixture(entry, key, mixture)
    return mixture, True


@dataclass
class PreparedMixtures:
    """What the driver's preparation did: cache keys built now, and keys already cached."""

    built: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


def prepare_mixtures(trials: Iterable[Any], cache_dir: Path) -> PreparedMixtures:
    """Build every distinct mixture that `trials` (TrialSpecs; baselines train on nothing) need,
    once each and serially, so trials running in parallel only read the cache and never write the
    same entry together. Seeds and LoRA ranks share a mixture: one entry per (subtasks, volume,
    data spec, evaluation inputs)."""
    out, seen, eval_sets = PreparedMixtures(), set(), {}
    for t in trials:
        if t.kind != "trial":
            continue
        ev_key = (t.eval.model_dump_json(), t.data.model_dump_json())  # the sources' held-out rows need data
        if ev_key not in eval_sets:
            eval_sets[ev_key] = build_eval_sets(t.eval, t.data)
        key = mixture_key(t.subtasks, t.volume, t.data, eval_sets[ev_key])
        if key in seen:
            continue
        seen.add(key)
        _, built = _cached_or_built(t.subtasks, t.volume, t.data, eval_sets[ev_key], "", Path(cache_dir))
        (out.built if built else out.cached).append(key)
    return out


def mixture_key(subtasks: list[str], volume: int, data: DataSpec, eval_rows: EvalRows | None = None) -> str:
    """The cache key: a hash of everything that decides a mixture's rows and stats. Not the
    tokenizer (it changes only the fingerprint, recomputed on read) nor the trial's seed or rank."""
    return content_hash({
        "version": MIXTURE_CACHE_VERSION, "code": _code_digest(),
        "subtasks": list(subtasks), "volume": volume, "data": data.model_dump(mode="json"),
        "banned": hashlib.sha256("\n".join(sorted(_banned(data, eval_rows))).encode()).hexdigest(),
        "files": _source_files_identity(data, subtasks), "embedding": _embedding_identity(data),
    })[:20]


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """The mixture builder's and synthetic world's source: edited code never reads a stale entry."""
    here = Path(__file__).resolve().parent
    files = sorted([here / "mixture.py", here / "diversity.py", *(here.parent / "tasks").glob("*.py")])
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _source_files_identity(data: DataSpec, subtasks: list[str]) -> list[Any]:
    """(path, size, mtime) of the real source files the subtasks read: an edited file rebuilds.
    Hub datasets (no local path) are identified by their spec alone."""
    out = []
    for src in data.sources:
        if src == SYNTHETIC_SOURCE or src.subtask not in subtasks:
            continue
        path = Path(src.path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        out.append([[str(p), *_stat(p)] for p in files])
    return out


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _embedding_identity(data: DataSpec) -> dict[str, Any] | None:
    if data.embedding_diversity_sample == 0:
        return None
    from harness.data.diversity import EMBEDDING_MODEL
    from harness.evaluate.metrics import MINILM_ENV

    return {"model": EMBEDDING_MODEL, "override": os.environ.get(MINILM_ENV)}


def write_cached_mixture(entry: Path, key: str, mixture: Mixture) -> None:
    """rows.jsonl, then mixture.json (which names rows.jsonl's checksum), each written atomically."""
    from harness.results import atomic_write_text

    rows_text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in mixture.rows)
    atomic_write_text(entry / ROWS_FILE, rows_text)
    meta = {"version": MIXTURE_CACHE_VERSION, "key": key, "n_rows": len(mixture.rows),
            "rows_sha256": hashlib.sha256(rows_text.encode()).hexdigest(),
            "provenance": mixture.provenance, "stats": asdict(mixture.stats)}
    atomic_write_text(entry / META_FILE, json.dumps(meta, indent=1, sort_keys=True))


def read_cached_mixture(entry: Path, key: str, tokenizer_id: str = "") -> Mixture | None:
    """The cached mixture, or None when there is no entry yet. A broken entry is logged (naming
    the file) and treated as missing, so the caller rebuilds and overwrites it."""
    meta_path = entry / META_FILE
    if not meta_path.exists():
        return None
    try:
        return _read_entry(entry, key, tokenizer_id)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("mixture cache entry %s is unreadable (%s: %s); rebuilding it", entry,
                    type(exc).__name__, exc)
        return None


def _read_entry(entry: Path, key: str, tokenizer_id: str) -> Mixture:
    meta = json.loads((entry / META_FILE).read_text())
    if meta.get("version") != MIXTURE_CACHE_VERSION or meta.get("key") != key:
        raise ValueError(f"{entry / META_FILE} is for key {meta.get('key')!r} "
                         f"(version {meta.get('version')!r}), not {key!r}")
    text = (entry / ROWS_FILE).read_text()
    if hashlib.sha256(text.encode()).hexdigest() != meta["rows_sha256"]:
        raise ValueError(f"{entry / ROWS_FILE} does not match the checksum in {META_FILE}")
    rows = [json.loads(line) for line in text.splitlines()]
    if len(rows) != meta["n_rows"]:
        raise ValueError(f"{entry / ROWS_FILE} has {len(rows)} rows, {META_FILE} says {meta['n_rows']}")
    provenance = meta["provenance"]
    return Mixture(rows=rows, fingerprint=mixture_fingerprint(rows, provenance, tokenizer_id),
                   stats=MixtureStats(**meta["stats"]), provenance=provenance)
