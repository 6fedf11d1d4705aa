"""The mixture cache: built mixtures, with their embedding diversity, kept on disk and read back.

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
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.data.mixture import Mixture, MixtureStats, _banned, build_eval_sets, build_mixture, mixture_fingerprint
from harness.spec.schema import SYNTHETIC_SOURCE, DataSpec, content_hash

log = logging.getLogger(__name__)

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
    files = sorted([here / "mixture.py", here / "cache.py", here / "diversity.py",
                    *(here.parent / "tasks").glob("*.py")])
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
    from harness.data.embeddings import MINILM_ENV

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
