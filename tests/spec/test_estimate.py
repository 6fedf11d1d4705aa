"""Shipped sweep designs: the trial counts their comments promise, balanced designs, sane plans."""

from __future__ import annotations

import re

import pytest
import yaml

from harness.spec.estimate import plan_summary
from harness.spec.expand import expand_trials
from harness.spec.load import load_sweep
from harness.sweep.driver import planned_trials

DESIGNS = ["smoke", "capability_ablation", "task_ablation", "rank_scaling", "homogeneous_volume",
           "full_factorial", "capacity_families"]


@pytest.mark.parametrize("name", DESIGNS)
def test_design_ships_with_its_command_and_promised_size(repo, name):
    path = repo / "sweeps" / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith(f"# harness sweep sweeps/{name}.yaml"), "first line: the command that runs it"
    spec = load_sweep(path)
    assert spec.name == name
    trials = expand_trials(spec)
    promised = re.search(r"= (\d+) trials", text)
    if promised:  # smoke words it differently; test_config validates it
        assert len(trials) == int(promised.group(1)), f"{name}: the header comment promises another count"
    summary = plan_summary(spec, planned_trials(spec))
    assert summary["balanced"], summary["warnings"]
    assert summary["trial_seconds"] > 0 and summary["device"] == "cpu"


def test_capability_ablation_adds_domains_in_the_declared_order(repo):
    trials = expand_trials(load_sweep(repo / "sweeps" / "capability_ablation.yaml"))
    orders = list(dict.fromkeys(tuple(t.domains) for t in trials))
    assert orders == [("behavior",), ("behavior", "concept"), ("behavior", "concept", "reasoning"),
                      ("behavior", "concept", "reasoning", "multilingual")]


def test_task_ablation_adds_subtasks_within_one_domain(repo):
    trials = expand_trials(load_sweep(repo / "sweeps" / "task_ablation.yaml"))
    sizes = sorted({len(t.subtasks) for t in trials})
    assert sizes == [1, 2, 3, 4, 5, 6] and {tuple(t.domains) for t in trials} == {("concept",)}


def test_rank_scaling_varies_rank_at_fixed_data(repo):
    trials = expand_trials(load_sweep(repo / "sweeps" / "rank_scaling.yaml"))
    assert sorted({t.lora_rank for t in trials}) == [2, 4, 8, 16, 32, 64]
    assert len({(tuple(t.subtasks), t.volume) for t in trials}) == 1 and len(trials[0].domains) == 4


def test_homogeneous_volume_varies_volume_at_a_fixed_subtask_set(repo):
    spec = load_sweep(repo / "sweeps" / "homogeneous_volume.yaml")
    trials = expand_trials(spec)
    assert spec.data.mode == "homogeneous"
    assert sorted({t.volume for t in trials}) == [100, 300, 900]
    assert len({tuple(t.subtasks) for t in trials}) == 1


def test_full_factorial_crosses_diversity_rank_and_seed(repo):
    trials = expand_trials(load_sweep(repo / "sweeps" / "full_factorial.yaml"))
    assert len({(len(t.domains), t.lora_rank, t.seed) for t in trials}) == len(trials) == 4 * 3 * 3


# ---------------------------------------------------------------------------------------------
# The study's designs on real data (sweeps/real/, sweeps/real_small.yaml)

REAL = ["real/capability_ablation", "real/task_ablation", "real/rank_x_domains", "real_small"]
DEV_LIKE = "tests/fixtures/organisers_layout/eighteen_tasks.json"
EC_GUIDE_FILES = {"SPA", "SAP", "PE", "ERK", "NER", "RRS", "QPRP", "RRA", "MT", "MDM"}


@pytest.mark.parametrize("name", REAL)
def test_real_data_sweep_plans_with_the_named_dev_set(repo, ec_guide, monkeypatch, name):
    from harness.sweep.preflight import check_evaluation

    monkeypatch.chdir(repo)
    path = repo / "sweeps" / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith(f"# harness sweep sweeps/{name}.yaml"), "first line: the command that runs it"
    dev = f"eval.sets=[builtin:sources-heldout, {{path: {DEV_LIKE}, name: dev}}]"
    spec = load_sweep(path, [dev])
    assert all(src.path.startswith(str(ec_guide)) for src in spec.data.sources)  # made absolute
    eval_sets = check_evaluation(spec)
    assert len({r["task_name"] for r in eval_sets["dev"]}) == 18
    assert {r["subtask"] for r in eval_sets["sources-heldout"]} == {s.subtask for s in spec.data.sources}
    trials = planned_trials(spec)
    assert len(trials) - 1 == int(re.search(r"= (\d+) trials", text).group(1))
    summary = plan_summary(spec, trials, eval_rows=sum(map(len, eval_sets.values())))
    assert summary["balanced"] and summary["base_params"] > 1e8
    if name.startswith("real/"):
        assert spec.base_model == "Qwen/Qwen2.5-0.5B-Instruct" and spec.resources.gpu == 0.25
        assert "Qwen/Qwen2.5-1.5B-Instruct" in text and "Qwen/Qwen2.5-7B-Instruct" in text
        assert summary["device"] == "gpu" and set(summary["wall_hours"]) == {"1", "8"}
        assert 0 < summary["wall_hours"]["8"] < summary["wall_hours"]["1"] <= summary["serial_hours"]
        assert summary["gpu_memory_gib_per_trial"] < 141 * 0.25, summary["warnings"]


def test_the_mapping_table_covers_every_ec_guide_file_once_and_matches_the_sweeps(repo):
    readme = (repo / "sweeps" / "real" / "README.md").read_text()
    table = re.findall(r"^\| `(ec_\w+)` \| `\w+/(\w+)\.json`.*?\| (concept|reasoning|behavior|multilingual) \|",
                       readme, flags=re.M)
    assert {f for _, f, _ in table} == EC_GUIDE_FILES and len(table) == len(EC_GUIDE_FILES)
    mapping = {sub: domain for sub, _, domain in table}
    for name in REAL[:3]:
        sources = yaml.safe_load((repo / "sweeps" / f"{name}.yaml").read_text())["data"]["sources"]
        assert {s["subtask"]: s["domain"] for s in sources} == mapping, name


def test_wall_hours_pack_fractional_trials_onto_gpus():
    from harness.spec.estimate import wall_hours

    assert wall_hours([3600.0] * 8, gpus=1, gpu_per_trial=0.25) == pytest.approx(2.0)  # 4 slots, 2 waves
    assert wall_hours([3600.0] * 8, gpus=8, gpu_per_trial=0.25) == pytest.approx(1.0)
    assert wall_hours([7200.0, 3600.0, 3600.0], gpus=2, gpu_per_trial=1) == pytest.approx(2.0)
