"""Shipped sweep designs: the trial counts their comments promise, balanced designs, sane plans."""

from __future__ import annotations

import re

import pytest

from harness.config import expand_trials, load_sweep
from harness.planning import plan_summary
from harness.sweep import planned_trials

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
