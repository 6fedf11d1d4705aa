"""Reading benchmark and response files: formats, defaults, row-precise errors, skip_bad, score_files."""

from __future__ import annotations

import json

import pytest

from harness.errors import InputError
from harness.evaluate.score_cli import format_report, score_files
from harness.tasks.shopbench_io import read_responses, read_shopbench


def row(truth=1, **extra):
    return {"input_field": "Pick one.", "output_field": truth, "task_type": "multiple-choice",
            "metric": "accuracy", **extra}


def write_jsonl(path, values):
    path.write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in values), encoding="utf-8")
    return path


def test_reads_a_json_array_and_names_tasks(tmp_path):
    path = tmp_path / "track1.json"
    path.write_text(json.dumps([row(task_name="given"), row(subtask="sub"), row("2")]))
    bench = read_shopbench(path)
    assert [r["task_name"] for r in bench.rows] == ["given", "sub", "track1"]
    assert bench.rows[2]["output_field"] == 2  # normalised
    assert (len(bench), bench.n_records, bench.skipped, bench.problems) == (3, 3, 0, ())


def test_format_is_detected_by_content_not_extension(tmp_path):
    lines = write_jsonl(tmp_path / "lines.json", [row(), row()])
    array = tmp_path / "array.jsonl"
    array.write_text("\n  " + json.dumps([row()], indent=2))
    assert len(read_shopbench(lines)) == 2
    assert len(read_shopbench(array)) == 1


def test_bad_rows_are_listed_with_file_and_position(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps([row(), {"input_field": "x"}, row(), row([1])]))
    with pytest.raises(InputError) as info:
        read_shopbench(path)
    message = str(info.value)
    assert f"{path}:row 2: missing field 'output_field'" in message
    assert f"{path}:row 4: multiple-choice output_field must be an int" in message
    assert "row 1" not in message and "row 3" not in message
    assert "skip_bad" in message


def test_jsonl_problems_use_line_numbers(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps(row()) + "\n\n" + '{"input_field": \n' + json.dumps(row(metric="ndcg")) + "\n")
    with pytest.raises(InputError) as info:
        read_shopbench(path)
    message = str(info.value)
    assert f"{path}:line 3: invalid JSON" in message
    assert f"{path}:line 4: metric 'ndcg' does not apply" in message


def test_skip_bad_keeps_good_rows_and_reports_the_rest(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text("\n".join([json.dumps(row(0)), "not json", json.dumps(row("x")), json.dumps(row(2))]))
    bench = read_shopbench(path, skip_bad=True)
    assert [r["output_field"] for r in bench.rows] == [0, 2]
    assert (bench.positions, bench.n_records, bench.skipped) == ((0, 3), 4, 2)
    assert bench.problems[0].startswith(f"{path}:line 2: invalid JSON")
    assert bench.problems[1].startswith(f"{path}:line 3: multiple-choice output_field")


def test_an_unparseable_array_names_the_line(tmp_path):
    path = tmp_path / "b.json"
    path.write_text('[\n  {"input_field": "x",\n  oops\n]')
    with pytest.raises(InputError, match=r"b\.json:line 3: invalid JSON"):
        read_shopbench(path, skip_bad=True)


@pytest.mark.parametrize("content, match", [("", "no rows"), ("  \n\n", "no rows"), ("[]", "no rows")])
def test_empty_files_are_errors(tmp_path, content, match):
    path = tmp_path / "e.json"
    path.write_text(content)
    with pytest.raises(InputError, match=match):
        read_shopbench(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_shopbench(tmp_path / "nope.json")


def test_line_separator_inside_a_string_stays_one_row(tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", [row(input_field="a\u2028b")])
    assert read_shopbench(path).rows[0]["input_field"] == "a\u2028b"


def test_read_responses(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"response": "1"}, {"response": "", "extra": 1}])
    path.write_text(path.read_text() + "\n\n")
    assert read_responses(path) == ["1", ""]


def test_read_responses_lists_every_bad_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"response": "1"}\n{"response": 2}\n{"answer": "x"}\nnot json\n')
    with pytest.raises(InputError) as info:
        read_responses(path)
    message = str(info.value)
    assert f'{path}:line 2: "response" must be a string, got 2' in message
    assert f'{path}:line 3: expected an object with a "response" field' in message
    assert f"{path}:line 4: invalid JSON" in message


def test_score_files_checks_the_response_count(tmp_path):
    bench = write_jsonl(tmp_path / "b.jsonl", [row(), row()])
    responses = write_jsonl(tmp_path / "r.jsonl", [{"response": "1"}])
    with pytest.raises(InputError, match="has 1 responses but .* has 2 rows"):
        score_files(bench, responses)


def test_score_files_with_skip_bad_keeps_responses_aligned(tmp_path):
    bench = write_jsonl(tmp_path / "b.jsonl", [row(0), row("bad"), row(2)])
    responses = write_jsonl(tmp_path / "r.jsonl", [{"response": r} for r in ["0", "9", "2"]])
    with pytest.raises(InputError, match="line 2"):
        score_files(bench, responses)
    report = score_files(bench, responses, skip_bad=True)
    assert report.to_dict()["tasks"] == {
        "b": {"score": 1.0, "metric": "accuracy", "n": 2, "track": "default", "se": 0.0, "ci95": [1.0, 1.0]}}
    assert len(report.skipped) == 1 and report.skipped[0].startswith(f"{bench}:line 2:")
    assert "skipped 1 bad benchmark row(s)" in format_report(report)


def test_format_report_is_a_readable_table(tmp_path):
    bench = write_jsonl(tmp_path / "b.jsonl",
                        [row(0, task_name="pick", track="concept"), row(1, track="reasoning")])
    responses = write_jsonl(tmp_path / "r.jsonl", [{"response": "0"}, {"response": "x"}])
    text = format_report(score_files(bench, responses))
    lines = text.splitlines()
    assert lines[0].split() == ["task", "track", "metric", "n", "score"]
    assert lines[2].split() == ["pick", "concept", "accuracy", "1", "1.0000"]
    assert lines[3].split() == ["b", "reasoning", "accuracy", "1", "0.0000"]
    assert "overall  0.5000" in text and "pooled   0.5000" in text
