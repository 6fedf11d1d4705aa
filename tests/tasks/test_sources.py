"""Readers for real data sources: ShopBench JSON, Shopping-MMLU CSV, ECInstruct records, `datasets` dirs."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from harness.errors import InputError
from harness.tasks import registry
from harness.tasks.schema import row_problems
from harness.tasks.sources import SourceSpec, load_source, source_problems

EC_GUIDE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ec_guide" / "EC-Guide"
ROW_KEYS = {"input_field", "output_field", "task_type", "metric", "task_name", "track", "domain", "subtask",
            "row_id", "source"}


def spec(path, kind="shopbench", **kw) -> SourceSpec:
    return SourceSpec(kind=kind, path=str(path), domain=kw.pop("domain", "concept"),
                      subtask=kw.pop("subtask", "sub"), **kw)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, records: list) -> Path:
    return write(path, "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")


MC = {"input_field": "Which is a fruit?\n0. car\n1. apple\nAnswer: ", "output_field": 1,
      "task_type": "multiple-choice", "metric": "accuracy"}
GEN = {"input_field": "Explain the product type tutu\nOutput:", "output_field": "A ballet skirt.",
       "task_type": "generation", "metric": "sent-transformer"}


def assert_valid(rows, domain="concept", subtask="sub"):
    for r in rows:
        assert set(r) == ROW_KEYS
        assert row_problems(r) == []
        assert (r["domain"], r["subtask"], r["task_name"]) == (domain, subtask, subtask)
        assert r["track"] == registry.get_domain(domain).track


# ---------------------------------------------------------------------------------------------
# shopbench


def test_shopbench_array_rows_are_stamped_with_domain_subtask_and_ids(tmp_path):
    path = write(tmp_path / "mc.json", json.dumps([MC, {**MC, "output_field": "0", "track": "t1"}]))
    data = load_source(spec(path, domain="reasoning", subtask="fruit_mc"))
    assert_valid(data.rows, "reasoning", "fruit_mc")
    assert [r["output_field"] for r in data.rows] == [1, 0]  # digit-string answers become ints
    assert [r["row_id"] for r in data.rows] == ["fruit_mc:1", "fruit_mc:2"]
    assert data.rows[0]["source"] == f"shopbench:{path}"
    assert (data.skipped, data.messages) == (0, ())
    assert len(data.fingerprint) == 64


def test_shopbench_bad_rows_are_listed_with_file_and_line(tmp_path):
    path = jsonl(tmp_path / "bad.jsonl", [
        MC,
        {k: v for k, v in MC.items() if k != "output_field"},  # line 2: missing field
        {**MC, "output_field": [1]},  # line 3: wrong type
        '{"input_field": "oops"',  # line 4: not JSON
        GEN,
    ])
    with pytest.raises(InputError) as err:
        load_source(spec(path))
    msg = str(err.value)
    for line in (2, 3, 4):
        assert f"{path}:line {line}:" in msg
    assert "missing field 'output_field'" in msg and "skip" in msg
    data = load_source(spec(path, skip_bad=True))
    assert data.skipped == 3 and len(data.rows) == 2
    assert sum("(skipped)" in m for m in data.messages) == 3
    assert [r["row_id"] for r in data.rows] == ["sub:1", "sub:5"]  # record numbers in the file


def test_shopbench_override_metric_and_bad_override(tmp_path):
    path = write(tmp_path / "gen.json", json.dumps([GEN]))
    data = load_source(spec(path, metric="rougel"))
    assert data.rows[0]["metric"] == "rougel"
    with pytest.raises(InputError, match=r"gen.json:row 1: retrieval output_field"):
        load_source(spec(path, task_type="retrieval"))


def test_fingerprint_follows_bytes_and_mapping_not_location(tmp_path):
    path = write(tmp_path / "a.json", json.dumps([MC]))
    moved = tmp_path / "sub" / "b.json"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    base = load_source(spec(path)).fingerprint
    assert load_source(spec(moved)).fingerprint == base
    assert load_source(spec(path, subtask="other")).fingerprint != base
    write(path, json.dumps([MC, MC]))
    assert load_source(spec(path)).fingerprint != base


def test_limit_stops_reading_and_says_so(tmp_path):
    path = write(tmp_path / "many.json", json.dumps([MC] * 10))
    data = load_source(spec(path, limit=3))
    assert len(data.rows) == 3 and any("limit 3" in m for m in data.messages)


def test_missing_file_and_empty_result(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_source(spec(tmp_path / "nope.json"))
    path = write(tmp_path / "mc.json", json.dumps([MC]))
    with pytest.raises(InputError, match="no usable rows"):
        load_source(spec(path, where={"task_type": "ranking"}))


def test_ec_guide_files_read_as_sources():
    if not EC_GUIDE.exists():
        pytest.skip(f"EC-Guide data not found at {EC_GUIDE}")
    spa = load_source(spec(EC_GUIDE / "MCQ" / "SPA.json", subtask="ec_spa"))
    assert len(spa.rows) == 520 and spa.skipped == 0
    assert_valid(spa.rows[:50], subtask="ec_spa")
    sap = load_source(spec(EC_GUIDE / "MCQ" / "SAP.json", subtask="ec_sap"))
    assert len(sap.rows) == 1385 and all(isinstance(r["output_field"], int) for r in sap.rows)
    ner = load_source(spec(EC_GUIDE / "NER" / "NER.json", subtask="ec_ner", limit=100))
    assert len(ner.rows) == 100 and ner.rows[0]["task_type"] == "named_entity_recognition"
    mt = load_source(spec(EC_GUIDE / "Generation" / "MT.json", domain="multilingual", subtask="ec_mt", limit=5))
    assert mt.rows[0]["metric"] == "bleu"


# ---------------------------------------------------------------------------------------------
# mmlu_csv


def test_csv_with_choices_column_gives_shopbench_mc_layout(tmp_path):
    path = write(tmp_path / "mc.csv",
                 'question,choices,answer\n'
                 '"Which is a fruit?","[""car"", ""apple"", ""sofa""]",1\n'
                 '"Which is a drink?","[\'tea\', \'rock\']",A\n'
                 '"Pick the shoe","[""boot"", ""lamp""]",boot\n')
    data = load_source(spec(path, kind="mmlu_csv", subtask="mmlu"))
    assert data.rows[0]["input_field"] == "Which is a fruit?\n0. car\n1. apple\n2. sofa\nAnswer: "
    assert [r["output_field"] for r in data.rows] == [1, 0, 0]
    assert_valid(data.rows, subtask="mmlu")
    assert data.rows[0]["metric"] == "accuracy"


def test_csv_with_option_columns_and_letter_answers(tmp_path):
    path = write(tmp_path / "opts.csv", "Question,A,B,C,D,Answer\nBest for rain?,hat,umbrella,sock,fan,B\n"
                                        "Three options only?,x,y,z,,C\n")
    data = load_source(spec(path, kind="mmlu_csv"))
    assert [r["output_field"] for r in data.rows] == [1, 2]
    assert data.rows[1]["input_field"].endswith("2. z\nAnswer: ")


def test_headerless_csv_is_read_in_mmlu_layout(tmp_path):
    path = write(tmp_path / "hendrycks.csv", "What holds water?,sieve,bucket,net,fork,B\n")
    data = load_source(spec(path, kind="mmlu_csv"))
    assert data.rows[0]["output_field"] == 1
    assert any("no header row" in m for m in data.messages)


def test_csv_bad_rows_name_file_and_line(tmp_path):
    path = write(tmp_path / "bad.csv",
                 "question,choices,answer\n"
                 'ok?,"[""a"", ""b""]",0\n'
                 'no list?,"a b c",0\n'          # line 3: choices not a list -> one option
                 'range?,"[""a"", ""b""]",7\n'   # line 4: answer out of range
                 'extra,"[""a"", ""b""]",0,9\n'  # line 5: wrong column count
                 ',"[""a"", ""b""]",1\n')        # line 6: empty question
    with pytest.raises(InputError) as err:
        load_source(spec(path, kind="mmlu_csv"))
    msg = str(err.value)
    assert "4 bad row(s)" in msg
    for line in (3, 4, 5, 6):
        assert f"bad.csv:line {line}:" in msg
    data = load_source(spec(path, kind="mmlu_csv", skip_bad=True))
    assert (len(data.rows), data.skipped) == (1, 4)


def test_csv_without_answer_column_is_one_clear_error(tmp_path):
    path = write(tmp_path / "noans.csv", "question,choices\nq,\"['a','b']\"\n")
    with pytest.raises(InputError, match="no 'answer' column"):
        load_source(spec(path, kind="mmlu_csv"))


def test_csv_field_mapping(tmp_path):
    path = write(tmp_path / "mapped.csv", "prompt,opts,label\nWhich?,\"['a','b']\",1\n")
    data = load_source(spec(path, kind="mmlu_csv", fields={"question": "prompt", "choices": "opts", "answer": "label"}))
    assert data.rows[0]["output_field"] == 1


# ---------------------------------------------------------------------------------------------
# ecinstruct


ECI = [
    {"task": "Product_Relation_Prediction", "split": "train", "instruction": "How are the two products related?",
     "input": "Product 1: phone case. Product 2: phone.", "options": ["A: also bought", "B: complement", "C: none"],
     "output": "B: complement"},
    {"task": "Answer_Generation", "split": "train", "instruction": "Answer the question about the product.",
     "input": "Is this jacket waterproof?", "options": "", "output": "Yes, it has a waterproof shell."},
    {"task": "Sentiment_Analysis", "split": "test", "instruction": "Rate the review.", "input": "Great!",
     "options": ["A: positive", "B: negative"], "output": "A"},
]


def test_ecinstruct_mc_and_generation_rows(tmp_path):
    path = write(tmp_path / "eci.json", json.dumps(ECI))
    data = load_source(spec(path, kind="ecinstruct", domain="behavior", subtask="eci"))
    mc, gen, senti = data.rows
    assert mc["input_field"] == ("How are the two products related?\nProduct 1: phone case. Product 2: phone.\n"
                                 "0. also bought\n1. complement\n2. none\nAnswer: ")
    assert (mc["output_field"], mc["task_type"], mc["metric"]) == (1, "multiple-choice", "accuracy")
    assert (gen["task_type"], gen["metric"]) == ("generation", "rougel")
    assert gen["input_field"].endswith("Is this jacket waterproof?\nOutput: ")
    assert senti["output_field"] == 0
    assert_valid(data.rows, "behavior", "eci")


def test_ecinstruct_where_and_split_filters_are_reported(tmp_path):
    path = write(tmp_path / "eci.json", json.dumps(ECI))
    data = load_source(spec(path, kind="ecinstruct", where={"task": "Answer_Generation"}))
    assert len(data.rows) == 1 and any("2 record(s) left out" in m for m in data.messages)
    test_only = load_source(spec(path, kind="ecinstruct", split="test"))
    assert len(test_only.rows) == 1 and test_only.rows[0]["output_field"] == 0


def test_ecinstruct_bad_records(tmp_path):
    path = jsonl(tmp_path / "eci.jsonl", [
        ECI[0],
        {"instruction": "No output here", "input": ""},  # line 2
        "not json at all",  # line 3
        {**ECI[0], "output": "D: unknown"},  # line 4: names no option
        ECI[1],
    ])
    with pytest.raises(InputError) as err:
        load_source(spec(path, kind="ecinstruct"))
    msg = str(err.value)
    assert "eci.jsonl:line 2: missing field 'output'" in msg
    assert "eci.jsonl:line 3: invalid JSON" in msg
    assert "eci.jsonl:line 4: answer 'D: unknown' names none of the 3 options" in msg
    data = load_source(spec(path, kind="ecinstruct", skip_bad=True))
    assert (len(data.rows), data.skipped) == (2, 3)


# ---------------------------------------------------------------------------------------------
# hf (datasets)


@pytest.fixture(scope="module")
def saved_datasets(tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    root = tmp_path_factory.mktemp("hf")
    rows = [{"question": "Which is red?", "opts": ["sky", "apple"], "label": "1", "task": "a"},
            {"question": "Which is blue?", "opts": ["sky", "apple"], "label": "A", "task": "b"},
            {"question": "Only one option", "opts": ["x"], "label": "0", "task": "a"}]
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(root / "single"))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(root / "splits"))
    gen = datasets.Dataset.from_list([{"input_field": f"Describe item {i}", "output_field": f"Item {i}.",
                                       "task_type": "generation", "metric": "rougel"} for i in range(4)])
    gen.save_to_disk(str(root / "shopbench_cols"))
    return root


HF_MC = {"task_type": "multiple-choice",
         "fields": {"input_field": "question", "output_field": "label", "options": "opts"}}


def test_hf_saved_dir_with_column_mapping(saved_datasets):
    with pytest.raises(InputError, match=r"single:row 3: need at least 2 options"):
        load_source(spec(saved_datasets / "single", kind="hf", **HF_MC))
    data = load_source(spec(saved_datasets / "single", kind="hf", skip_bad=True, **HF_MC))
    assert [r["output_field"] for r in data.rows] == [1, 0]
    assert data.rows[0]["input_field"] == "Which is red?\n0. sky\n1. apple\nAnswer: "
    assert data.skipped == 1
    assert_valid(data.rows)


def test_hf_dataset_dict_split_choice(saved_datasets):
    data = load_source(spec(saved_datasets / "splits", kind="hf", split="test", **HF_MC))
    assert len(data.rows) == 1
    train = load_source(spec(saved_datasets / "splits", kind="hf", skip_bad=True, **HF_MC))
    assert len(train.rows) == 2 and train.fingerprint != data.fingerprint
    with pytest.raises(InputError, match=r"split 'tset' not found \(did you mean 'test'\?\)"):
        load_source(spec(saved_datasets / "splits", kind="hf", split="tset", **HF_MC))


def test_hf_shopbench_columns_need_no_mapping(saved_datasets):
    data = load_source(spec(saved_datasets / "shopbench_cols", kind="hf", where={"output_field": "Item 2."}))
    assert len(data.rows) == 1 and data.rows[0]["metric"] == "rougel"


def test_hf_missing_column_lists_the_columns(saved_datasets):
    with pytest.raises(InputError, match=r"lacks column\(s\) 'prompt' \(fields.input_field\).*its columns: question"):
        load_source(spec(saved_datasets / "single", kind="hf", task_type="generation",
                         fields={"input_field": "prompt", "output_field": "label"}))


def test_hf_hub_id_offline_fails_fast_with_a_fix():
    start = time.monotonic()
    with pytest.raises(InputError, match="save_to_disk"):
        load_source(spec("no-such-org/no-such-dataset", kind="hf"))  # conftest sets HF_HUB_OFFLINE=1
    assert time.monotonic() - start < 10


def test_hf_unreachable_hub_is_detected_before_any_download(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from harness.tasks import sources

    with socket.socket() as s:  # a loopback port with nothing listening: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(sources, "hub_endpoint", lambda: f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(InputError, match="unreachable"):
        load_source(spec("no-such-org/no-such-dataset", kind="hf"))
    assert time.monotonic() - start < 10


# ---------------------------------------------------------------------------------------------
# SourceSpec validation


def test_spec_problems_name_every_field():
    problems = source_problems({"kind": "shopbench", "path": "x.json", "domain": "conept", "subtask": "a b",
                                "task_type": "multiple_choice", "colour": 1}, "data.sources[2]")
    text = "\n".join(problems)
    assert "data.sources[2].domain: unknown domain 'conept' (did you mean 'concept'?)" in text
    assert "data.sources[2].subtask:" in text
    assert "data.sources[2].task_type: unknown task_type 'multiple_choice' (did you mean 'multiple-choice'?)" in text
    assert "data.sources[2].colour: unknown key" in text


def test_spec_cross_field_problems():
    problems = source_problems({"kind": "mmlu_csv", "path": "x.csv", "domain": "concept", "subtask": "s",
                                "task_type": "ranking", "metric": "accuracy", "split": "train",
                                "fields": {"questoin": "q"}}, "src")
    text = "\n".join(problems)
    assert "src.fields.questoin: not a column kind mmlu_csv reads (did you mean 'question'?)" in text
    assert "src.metric: 'accuracy' does not apply to task_type 'ranking'" in text
    assert "src.task_type: mmlu_csv rows are multiple-choice" in text
    assert "src.split: only hf and ecinstruct" in text
    with pytest.raises(InputError, match=r"4 problem\(s\) in src"):
        SourceSpec.parse({"kind": "mmlu_csv", "path": "x.csv", "domain": "concept", "subtask": "s",
                          "task_type": "ranking", "metric": "accuracy", "split": "train",
                          "fields": {"questoin": "q"}}, "src")


def test_sweep_data_sources_are_source_specs():
    from harness.spec.schema import DataSpec

    data = DataSpec(sources=["builtin:synthetic", {"kind": "shopbench", "domain": "concept",
                    "path": "../shared/data/ec_guide/EC-Guide/MCQ/SPA.json", "subtask": "ec_spa"}])
    assert isinstance(data.sources[1], SourceSpec) and data.sources[1].subtask == "ec_spa"
