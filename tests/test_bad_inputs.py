"""Bad inputs as a careless or hurried user gives them (issue 16): each one exits 2 with one message
that names the file, field or row and says how to fix it, and never a traceback.

The CLI runs in this process (`harness.cli.main` with sys.argv set), so a traceback is an uncaught
exception that fails the test; a few cases also run as a subprocess to pin the real exit code.
Classes, in file order: files that are not text, --set values, YAML the loader refuses (duplicate
keys, tags, alias bombs), loose types, absurd sizes, base models that cannot exist, names that are
not plain folder names, benchmark and response files for `harness score`, data sources.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli_runner import run_cli

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "sweeps" / "smoke.yaml"


def assert_clean_refusal(code: int, text: str, *needles: str) -> None:
    assert code == 2, text
    assert "Traceback" not in text, text
    lowered = text.lower()
    for needle in needles:
        assert needle.lower() in lowered, f"{needle!r} missing from:\n{text}"


def smoke_raw() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def write_sweep(tmp_path: Path, raw: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------
# Files that are not text (or not there)

SMOKE_TEXT = SMOKE.read_text()
NOT_TEXT = {
    "binary": (b"\x00\x01\x02\xff\xfe\x89PNG", "not utf-8"),
    "utf16_le_bom": (SMOKE_TEXT.encode("utf-16"), "not utf-8"),
    "utf16_be": (b"\xfe\xff" + SMOKE_TEXT.encode("utf-16-be"), "not utf-8"),
    "utf32": (SMOKE_TEXT.encode("utf-32"), "not utf-8"),
    "latin1": ("name: caf\u00e9\n".encode("latin-1"), "not utf-8"),
    "nul_in_text": (SMOKE_TEXT.encode()[:50] + b"\x00" + SMOKE_TEXT.encode()[50:], "not utf-8"),
    "gzip": (b"\x1f\x8b\x08\x00" + bytes(range(256)), "not utf-8"),
    "yaml_list": (b"- name: smoke\n- grid: {}\n", "must be a yaml mapping"),
    "yaml_scalar": (b"just some words\n", "must be a yaml mapping"),
    "control_char": (b"name: a\x07b\n", "not valid yaml"),
    "unclosed_bracket": (b"name: x\ngrid: {lora_rank: [4, 8\n", "not valid yaml"),
    "bad_indent": (b"name: x\n grid:\n- 1\n  - 2\n", "not valid yaml"),
    "deep_nesting": (b"name: x\ngrid: " + b"[" * 5000 + b"]" * 5000 + b"\n", "not valid yaml"),
}


@pytest.mark.parametrize("case", sorted(NOT_TEXT))
def test_sweep_file_that_is_not_text_or_yaml(capsys, tmp_path, case):
    content, needle = NOT_TEXT[case]
    path = tmp_path / "sweep.yaml"
    path.write_bytes(content)
    assert_clean_refusal(*run_cli(capsys, "plan", str(path)), str(path), needle)


@pytest.mark.parametrize("command", [["plan"], ["trial"], ["sweep"], ["data", "show"]])
def test_a_directory_given_as_the_sweep_file(capsys, tmp_path, command):
    folder = tmp_path / "sweeps.yaml"
    folder.mkdir()
    assert_clean_refusal(*run_cli(capsys, *command, str(folder)), str(folder), "is a directory", "give the")


def test_a_missing_sweep_file(capsys, tmp_path):
    assert_clean_refusal(*run_cli(capsys, "plan", str(tmp_path / "nope.yaml")), "nope.yaml", "not found")


def test_a_sweep_file_too_large_to_be_one(capsys, tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# " + b"x" * (11 * 2**20) + b"\nname: x\n")
    assert_clean_refusal(*run_cli(capsys, "plan", str(path)), "huge.yaml", "too large", "give the yaml file")


# ---------------------------------------------------------------------------------------------
# --set values

BAD_SETS = {
    "unclosed_list": ("grid.seed=[0", "close its brackets"),
    "unclosed_map": ("train={steps: 3", "close its brackets"),
    "unclosed_quote": ('name="smoke', "close its brackets or quotes"),
    "python_tag": ("grid.seed=!!python/object:os.system", "!!python/object:os.system"),
    "python_name_tag": ("train.lr=!!python/name:os.getcwd", "tag"),
    "binary_tag": ("name=!!binary aGVsbG8=", "!!binary"),
    "custom_tag": ("name=!shell ls", "!shell"),
    "timestamp_tag": ("name=!!timestamp 2024-01-01", "!!timestamp"),
    "set_tag": ("grid.seed=!!set {1, 2}", "!!set"),
    "undefined_alias": ("grid.seed=*anchor", "not plain yaml"),
    "no_equals": ("train.steps", "expected key.path=value"),
    "empty_key": ("=5", "empty key"),
    "empty_key_part": ("train..steps=5", "empty key"),
    "into_a_list": ("grid.seed.x=1", "not a mapping"),
    "deep_value": ("train.steps=" + "[" * 3000 + "]" * 3000, "--set"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETS))
def test_set_values_yaml_cannot_read_or_that_carry_tags(capsys, case):
    override, needle = BAD_SETS[case]
    code, text = run_cli(capsys, "plan", str(SMOKE), "--set", override)
    assert_clean_refusal(code, text, "--set", needle)


# ---------------------------------------------------------------------------------------------
# YAML the loader refuses: duplicate keys (both lines named), tags, alias bombs

DUPLICATES = {
    "top_level_block": ("name: a\ntrain: {steps: 3}\ngrid: {domains: all}\ntrain: {lr: 1}\n", "'train'",
                        "line 2", "line 4"),
    "nested_key": ("name: a\ntrain:\n  steps: 3\n  steps: 5\n", "'steps'", "line 3", "line 4"),
    "flow_mapping": ("name: a\ngrid: {seed: [0], seed: [1]}\n", "'seed'", "line 2", "line 2"),
    "name_twice": ("name: a\nname: b\n", "'name'", "line 1", "line 2"),
    "in_a_list_entry": ("name: a\ngrid:\n  capacity:\n  - {family: lora, family: dora}\n", "'family'",
                        "line 4", "line 4"),
    "numeric_keys": ("name: a\nlimits: {1: a, 1: b}\n", "1", "line 2", "line 2"),
}


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_duplicate_keys_are_refused_with_both_lines(capsys, tmp_path, case):
    text, key, first, second = DUPLICATES[case]
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    assert_clean_refusal(*run_cli(capsys, "plan", str(path)), str(path), "appears twice", key, first, second,
                         "merge them")


TAGGED_FILES = {
    "python_object": "name: !!python/object/apply:os.system ['true']\n",
    "binary": "name: !!binary aGVsbG8=\n",
    "custom": "name: x\ntrain: !secret {steps: 3}\n",
    "omap": "name: x\ntrain: !!omap [{steps: 3}]\n",
}


@pytest.mark.parametrize("case", sorted(TAGGED_FILES))
def test_yaml_tags_in_a_sweep_file_are_refused(capsys, tmp_path, case):
    path = tmp_path / "tagged.yaml"
    path.write_text(TAGGED_FILES[case])
    assert_clean_refusal(*run_cli(capsys, "plan", str(path)), str(path), "tag", "remove the tag")


def test_an_alias_bomb_is_refused(capsys, tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nname: x\n")
    assert_clean_refusal(*run_cli(capsys, "plan", str(path)), str(path), "alias", "write the values out")


def test_an_unquoted_date_is_text_not_a_timestamp(tmp_path):
    from harness.spec.load import load_yaml_text

    assert load_yaml_text("when: 2024-01-01") == {"when": "2024-01-01"}


# ---------------------------------------------------------------------------------------------
# Loose types: a boolean is not a number, nan and inf are not numbers either

LOOSE = {
    "rank_true": ("grid.lora_rank=[true]", "grid.lora_rank[0]"),
    "rank_false": ("grid.lora_rank=[4, false]", "grid.lora_rank[1]"),
    "seed_true": ("grid.seed=[true]", "grid.seed[0]"),
    "volume_yes": ("grid.volume=[yes]", "grid.volume[0]"),
    "steps_true": ("train.steps=true", "train.steps"),
    "lr_on": ("train.lr=on", "train.lr"),
    "micro_batch_true": ("train.micro_batch=true", "train.micro_batch"),
    "gpu_yes": ("resources.gpu=yes", "resources.gpu"),
    "cpu_true": ("resources.cpu=true", "resources.cpu"),
    "name_yes": ("name=yes", "name"),
    "capacity_rank_true": ("capacity.rank=true", "capacity.rank"),
    "eval_per_subtask_false": ("eval.per_subtask=false", "eval.per_subtask"),
    "per_subtask_true": ("data.per_subtask=true", "data.per_subtask"),
    "alpha_true": ("capacity.alpha=true", "capacity.alpha"),
    "capacity_entry_rank_true": ("grid.capacity=[{family: mole, rank: true}]", "grid.capacity[0].rank"),
    "match_params_true": ("capacity.match_params=[true]", "capacity.match_params[0]"),
    "source_limit_true": ("data.sources=[{path: x.json, domain: concept, subtask: s, limit: true}]",
                          "data.sources[0].limit"),
}


@pytest.mark.parametrize("case", sorted(LOOSE))
def test_a_boolean_is_not_a_number(capsys, case):
    override, field = LOOSE[case]
    code, text = run_cli(capsys, "plan", str(SMOKE), "--set", override)
    assert_clean_refusal(code, text, "smoke.yaml", field + ":", "is a boolean", "write the number")


NOT_FINITE = {
    "lr_nan": ("train.lr=.nan", "train.lr"),
    "lr_inf": ("train.lr=.inf", "train.lr"),
    "cpu_inf": ("resources.cpu=.inf", "resources.cpu"),
    "dropout_nan": ("capacity.dropout=.nan", "capacity.dropout"),
    "alpha_nan": ("capacity.alpha=.nan", "capacity.alpha"),
    "weight_decay_inf": ("train.weight_decay=.inf", "train.weight_decay"),
    "gpu_nan": ("resources.gpu=.nan", "resources.gpu"),
}


@pytest.mark.parametrize("case", sorted(NOT_FINITE))
def test_nan_and_inf_are_not_numbers(capsys, case):
    override, field = NOT_FINITE[case]
    code, text = run_cli(capsys, "plan", str(SMOKE), "--set", override)
    assert_clean_refusal(code, text, "smoke.yaml", field, "finite number")


# ---------------------------------------------------------------------------------------------
# Absurd sizes: past a documented limit (spec.limits), refused with the override that allows them

ABSURD = {
    "rank": ("grid.lora_rank=[100000000]", "grid.lora_rank[0]", "max_rank"),
    "capacity_rank": ("capacity.rank=100000", "capacity.rank", "max_rank"),
    "capacity_entry_rank": ("grid.capacity=[{family: lora, rank: 99999}]", "grid.capacity[0].rank", "max_rank"),
    "experts": ("capacity.experts=100000", "capacity.experts", "max_experts"),
    "per_subtask": ("data.per_subtask=1000000000", "data.per_subtask", "max_rows"),
    "volume": ("grid.volume=[10, 1000000000]", "grid.volume[1]", "max_rows"),
    "eval_rows": ("eval.per_subtask=100000000", "eval.per_subtask", "max_rows"),
    "steps": ("train.steps=1000000000000", "train.steps", "max_steps"),
    "seq_len": ("train.max_seq_len=10000000", "train.max_seq_len", "max_seq_len"),
    "micro_batch": ("train.micro_batch=1000000", "train.micro_batch", "max_batch"),
    "grad_accum": ("train.grad_accum=1000000", "train.grad_accum", "max_batch"),
    "eval_batch": ("eval.batch_size=1000000", "eval.batch_size", "max_batch"),
    "int_past_anything": ("train.steps=" + "9" * 400, "train.steps", "max_steps"),
}


@pytest.mark.parametrize("case", sorted(ABSURD))
def test_absurd_sizes_are_refused_with_the_override(capsys, case):
    override, field, limit = ABSURD[case]
    code, text = run_cli(capsys, "plan", str(SMOKE), "--set", override)
    assert_clean_refusal(code, text, field, f"limits.{limit}", f"--set limits.{limit}=")


@pytest.mark.parametrize("field", ["grid.seed=[4294967296]", "data.world_seed=99999999999",
                                   "data.mixture_seed=-1", "search.sampler_seed=18446744073709551616"])
def test_seeds_past_32_bits_are_refused(capsys, field):
    code, text = run_cli(capsys, "plan", str(SMOKE), "--set", field)
    assert_clean_refusal(code, text, field.split("=")[0], "32-bit seed")


def test_a_million_trial_grid_is_refused_before_it_is_expanded(capsys):
    grid = "grid.seed=[" + ",".join(str(s) for s in range(1000)) + "]"
    ranks = "grid.lora_rank=[" + ",".join(str(r) for r in range(1, 501)) + "]"
    code, text = run_cli(capsys, "plan", str(SMOKE), "--set", grid, "--set", ranks)
    assert_clean_refusal(code, text, "1000000 trials", "limits.max_trials", "--set limits.max_trials=1000000")


def test_a_limit_raised_on_purpose_lets_the_size_through(capsys):
    code, text = run_cli(capsys, "plan", str(SMOKE), "--set", "grid.lora_rank=[5000]",
                         "--set", "limits.max_rank=8192")
    assert code == 0, text


def test_a_big_plan_is_summarised(capsys):
    seeds = "grid.seed=[" + ",".join(str(s) for s in range(100)) + "]"
    code, text = run_cli(capsys, "plan", str(SMOKE), "--set", seeds)
    assert code == 0, text
    assert "more trial(s) not listed" in text and text.count("\n") < 80


# ---------------------------------------------------------------------------------------------
# Base models that cannot exist fail `plan`

def _model_dir_without_config(tmp_path: Path) -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    return str(folder)


BASE_MODELS = {
    "unknown_builtin": (lambda tmp: "builtin:nope", "unknown builtin model"),
    "empty_builtin": (lambda tmp: '"builtin:"', "unknown builtin model"),
    "builtin_case": (lambda tmp: "builtin:TINY", "did you mean"),
    "missing_absolute_dir": (lambda tmp: str(tmp / "no-such-model"), "does not exist"),
    "missing_relative_dir": (lambda tmp: "./models/missing", "does not exist"),
    "missing_home_dir": (lambda tmp: "~/no-such-model-dir-16", "does not exist"),
    "missing_nested_path": (lambda tmp: "models/qwen/0.5b", "does not exist"),
    "a_file_not_a_dir": (lambda tmp: str(SMOKE), "not a model directory"),
    "a_dir_without_config": (_model_dir_without_config, "no config.json"),
}


@pytest.mark.parametrize("case", sorted(BASE_MODELS))
def test_base_models_that_cannot_exist_fail_plan(capsys, tmp_path, case):
    make, needle = BASE_MODELS[case]
    code, text = run_cli(capsys, "plan", str(SMOKE), "--set", f"base_model={make(tmp_path)}")
    assert_clean_refusal(code, text, "base_model", needle)


def test_a_hub_id_still_plans(capsys):
    code, text = run_cli(capsys, "plan", str(SMOKE), "--set", "base_model=Qwen/Qwen2.5-0.5B")
    assert code == 0, text


# ---------------------------------------------------------------------------------------------
# A name is a plain folder name

BAD_NAMES = ["..", ".", "...", "a/b", "../escape", "/abs", "", "with space", "x" * 101, "caf\u00e9",
             "back\\slash", "tab\tname"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:20])
def test_names_that_are_not_plain_folder_names(capsys, tmp_path, name):
    raw = smoke_raw()
    raw["name"] = name
    path = write_sweep(tmp_path, raw)
    assert_clean_refusal(*run_cli(capsys, "plan", str(path)), str(path), "name:", "plain folder name",
                         "e.g. name: smoke")


def test_a_name_that_is_a_number(capsys, tmp_path):
    raw = smoke_raw()
    raw["name"] = 5
    path = write_sweep(tmp_path, raw)
    assert_clean_refusal(*run_cli(capsys, "plan", str(path)), str(path), "name:", "string")


# ---------------------------------------------------------------------------------------------
# `harness score`: benchmark and response files

MC_ROW = {"input_field": "Pick one.\n0. a\n1. b\n2. c\nAnswer: ", "output_field": 1,
          "task_type": "multiple-choice", "metric": "accuracy"}
RANK_ROW = {"input_field": "Rank these.", "output_field": [1.0, 0.5, 0.0], "task_type": "ranking",
            "metric": "ndcg"}

BAD_BENCH = {
    "nan_weight": ('[' + json.dumps(RANK_ROW).replace("0.5", "NaN") + ']', "row 1", "finite"),
    "inf_weight": ('[' + json.dumps(RANK_ROW).replace("0.5", "Infinity") + ']', "row 1", "finite"),
    "minus_inf_weight": ('[' + json.dumps(RANK_ROW).replace("0.5", "-Infinity") + ']', "row 1", "finite"),
    "huge_digit_answer_string": (json.dumps([{**MC_ROW, "output_field": "7" * 5000}]), "row 1", "int option index"),
    "huge_digit_answer_int": ('[' + json.dumps(MC_ROW).replace('"output_field": 1', '"output_field": ' + "7" * 5000) + ']',
                              "bench.json", "json"),
    "superscript_answer": (json.dumps([{**MC_ROW, "output_field": "\u00b2"}]), "row 1", "int option index"),
    "negative_answer": (json.dumps([{**MC_ROW, "output_field": -1}]), "row 1", "negative"),
    "bool_answer": (json.dumps([{**MC_ROW, "output_field": True}]), "row 1", "int option index"),
    "deep_row_array": ("[" * 100_000 + "]" * 100_000, "bench.json", "nested too deeply"),
    "deep_row_lines": (json.dumps(MC_ROW) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n", "line 2", "nested too deeply"),
    "not_utf8": (None, "bench.json", "not utf-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_BENCH))
def test_bad_benchmark_files(capsys, tmp_path, case):
    text, where, needle = BAD_BENCH[case]
    bench = tmp_path / "bench.json"
    if text is None:
        bench.write_bytes(json.dumps([MC_ROW]).encode().replace(b"Pick", b"Pi\xffck"))
    else:
        bench.write_text(text)
    responses = tmp_path / "responses.jsonl"
    responses.write_text(json.dumps({"response": "1"}) + "\n")
    assert_clean_refusal(*run_cli(capsys, "score", str(bench), str(responses)), where, needle)


BAD_RESPONSES = {
    "deep_nested_response": ('{"response": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    "huge_int_response": ('{"response": ' + "9" * 5000 + "}", "line 1"),
    "number_response": ('{"response": 3}', "must be a string"),
    "no_response_key": ('{"answer": "1"}', "response"),
}


@pytest.mark.parametrize("case", sorted(BAD_RESPONSES))
def test_bad_response_files(capsys, tmp_path, case):
    line, needle = BAD_RESPONSES[case]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([MC_ROW]))
    responses = tmp_path / "responses.jsonl"
    responses.write_text(line + "\n")
    assert_clean_refusal(*run_cli(capsys, "score", str(bench), str(responses)), "responses.jsonl:line 1",
                         needle, "each line must be")


def test_responses_that_are_huge_or_deep_text_score_without_crashing(capsys, tmp_path):
    ner = {"input_field": "Entities?", "output_field": ["a"], "task_type": "named_entity_recognition",
           "metric": "micro f1"}
    rows = [{**row, "task_name": row["task_type"]} for row in (MC_ROW, RANK_ROW, ner)]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(rows))
    responses = tmp_path / "responses.jsonl"
    texts = ["9" * 100_000, ",".join(["1" * 5000] * 3), "[" * 100_000 + "]" * 100_000]
    responses.write_text("".join(json.dumps({"response": t}) + "\n" for t in texts))
    code, text = run_cli(capsys, "score", str(bench), str(responses), "--json")
    assert code == 0, text
    tasks = json.loads(text[text.index("{"):])["tasks"]
    assert {name: task["score"] for name, task in tasks.items()} == {
        "multiple-choice": 0.0, "ranking": 0.0, "named_entity_recognition": 0.0}


def test_multiple_choice_answers_outside_the_options_are_reported(capsys, caplog, tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([MC_ROW, {**MC_ROW, "output_field": 7}]))
    responses = tmp_path / "responses.jsonl"
    responses.write_text((json.dumps({"response": "1"}) + "\n") * 2)
    code, text = run_cli(capsys, "score", str(bench), str(responses))
    assert code == 0, text
    assert "row 2: answer 7 is not one of the 3 options 0..2" in caplog.text
    assert "can never be answered correctly" in caplog.text


# ---------------------------------------------------------------------------------------------
# Data sources (read by `harness data show`)

ECI_MC = {"instruction": "Which one?", "input": "", "options": ["A: yes", "B: no"], "output": "A"}
SOURCE_CASES = {
    "one_option_mc": ("eci.jsonl", "ecinstruct",
                      [ECI_MC, {**ECI_MC, "options": ["A: only"]}], "line 2", "need at least 2 options"),
    "nan_ranking_weights": ("rank.jsonl", "shopbench",
                            [RANK_ROW, {**RANK_ROW, "output_field": [1.0, float("nan")]}], "line 2", "finite"),
    "inf_ranking_weights": ("rank.jsonl", "shopbench",
                            [{**RANK_ROW, "output_field": [float("inf"), 1.0]}], "line 1", "finite"),
    "answer_past_options": ("eci.jsonl", "ecinstruct", [{**ECI_MC, "output": 5}], "line 1",
                            "not a 0-based index"),
    "empty_option": ("eci.jsonl", "ecinstruct", [{**ECI_MC, "options": ["A: yes", ""] + ["C: no"]}],
                     "line 1", "an option is empty"),
}


@pytest.mark.parametrize("case", sorted(SOURCE_CASES))
def test_bad_data_source_rows(capsys, tmp_path, case):
    file_name, kind, records, where, needle = SOURCE_CASES[case]
    source = tmp_path / file_name
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    raw = {"name": "src", "base_model": "builtin:tiny",
           "data": {"sources": [{"kind": kind, "path": str(source), "domain": "behavior", "subtask": "mine"}],
                    "embedding_diversity_sample": 0},
           "eval": {"sets": [], "baseline": False}, "grid": {"subtasks": {"each": ["mine"]}},
           "output_dir": str(tmp_path / "results")}
    path = write_sweep(tmp_path, raw)
    assert_clean_refusal(*run_cli(capsys, "data", "show", str(path)), f"{source}:{where}", needle)


# ---------------------------------------------------------------------------------------------
# The real exit code and stderr, as a shell sees them

@pytest.mark.parametrize("args", [["plan", "{bin}"], ["plan", str(SMOKE), "--set", "grid.seed=[0"],
                                  ["plan", str(SMOKE), "--set", "name=.."]])
def test_as_a_subprocess_exit_2_and_no_traceback(tmp_path, args):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    argv = [a.replace("{bin}", str(binary)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")


def test_plan_copies_nothing_anywhere(tmp_path, capsys):
    """plan is a dry run: it writes no file, in the results folder or elsewhere."""
    shutil.copy(SMOKE, tmp_path / "smoke.yaml")
    before = sorted(p for p in tmp_path.rglob("*"))
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code, text = run_cli(capsys, "plan", "smoke.yaml")
    finally:
        os.chdir(cwd)
    assert code == 0, text
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("config", [b"\xff\xfe not utf-8", b"{truncated", b"[1, 2]", b"[" * 100_000])
def test_a_model_directory_with_an_unreadable_config(capsys, tmp_path, config):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_bytes(config)
    code, text = run_cli(capsys, "plan", str(SMOKE), "--set", f"base_model={folder}")
    assert_clean_refusal(code, text, "base_model", "config.json", "save the model again")


@pytest.mark.parametrize("which", ["bench", "responses"])
def test_score_given_a_directory(capsys, tmp_path, which):
    files = {"bench": tmp_path / "bench.json", "responses": tmp_path / "responses.jsonl"}
    files["bench"].write_text(json.dumps([MC_ROW]))
    files["responses"].write_text('{"response": "1"}\n')
    files[which].unlink()
    files[which].mkdir()
    code, text = run_cli(capsys, "score", str(files["bench"]), str(files["responses"]))
    assert_clean_refusal(code, text, str(files[which]), "is a directory", "give the")


GENERATION_SPEC = {"subtask": "gen_mc", "task_type": "multiple-choice", "domain": "concept",
                   "seed_path": "seeds.json", "n_rows": 4, "backend": "openai", "model": "m",
                   "base_url": "http://127.0.0.1:9/v1", "out_path": "gen.jsonl"}


@pytest.mark.parametrize("field, value", [("n_rows", True), ("temperature", float("nan")),
                                          ("concurrency", True), ("request_timeout_s", float("inf"))])
def test_generation_specs_refuse_booleans_and_non_finite_numbers(capsys, tmp_path, field, value):
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump({**GENERATION_SPEC, field: value}))
    code, text = run_cli(capsys, "data", "generate", str(path))
    assert_clean_refusal(code, text, str(path), field, "boolean" if value is True else "finite number")


@pytest.mark.parametrize("field, value", [("output_dir", "res\x00ults"), ("output_dir", ""), ("output_dir", "a\nb"),
                                          ("base_model", "builtin:tiny\x00"), ("base_model", " ")])
def test_paths_with_control_characters_or_empty(capsys, tmp_path, field, value):
    raw = smoke_raw()
    raw[field] = value
    path = write_sweep(tmp_path, raw)
    assert_clean_refusal(*run_cli(capsys, "plan", str(path)), str(path), f"{field}:", "printable characters")
