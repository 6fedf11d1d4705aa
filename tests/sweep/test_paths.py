"""Paths in a sweep are relative to the directory the command runs in, and made absolute once.

Ray runs trials in other working directories (a trial's own folder, another machine), so a relative
path that the driver understood used to fail in every trial. The slow test runs a real Ray sweep from
a temporary working directory with relative paths to real EC-Guide files and to an evaluation file
laid out like the organisers' development set (18 tasks, one mixing bleu and jp-bleu)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.spec.load import absolute_paths, load_sweep, local_paths, validate_sweep
from harness.sweep.cluster import _node_probe

DEV_LIKE = Path(__file__).resolve().parents[1] / "fixtures" / "organisers_layout" / "eighteen_tasks.json"


def test_every_local_path_becomes_absolute_against_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(  # what makes a directory a model directory
        {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 256}))
    (tmp_path / "dev.json").write_text("[]")
    monkeypatch.chdir(tmp_path)
    raw = {"name": "p", "base_model": "./model", "output_dir": "out",
           "data": {"sources": ["builtin:synthetic",
                                {"kind": "hf", "path": "AiMijie/EC-Guide", "domain": "behavior", "subtask": "h"}]},
           "eval": {"sets": ["builtin:synthetic-heldout", {"path": "dev.json"}]},
           "grid": {"domains": {"sets": [["concept"]]}}}
    spec = validate_sweep(raw)
    assert spec.base_model == str(tmp_path / "model") and spec.output_dir == str(tmp_path / "out")
    assert spec.eval.sets[0] == "builtin:synthetic-heldout" and spec.eval.sets[1].path == str(tmp_path / "dev.json")
    assert spec.data.sources[1].path == "AiMijie/EC-Guide"  # a hub id stays a hub id
    assert absolute_paths(spec) == spec  # idempotent: a resolved sweep.yaml reads back unchanged
    assert local_paths(spec) == {"eval.sets[1].path": str(tmp_path / "dev.json"), "base_model": str(tmp_path / "model")}


def test_a_relative_source_path_resolves_against_the_command_directory(tmp_path, monkeypatch, ec_guide):
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(ec_guide / "MCQ" / "SPA.json", tmp_path)
    spec = validate_sweep({"name": "p", "grid": {"domains": {"sets": [["concept"]]}},
                           "data": {"sources": [{"path": relative, "domain": "concept", "subtask": "ec_spa"}]}})
    assert spec.data.sources[0].path == str(ec_guide / "MCQ" / "SPA.json")


def test_the_cluster_probe_names_every_path_a_node_does_not_see(tmp_path):
    present = tmp_path / "dev.json"
    present.write_text("[]")
    probe = _node_probe()
    seen = probe(None, 0.0, {"eval.sets[0].path": str(present), "data.sources[1].path": "/nowhere/spa.json"},
                 ["accuracy", "jp-bleu"])
    assert seen["error"] is None and seen["missing"] == {"data.sources[1].path": "/nowhere/spa.json"}
    assert seen["metric_problems"] == []  # mecab-python3 + ipadic come with the default install


@pytest.mark.slow
def test_a_ray_sweep_with_relative_paths_succeeds_in_every_trial(tmp_path, ec_guide):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(DEV_LIKE, work / "dev.json")
    rel = {name: os.path.relpath(ec_guide / name, work) for name in ("MCQ/SPA.json", "MCQ/QPRP.json")}
    assert all(p.startswith("..") for p in rel.values())
    sweep = {
        "name": "relative", "base_model": "builtin:tiny", "output_dir": "results",
        "data": {"sources": [{"path": rel["MCQ/SPA.json"], "domain": "concept", "subtask": "ec_spa"},
                             {"path": rel["MCQ/QPRP.json"], "domain": "behavior", "subtask": "ec_qprp"}],
                 "per_subtask": 8, "embedding_diversity_sample": 0},
        "eval": {"sets": ["builtin:sources-heldout", {"path": "dev.json"}], "heldout_per_source": 2,
                 "batch_size": 32},
        "grid": {"domains": {"sets": [["concept", "behavior"]]}, "seed": [0]},
        "train": {"steps": 2, "micro_batch": 4, "max_seq_len": 96, "log_every": 1},
        "resources": {"cpu": 1, "gpu": 0}, "wandb": {"mode": "disabled"},
    }
    (work / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", "sweep.yaml", "--num-cpus", "2"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = work / "results" / "relative"
    resolved = yaml.safe_load((results / "sweep.yaml").read_text())
    assert resolved["data"]["sources"][0]["path"] == str(ec_guide / "MCQ" / "SPA.json")
    assert resolved["eval"]["sets"][1]["path"] == str(work / "dev.json")
    records = [json.loads(p.read_text()) for p in [*results.glob("trials/*.json"), *results.glob("baseline/*.json")]]
    assert len(records) == 2 and all(r["train"]["status"] == "success" for r in records), \
        [r["train"].get("reason") for r in records]
    for record in records:
        dev = record["eval"]["dev"]
        assert len(dev["tasks"]) == 18 and dev["tasks"]["task17"]["metric"] == "bleu/jp-bleu"
        assert {t["n"] for n, t in record["eval"]["sources-heldout"]["tasks"].items()} == {2}
