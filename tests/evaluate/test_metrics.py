"""Metrics against hand-computed values, and the registry's metadata and errors."""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import pytest
import sacrebleu

from harness.data import embeddings
from harness.errors import InputError, MissingDependencyError
from harness.evaluate import metrics
from harness.evaluate.metrics import (METRICS, NerCounts, accuracy, bleu, get_metric, hit_rate_at_3,
                                      micro_f1, ndcg, ner_counts, rouge_l, sentence_similarity)
from harness.tasks.schema import METRIC_NAMES
from harness.tasks.schema import TASK_TYPES

L3 = math.log2(3)  # the discount at rank 2


# ---- registry -----------------------------------------------------------------------------------

def test_registry_matches_the_schema():
    assert set(METRICS) == set(METRIC_NAMES)
    for metric in METRICS.values():
        assert metric.name in TASK_TYPES[metric.task_type]
        assert metric.aggregation == ("pooled-f1" if metric.name == "micro f1" else "mean")


def test_registry_is_frozen():
    with pytest.raises(TypeError):
        METRICS["new"] = METRICS["accuracy"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        METRICS["accuracy"].name = "x"  # type: ignore[misc]


def test_unknown_metric_suggests_a_name():
    with pytest.raises(InputError, match="did you mean 'rougel'") as info:
        get_metric("rougeL")
    assert info.value.exit_code == 2


def test_aggregate_mean_pooled_and_empty():
    assert get_metric("accuracy").aggregate([1.0, 0.0, 0.0, 1.0]) == 0.5
    assert get_metric("micro f1").aggregate([NerCounts(1, 1, 0), NerCounts(0, 0, 2)]) == pytest.approx(0.4)
    assert get_metric("micro f1").sample_score(NerCounts(1, 1, 0)) == pytest.approx(2 / 3)
    with pytest.raises(InputError, match="no samples"):
        get_metric("ndcg").aggregate([])


# ---- accuracy, hit rate -------------------------------------------------------------------------

def test_accuracy():
    assert accuracy(2, 2) == 1.0
    assert accuracy(-1, 0) == 0.0


@pytest.mark.parametrize("prediction, truth, expected", [
    ([1, 2, 3], [1, 2, 3], 1.0),
    ([3, 7, 11], [3, 4, 5], 1 / 3),
    ([4, 5, 6, 1], [1, 2, 3], 0.0),  # only the first three predictions count
    ([2, 2, 2], [2, 3], 0.5),  # repeats hit once
    ([1, 2, 3], [1, 2, 3, 4], 0.75),  # four truths: at most 3/4
    ([], [1], 0.0),
])
def test_hit_rate_at_3(prediction, truth, expected):
    assert hit_rate_at_3(prediction, truth) == pytest.approx(expected)


# ---- NDCG ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction, truth, expected", [
    ([2, 1, 3], [1, 3, 0], 1.0),  # relevances 3, 1, 0 = the ideal order
    ([3, 1, 2], [1, 3, 0], (1 / L3 + 7 / 2) / (7 + 1 / L3)),  # relevances 0, 1, 3
    ([0], [1, 0, 2], 3 / (3 + 1 / L3)),  # index 0 reads the last weight (2)
    ([4, 1], [1, 2, 3], (1 / L3) / (7 + 3 / L3 + 1 / 2)),  # index 4 is past the end: relevance 0
    ([1, 2, 3], [1, 0], 1.0),  # trimmed to len(truth) = 2: [1, 2]
    ([1], [0, 0], 0.0),  # ideal DCG 0 -> 0
    ([], [1, 2], 0.0),
])
def test_ndcg(prediction, truth, expected):
    assert ndcg(prediction, truth) == pytest.approx(expected)


def test_ndcg_leaves_the_truth_unsorted():
    truth = [1, 3, 0]
    ndcg([1], truth)
    assert truth == [1, 3, 0]  # the organisers' code sorted it in place


# ---- NER ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction, truth, expected", [
    (["Boot ", " NIKE"], ["boot", "Nike"], NerCounts(2, 0, 0)),  # lowercased, spaces stripped
    (["a", "b"], ["a"], NerCounts(1, 1, 0)),
    ([], ["a", "b"], NerCounts(0, 0, 2)),  # an empty answer: all false negatives
    (["a", "a"], ["a"], NerCounts(1, 1, 0)),  # a repeated prediction is a false positive
    ([" x"], [" x"], NerCounts(0, 1, 1)),  # truths are lowercased but not stripped
    (["x\n"], ["x"], NerCounts(0, 1, 1)),  # predictions lose spaces only, not newlines
])
def test_ner_counts(prediction, truth, expected):
    assert ner_counts(prediction, truth) == expected


def test_micro_f1_pools_counts_rather_than_averaging():
    counts = [NerCounts(1, 1, 0), NerCounts(0, 0, 2)]  # per-sample F1s: 2/3 and 0 (mean 1/3)
    # pooled: tp 1, fp 1, fn 2 -> precision 1/2, recall 1/3 -> F1 = 2 * (1/6) / (5/6) = 0.4
    assert micro_f1(counts) == pytest.approx(0.4)


def test_micro_f1_with_nothing_to_divide_is_zero():
    assert micro_f1([]) == 0.0
    assert micro_f1([NerCounts(0, 0, 3)]) == 0.0  # no predictions at all: organisers divided by 0
    assert micro_f1([NerCounts(0, 0, 0)]) == 0.0


# ---- ROUGE-L ------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction, truth, expected", [
    ("the cat sat", "the cat sat", 1.0),
    ("a b c d", "a c e", 4 / 7),  # LCS 2: P 2/4, R 2/3 -> F 4/7
    ("running shoes", "run shoe", 1.0),  # Porter stemming
    ("run shoe", ["running shoes", "red hat"], 0.5),  # several references: the mean (1 and 0)
    ("", "", 0.0),
    # rouge_score's tokenizer keeps only [a-z0-9] runs: non-Latin text has no tokens at all, so
    # identical Japanese scores 0 (ShopBench behaves the same), and non-ASCII letters split words.
    ("日本語のテキスト", "日本語のテキスト", 0.0),
    ("Nike 运动鞋", "Nike 跑鞋", 1.0),  # only "nike" survives on both sides
    ("Größe XL", "grosse xl", 0.4),  # "gr e xl" vs "grosse xl": LCS 1, P 1/3, R 1/2
])
def test_rouge_l(prediction, truth, expected):
    assert rouge_l(prediction, truth) == pytest.approx(expected)


# ---- BLEU ---------------------------------------------------------------------------------------

def test_bleu_hand_computed():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3, brevity penalty 1 -> their geometric mean
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu("the cat sat on a mat", "the cat sat on the mat") == pytest.approx(expected)


def test_bleu_matches_sacrebleu_corpus_bleu_directly():
    hyp, ref = "RED DRAGON dart set with flights", "Red Dragon Amberjack dart set with flights and shafts"
    direct = sacrebleu.corpus_bleu([hyp], [[ref]], lowercase=True).score / 100
    assert bleu(hyp, ref) == pytest.approx(direct)


@pytest.mark.parametrize("prediction, expected", [
    ("The Cat Sat On The Mat", 1.0),  # lowercased
    ("\n\nthe cat sat on the mat\nsomething else entirely", 1.0),  # first line after the newlines
    ("wrong words are here\nthe cat sat on the mat", 0.0),  # later lines are ignored
    ("", 0.0),
])
def test_bleu_uses_the_first_line(prediction, expected):
    assert bleu(prediction, "the cat sat on the mat") == pytest.approx(expected)


def test_bleu_is_zero_for_short_exact_matches():
    # no 3- or 4-grams in a two-word hypothesis, and no effective order: BLEU is 0 (ShopBench too)
    assert bleu("the cat", "the cat") == 0.0


def test_bleu_several_references_is_the_mean():
    assert bleu("the cat sat on the mat", ["the cat sat on the mat", "x y z w"]) == pytest.approx(0.5)


def test_jp_bleu_names_the_extra_when_mecab_is_missing():
    if importlib.util.find_spec("MeCab") and importlib.util.find_spec("ipadic"):
        assert bleu("今日は良い天気です", "今日は良い天気です", tokenize="ja-mecab") == pytest.approx(1.0)
        return
    with pytest.raises(MissingDependencyError, match=r"pip install -e '\.\[ja\]'"):
        get_metric("jp-bleu").score_samples(["今日は"], ["今日は"])


# ---- sentence-transformer -----------------------------------------------------------------------

FOOD = "A man is eating food."
BREAD = "A man is eating a piece of bread."
BABY = "The girl is carrying a baby."


def test_sentence_similarity_known_values(minilm):
    identical, related, unrelated = sentence_similarity([FOOD, FOOD, FOOD], [FOOD, BREAD, BABY], minilm)
    assert identical == pytest.approx(1.0, abs=1e-6)
    assert related == pytest.approx(0.7553, abs=1e-3)  # the published all-MiniLM-L6-v2 value
    assert unrelated == 0.0  # the cosine is about -0.10: floored at 0


def test_sentence_similarity_floors_the_mean_not_each_reference(minilm):
    [score] = sentence_similarity([FOOD], [[FOOD, BABY]], minilm)
    raw = float(minilm.encode([FOOD])[0] @ minilm.encode([BABY])[0])
    assert raw < 0
    assert score == pytest.approx((1 + raw) / 2, abs=1e-5)


def test_sentence_similarity_batches_like_single_calls(minilm):
    preds, truths = ["a red shoe", "", "blue jeans"], ["red sneakers", "anything", ["denim", "jeans"]]
    batched = sentence_similarity(preds, truths, minilm)
    single = [sentence_similarity([p], [t], minilm)[0] for p, t in zip(preds, truths)]
    assert batched == pytest.approx(single, abs=1e-5)


def test_sent_transformer_metric_uses_the_bundled_model(minilm):
    assert get_metric("sent-transformer").score_samples([FOOD], [FOOD]) == pytest.approx([1.0], abs=1e-6)


def test_minilm_override_is_used(monkeypatch):
    monkeypatch.setenv(embeddings.MINILM_ENV, "/no/such/minilm")
    assert embeddings.minilm_location() == ("/no/such/minilm", embeddings.MINILM_ENV)
    with pytest.raises(InputError, match="HARNESS_MINILM_MODEL: no model directory"):
        get_metric("sent-transformer").score_samples(["a"], ["b"])


def test_multilingual_model_must_be_supplied(monkeypatch):
    monkeypatch.delenv(metrics.MULTILINGUAL_ENV, raising=False)
    with pytest.raises(MissingDependencyError, match="HARNESS_MULTILINGUAL_ST_MODEL=/path/to/"):
        get_metric("multilingual-sent-transformer").score_samples(["a"], ["b"])
    monkeypatch.setenv(metrics.MULTILINGUAL_ENV, "/no/such/model")
    with pytest.raises(InputError, match="HARNESS_MULTILINGUAL_ST_MODEL: no model directory"):
        get_metric("multilingual-sent-transformer").score_samples(["a"], ["b"])
