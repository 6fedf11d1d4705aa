"""Sweep spec loading, validation (every bad-input case names its field), expansion and ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import InputError
from harness.spec.expand import baseline_trial, expand_trials
from harness.spec.load import load_sweep, parse_override, validate_sweep

GOOD = {
    "name": "t",
    "base_model": "builtin:tiny",
    "grid": {"domains": {"incremental": ["concept", "reasoning"]}, "lora_rank": [4, 16], "seed": [0, 1]},
    "train": {"steps": 5},
}


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _problems(raw: dict) -> str:
    with pytest.raises(InputError) as info:
        validate_sweep(raw, source="s.yaml")
    return str(info.value)


def test_every_shipped_sweep_validates(repo, ec_guide, monkeypatch):
    monkeypatch.chdir(repo)  # real-data sweeps name EC-Guide relative to the repository root
    sweeps = sorted((repo / "sweeps").rglob("*.yaml"))
    assert sweeps and any(p.parent.name == "real" for p in sweeps), "no shipped sweeps"
    for path in sweeps:
        spec = load_sweep(path)
        assert expand_trials(spec), path
        assert path.read_text().startswith("# harness "), f"{path} must open with the command that runs it"


def test_expansion_is_the_full_factorial_with_seeds_innermost():
    trials = expand_trials(validate_sweep(GOOD))
    assert len(trials) == 2 * 2 * 2
    assert [t.domains for t in trials[:4]] == [["concept"]] * 4
    assert trials[-1].domains == ["concept", "reasoning"]
    assert [t.seed for t in trials[:2]] == [0, 1]
    assert all(t.lora_alpha == 2 * t.lora_rank for t in trials)
    assert all(t.subtasks for t in trials)
    assert len(trials[-1].subtasks) > len(trials[0].subtasks)


def test_trial_ids_are_stable_and_seed_changes_trial_not_cell():
    a, b = expand_trials(validate_sweep(GOOD)), expand_trials(validate_sweep(GOOD))
    assert [t.trial_id for t in a] == [t.trial_id for t in b]
    assert len({t.trial_id for t in a}) == len(a)
    s0, s1 = a[0], a[1]
    assert s0.seed != s1.seed and s0.trial_id != s1.trial_id and s0.cell_id == s1.cell_id
    r4, r16 = a[0], a[2]
    assert r4.cell_id != r16.cell_id


def test_overrides_change_the_spec_and_the_ids(tmp_path):
    path = _write(tmp_path, GOOD)
    base = load_sweep(path)
    changed = load_sweep(path, ["train.steps=7", "grid.seed=[3]", "wandb.mode=disabled"])
    assert changed.train.steps == 7 and changed.grid.seed == [3] and changed.wandb.mode == "disabled"
    assert expand_trials(base)[0].trial_id != expand_trials(changed)[0].trial_id
    with pytest.raises(InputError, match="KEY.PATH=VALUE"):
        parse_override("train.steps")


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: r.update(trian={"steps": 1}), r"trian: unknown key \(did you mean 'train'\?\)"),
    (lambda r: r["train"].update(stpes=3), r"train.stpes: unknown key \(did you mean 'steps'\?\)"),
    (lambda r: r["train"].update(steps="many"), r"train.steps: Input should be a valid integer"),
    (lambda r: r["grid"].update(domains={"incremental": ["concept", "reasonning"]}),
     r"grid.domains\[1\]: unknown domain 'reasonning' \(did you mean 'reasoning'\?\)"),
    (lambda r: r["grid"].update(lora_rank=[]), r"grid.lora_rank: empty list"),
    (lambda r: r["grid"].update(lora_rank=[4, -8]), r"grid.lora_rank\[1\]: -8 must be >= 1"),
    (lambda r: r["grid"].update(domains={"sets": []}), r"grid.domains: empty"),
    (lambda r: r["grid"].update(subtasks={"each": ["no_such_subtask"]}, domains=None),
     r"grid.subtasks\[0\]: unknown subtask 'no_such_subtask'"),
    (lambda r: r.setdefault("capacity", {}).update(alpha="2x"), r"capacity.alpha: .*'<k>x_rank'"),
    (lambda r: r.setdefault("resources", {}).update(gpu=4, ranks=2), r"resources.ranks: 2 processes for 4 GPUs"),
    (lambda r: r["train"].update(micro_batch="auto"), r"train.batch_size: micro_batch auto needs"),
    (lambda r: r["train"].update(micro_batch=8, grad_accum=2, batch_size=32), r"train.batch_size: 32 is not"),
    (lambda r: r.setdefault("resources", {}).update(gpu=0.5, ranks=2), r"resources.ranks: 2 processes cannot share"),
    (lambda r: r.setdefault("resources", {}).update(gpu=1.5), r"resources.gpu: 1.5: use a fraction in \(0, 1\]"),
    (lambda r: r["train"].update(pack_length=1024), r"train.pack_length: rows are packed only with train.packing"),
    (lambda r: r["train"].update(packing=True, max_seq_len=512, pack_length=256),
     r"train.pack_length: 256 tokens cannot hold the longest sample \(train.max_seq_len 512\)"),
    (lambda r: r["train"].update(packing=True, pack_length=4096, attention="flash_attention_2"),
     r"train.pack_length: flash_attention_2 finds sample boundaries only in a single packed row"),
    (lambda r: r["train"].update(attention="flash"), r"train.attention: Input should be 'auto', 'sdpa'"),
    (lambda r: (r["train"].update(attention="flex_attention"), r.setdefault("resources", {}).update(gpu=0)),
     r"train.attention: flex_attention trains on CUDA GPUs only"),
])
def test_bad_specs_name_the_field(mutate, expected):
    raw = yaml.safe_load(yaml.safe_dump(GOOD))
    mutate(raw)
    msg = _problems(raw)
    assert __import__("re").search(expected, msg), msg
    assert "nothing was launched" in msg


def test_all_problems_are_reported_together():
    raw = yaml.safe_load(yaml.safe_dump(GOOD))
    raw["grid"]["lora_rank"] = [0]
    raw["grid"]["domains"] = {"each": ["conept"]}
    msg = _problems(raw)
    assert "2 problem(s)" in msg and "lora_rank[0]" in msg and "conept" in msg


def test_cli_exit_code_2_and_nothing_launched(tmp_path, repo):
    import subprocess
    import sys

    raw = yaml.safe_load(yaml.safe_dump(GOOD))
    raw["grid"]["lora_rank"] = [-1]
    raw["output_dir"] = str(tmp_path / "out")
    path = _write(tmp_path, raw)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(path)],
                          capture_output=True, text=True, cwd=repo)
    assert proc.returncode == 2, proc.stderr
    assert "grid.lora_rank[0]" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_baseline_trial_has_no_training_factors():
    base = baseline_trial(validate_sweep(GOOD))
    assert base.kind == "baseline" and base.lora_rank == 0 and base.domains == []
    assert base.trial_id not in {t.trial_id for t in expand_trials(validate_sweep(GOOD))}
