"""The Vendi score: hand-checked maths, real MiniLM embeddings of mixtures, a clear missing-model error."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from harness.data.cache import with_embedding_diversity
from harness.data.diversity import embed_texts, mixture_vendi, sample_texts, vendi_score
from harness.data.mixture import build_mixture
from harness.errors import MissingDependencyError
from harness.results import DataInfo
from harness.spec.schema import DataSpec
from harness.tasks import registry

ALL = [s.id for s in registry.all_subtasks()]


def test_identical_vectors_score_one():
    assert vendi_score(np.tile([0.3, -1.0, 2.0], (7, 1))) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [1, 2, 5, 12])
def test_n_orthogonal_vectors_score_n(n):
    scaled = np.eye(n) * np.arange(1, n + 1)[:, None]  # lengths do not matter: rows are normalised
    assert vendi_score(scaled) == pytest.approx(n)


def test_more_samples_than_dimensions_uses_the_small_gram_matrix():
    # 6 vectors in 3-d: two copies of each basis vector -> 3 equal eigenvalues of 1/3 -> score 3
    vectors = np.vstack([np.eye(3), np.eye(3)])
    assert vendi_score(vectors) == pytest.approx(3.0)


def test_two_vectors_at_cosine_c_match_the_closed_form():
    # K/2 = [[1, c], [c, 1]] / 2 has eigenvalues (1 + c) / 2 and (1 - c) / 2
    c = 0.6
    vectors = np.array([[1.0, 0.0], [c, math.sqrt(1 - c * c)]])
    lam = np.array([(1 + c) / 2, (1 - c) / 2])
    assert vendi_score(vectors) == pytest.approx(math.exp(-np.sum(lam * np.log(lam))))


def test_sample_is_seeded_and_bounded_by_the_rows():
    rows = [{"input_field": f"q{i}"} for i in range(50)]
    assert sample_texts(rows, 10, seed=0) == sample_texts(rows, 10, seed=0)
    assert sample_texts(rows, 10, seed=0) != sample_texts(rows, 10, seed=1)
    assert sample_texts(rows, 500, seed=0) == [r["input_field"] for r in rows]


def test_repeated_texts_embed_identically():
    vectors = embed_texts(["red kettle 1.7 l", "blue mug", "red kettle 1.7 l"])
    assert vectors.shape == (3, 384)
    assert np.allclose(vectors[0], vectors[2]) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)


def test_four_domain_mixture_is_more_diverse_than_one_subtask():
    one = build_mixture(ALL[:1], 64, DataSpec())
    four = build_mixture(ALL, 4, DataSpec())  # 76 rows over 19 subtasks of 4 domains
    one_score, one_n = mixture_vendi(one.rows, 64)
    four_score, four_n = mixture_vendi(four.rows, 64)
    assert one_n == four_n == 64
    assert 1.0 < one_score < four_score < 64


def test_vendi_lands_in_the_record_diversity():
    mix = with_embedding_diversity(build_mixture(ALL[:2], 16, DataSpec()), DataSpec(embedding_diversity_sample=24))
    diversity = mix.stats.diversity()
    assert diversity["vendi_sample"] == 24 and diversity["vendi"] > 1.0
    assert DataInfo(diversity=diversity).diversity == diversity
    off = with_embedding_diversity(build_mixture(ALL[:2], 16, DataSpec()), DataSpec(embedding_diversity_sample=0))
    assert "vendi" not in off.stats.diversity()


def test_missing_sentence_transformers_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # what an uninstalled package does
    with pytest.raises(MissingDependencyError, match="pip install.*embedding_diversity_sample: 0"):
        embed_texts(["a"])
