"""End to end on the real EC-Guide files: they read cleanly, perfect answers score 1, shuffled ones less.

The data lives outside the repository (../shared/data/ec_guide) and is never copied in; the tests skip
when it is absent. Each file contributes its first ROWS_PER_FILE rows to keep the suite fast.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from harness.evaluate.scoring import score_responses
from harness.tasks.shopbench_io import read_shopbench

EC_GUIDE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ec_guide" / "EC-Guide"
ROWS_PER_FILE = 50

pytestmark = pytest.mark.skipif(not EC_GUIDE.is_dir(), reason=f"EC-Guide data not found at {EC_GUIDE}")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    files = sorted(EC_GUIDE.glob("*/*.json"))
    assert files, f"no EC-Guide JSON files under {EC_GUIDE}"
    return [r for f in files for r in read_shopbench(f).rows[:ROWS_PER_FILE]]


def perfect_response(row: dict) -> str:
    """What a model that knew the answer would write."""
    truth = row["output_field"]
    if row["task_type"] == "named_entity_recognition":
        return repr(truth)  # a Python-literal list, so entities containing commas survive
    if row["task_type"] == "generation":
        return truth if isinstance(truth, str) else truth[0]
    return ", ".join(map(str, truth)) if isinstance(truth, list) else str(truth)


def test_every_file_reads_and_names_its_tasks(rows):
    tasks = {r["task_name"] for r in rows}
    assert tasks == {f.stem for f in EC_GUIDE.glob("*/*.json")}


def test_perfect_responses_score_one(minilm, rows):
    report = score_responses(rows, [perfect_response(r) for r in rows])
    assert {n: t.score for n, t in report.tasks.items()} == pytest.approx(
        {n: 1.0 for n in report.tasks}, abs=1e-6)
    assert report.overall == pytest.approx(1.0, abs=1e-6)


def shuffled_within_tasks(rows: list[dict], seed: int = 0) -> list[str]:
    """Perfect answers given to the wrong rows of the same task (same format, wrong content)."""
    responses = [perfect_response(r) for r in rows]
    by_task: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_task.setdefault(row["task_name"], []).append(index)
    for indices in by_task.values():
        moved = indices[:]
        random.Random(seed).shuffle(moved)
        for target, source in zip(indices, moved[1:] + moved[:1]):  # a cycle: no row keeps its own
            responses[target] = perfect_response(rows[source])
    return responses


def test_shuffled_responses_score_lower(minilm, rows):
    report = score_responses(rows, shuffled_within_tasks(rows))
    for name, task in report.tasks.items():
        assert task.score < 0.6, f"{name} ({task.metric}) scored {task.score:.3f} on shuffled answers"
    assert report.overall < 0.3
