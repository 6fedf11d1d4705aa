"""`harness score` on a fixture laid out like the organisers' ShopBench development set: 18 tasks over
the four tracks, every task type, and task17 mixing `bleu` and `jp-bleu` rows as theirs does.

The rows are written for this fixture (the organisers' file is not redistributed); responses come in
two sets: perfect answers (every task scores 1) and plausible noisy answers, checked against values
computed here by hand or by calling sacreBLEU directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu

from harness.cli import app
from harness.evaluate.score_cli import score_files

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "organisers_layout"
BENCH = FIXTURE / "eighteen_tasks.json"
TRACKS = 4


def responses(name: str) -> list[str]:
    return [json.loads(line)["response"] for line in (FIXTURE / f"responses_{name}.jsonl").read_text().splitlines()]


def test_perfect_answers_score_one_on_all_18_tasks_including_the_mixed_one(minilm):
    report = score_files(BENCH, FIXTURE / "responses_perfect.jsonl")
    assert len(report.tasks) == 18 and len(report.tracks) == TRACKS
    assert (report.tasks["task17"].metric, report.tasks["task17"].n) == ("bleu/jp-bleu", 4)
    assert {n: t.score for n, t in report.tasks.items()} == pytest.approx({f"task{i}": 1.0 for i in range(1, 19)},
                                                                          abs=1e-5)


def test_noisy_answers_match_hand_computed_scores(minilm):
    report = score_files(BENCH, FIXTURE / "responses_noisy.jsonl")
    scores = {n: t.score for n, t in report.tasks.items()}
    # NER pooled over the task: (tp, fp, fn) = (1, 1, 1) + (2, 1, 0) -> P 3/5, R 3/4
    assert scores["task4"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert (scores["task2"], scores["task6"], scores["task13"]) == pytest.approx((0.5, 2 / 3, 0.5))
    rows = json.loads(BENCH.read_text())
    mixed = [(r, resp) for r, resp in zip(rows, responses("noisy"), strict=True) if r["task_name"] == "task17"]
    expected = [sacrebleu.corpus_bleu([resp.split("\n")[0]], [[r["output_field"]]], lowercase=True, smooth_method="exp",
                                      tokenize="ja-mecab" if r["metric"] == "jp-bleu" else "13a").score / 100
                for r, resp in mixed]
    assert scores["task17"] == pytest.approx(sum(expected) / len(expected))
    by_track: dict[str, list[float]] = {}
    for name, task in report.tasks.items():
        by_track.setdefault(task.track, []).append(task.score)
    assert report.overall == pytest.approx(sum(sum(v) / len(v) for v in by_track.values()) / TRACKS)
    assert report.pooled == pytest.approx(sum(scores.values()) / 18)


def test_the_command_prints_the_mixed_metric(minilm):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["score", str(BENCH), str(FIXTURE / "responses_noisy.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output[result.output.index("{"):])
    assert document["tasks"]["task17"]["metric"] == "bleu/jp-bleu" and len(document["tasks"]) == 18
