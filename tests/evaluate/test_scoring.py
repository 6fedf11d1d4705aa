"""Aggregation maths, task and track naming, per-sample detail and input errors of score_responses."""

from __future__ import annotations

import json

import pytest

from harness.errors import InputError
from harness.evaluate.metrics import NerCounts, sentence_similarity
from harness.evaluate.scoring import aggregate_samples, format_floor, score_responses


def mc(truth, **extra):
    return {"input_field": "Pick one.", "output_field": truth, "task_type": "multiple-choice",
            "metric": "accuracy", **extra}


def retrieval(truth, **extra):
    return {"input_field": "Pick three.", "output_field": truth, "task_type": "retrieval",
            "metric": "hit rate@3", **extra}


def ner(truth, **extra):
    return {"input_field": "Extract.", "output_field": truth, "task_type": "named_entity_recognition",
            "metric": "micro f1", **extra}


def test_task_track_overall_and_pooled_maths():
    rows = [mc(1, task_name="t1", track="A"), mc(2, task_name="t1", track="A"),
            retrieval([1, 2, 3], task_name="t2", track="A"), mc(0, task_name="t3", track="B")]
    report = score_responses(rows, ["1", "0", "1, 9, 8", "0"])
    assert {n: t.score for n, t in report.tasks.items()} == pytest.approx(
        {"t1": 0.5, "t2": 1 / 3, "t3": 1.0})
    assert report.tracks == pytest.approx({"A": (0.5 + 1 / 3) / 2, "B": 1.0})
    assert report.overall == pytest.approx(((0.5 + 1 / 3) / 2 + 1.0) / 2)  # 0.7083: tracks weigh equally
    assert report.pooled == pytest.approx((0.5 + 1 / 3 + 1.0) / 3)  # 0.6111: tasks weigh equally


def test_to_dict_is_exactly_the_json_document():
    report = score_responses([mc(1, task_name="t1", track="A")], ["1"])
    document = report.to_dict()
    assert document == {"tasks": {"t1": {"score": 1.0, "metric": "accuracy", "n": 1, "track": "A"}},
                        "tracks": {"A": 1.0}, "overall": 1.0, "pooled": 1.0}
    assert json.loads(json.dumps(document)) == document


def test_task_and_track_names_fall_back_in_order():
    rows = [mc(1, task_name="named", subtask="sub", track="T", domain="D"),
            mc(1, subtask="sub", domain="D"), mc(1)]
    report = score_responses(rows, ["1", "1", "1"], default_task_name="bench")
    assert {n: t.track for n, t in report.tasks.items()} == {"named": "T", "sub": "D", "bench": "default"}


def test_ner_task_is_pooled_and_keeps_per_sample_detail():
    rows = [ner(["a"], task_name="ner"), ner(["b", "c"], task_name="ner")]
    task = score_responses(rows, ["a, z", "[]"]).tasks["ner"]
    assert task.sample_values == (NerCounts(1, 1, 0), NerCounts(0, 0, 2))
    assert task.sample_scores == pytest.approx((2 / 3, 0.0))
    assert task.score == pytest.approx(0.4)  # pooled, not the 1/3 mean of the samples
    assert aggregate_samples(task.sample_metrics, task.sample_values) == task.score  # bootstrap recipe


def test_per_sample_detail_maps_back_to_rows():
    rows = [mc(1, task_name="x"), mc(2, task_name="y"), mc(3, task_name="x")]
    report = score_responses(rows, ["1", "2", "Answer: 3"])
    x = report.tasks["x"]
    assert (x.row_indices, x.predictions, x.sample_scores, x.n) == ((0, 2), (1, -1), (1.0, 0.0), 2)


def test_digit_string_truths_are_normalised():
    assert score_responses([mc("2")], ["2"]).overall == 1.0


def test_generation_task_scores_the_batched_similarity(minilm):
    truths = ["a red running shoe", "a wooden dining table", ["denim jeans", "blue trousers"]]
    rows = [{"input_field": "Describe.", "output_field": t, "task_type": "generation",
             "metric": "sent-transformer", "task_name": "gen"} for t in truths]
    responses = [" red sneakers \n", "a table", "jeans"]
    expected = sentence_similarity(["red sneakers", "a table", "jeans"], truths, minilm)
    task = score_responses(rows, responses).tasks["gen"]
    assert task.sample_scores == pytest.approx(expected)
    assert task.score == pytest.approx(sum(expected) / 3)


def test_the_metric_belongs_to_the_row_and_a_task_averages_its_rows():
    rows = [mc(1, task_name="mixed"), retrieval([1, 2], task_name="mixed"), mc(2, task_name="mixed")]
    task = score_responses(rows, ["1", "1, 7", "0"]).tasks["mixed"]
    assert task.metric == "accuracy/hit rate@3"  # each metric once, in order of appearance
    assert task.sample_metrics == ("accuracy", "hit rate@3", "accuracy")
    assert task.sample_scores == pytest.approx((1.0, 0.5, 0.0))
    assert task.score == pytest.approx(0.5)  # the mean of the rows' own scores


def test_a_task_mixing_bleu_and_jp_bleu_scores_each_row_with_its_tokeniser():
    gen = {"task_type": "generation", "task_name": "task17", "input_field": "Translate."}
    rows = [{**gen, "metric": "bleu", "output_field": "Ensemble de serviettes en coton gris"},
            {**gen, "metric": "jp-bleu", "output_field": "ステンレス製の電気ケトル、容量1リットル"}]
    task = score_responses(rows, ["ensemble de serviettes en coton", "ステンレスの電気ケトル、1リットル"]).tasks["task17"]
    assert task.metric == "bleu/jp-bleu"
    import sacrebleu

    expected = [sacrebleu.corpus_bleu([hyp], [[ref]], lowercase=True, tokenize=tok, smooth_method="exp").score / 100
                for hyp, ref, tok in (("ensemble de serviettes en coton", rows[0]["output_field"], "13a"),
                                      ("ステンレスの電気ケトル、1リットル", rows[1]["output_field"], "ja-mecab"))]
    assert task.sample_scores == pytest.approx(expected)
    assert 0 < expected[1] < 1 and task.score == pytest.approx(sum(expected) / 2)


def test_a_pooled_metric_cannot_be_averaged_with_per_row_ones():
    rows = [mc(1, task_name="mixed"), ner(["a"], task_name="mixed")]
    with pytest.raises(InputError, match="task 'mixed' mixes accuracy and micro f1: micro-F1 is pooled"):
        score_responses(rows, ["1", "a"])


def test_a_task_spanning_tracks_is_named():
    with pytest.raises(InputError, match="task 't' spans tracks"):
        score_responses([mc(1, task_name="t", track="A"), mc(1, task_name="t", track="B")], ["1", "1"])


def test_response_count_must_match():
    with pytest.raises(InputError, match="1 responses for 2 benchmark rows"):
        score_responses([mc(1), mc(1)], ["1"])


def test_responses_must_be_strings():
    with pytest.raises(InputError, match="response 2: expected a string, got NoneType"):
        score_responses([mc(1), mc(1)], ["1", None])


def test_bad_rows_are_listed_by_number():
    rows = [mc(1), {"input_field": "x"}, mc(1, metric="acuracy")]
    with pytest.raises(InputError) as info:
        score_responses(rows, ["1", "1", "1"])
    message = str(info.value)
    assert "row 2: missing field 'output_field'" in message
    assert "row 3: unknown metric 'acuracy' (did you mean 'accuracy'?)" in message
    assert "row 1" not in message


def test_nothing_to_score():
    with pytest.raises(InputError, match="no benchmark rows"):
        score_responses([], [])


def test_task_standard_error_and_interval_by_hand():
    # 3 right of 4: per-row scores 1,1,1,0 -> mean 0.75, sample sd 0.5, se 0.5 / sqrt(4) = 0.25
    rows = [mc(1, task_name="t")] * 4
    task = score_responses(rows, ["1", "1", "1", "0"]).to_dict()["tasks"]["t"]
    assert task["se"] == pytest.approx(0.25)
    assert task["ci95"] == pytest.approx([0.75 - 1.96 * 0.25, 0.75 + 1.96 * 0.25])


def test_pooled_ner_standard_error_is_a_seeded_bootstrap():
    rows = [ner(["a", "b"], task_name="n")] * 10
    responses = ["a, b"] * 5 + ["c"] * 5
    first = score_responses(rows, responses).tasks["n"].se
    assert first == score_responses(rows, responses).tasks["n"].se  # same rows, same SE
    assert 0.05 < first < 0.4
    assert score_responses(rows, ["a, b"] * 10).tasks["n"].se == 0.0  # no spread, no noise


def test_one_row_task_has_no_noise_fields():
    assert "se" not in score_responses([mc(1, task_name="t")], ["1"]).to_dict()["tasks"]["t"]


def test_format_floor_answers_every_row_with_the_commonest_answer():
    rows = [mc(2, task_name="m"), mc(2, task_name="m"), mc(1, task_name="m"), mc(0, task_name="m"),
            retrieval([1, 2, 3], task_name="r"), retrieval([1, 2, 4], task_name="r")]
    floor = format_floor(rows)
    assert floor["m"] == pytest.approx(0.5)  # "2" for all four rows: two right
    assert floor["r"] == pytest.approx((1 + 2 / 3) / 2)  # "1,2,3" for both
