"""What each trial asks Ray for, against fake cluster resource dicts and node lists (no Ray)."""

from __future__ import annotations

import pytest

from harness.errors import InputError
from harness.spec.load import validate_sweep
from harness.sweep.resources import alive_nodes, describe_nodes, trial_resources


def _spec(cpu=1, gpu="auto"):
    return validate_sweep({"name": "r", "grid": {"domains": {"each": ["concept"]}},
                           "resources": {"cpu": cpu, "gpu": gpu}})


def _node(cpu, gpu=0):
    return {"CPU": float(cpu), **({"GPU": float(gpu)} if gpu else {}), "memory": 8e9}


def _cluster(nodes):
    total: dict[str, float] = {}
    for n in nodes:
        for k, v in n.items():
            total[k] = total.get(k, 0) + v
    return total


def _ask(spec, nodes):
    return trial_resources(spec, _cluster(nodes), nodes)


def test_auto_is_cpu_only_on_a_cluster_without_gpus():
    assert _ask(_spec(), [_node(2)]) == {"cpu": 1.0, "gpu": 0.0}


def test_auto_takes_a_whole_gpu_when_a_node_has_one():
    assert _ask(_spec(), [_node(8), _node(8, gpu=4)]) == {"cpu": 1.0, "gpu": 1.0}


@pytest.mark.parametrize("gpu", [0.25, 0.5, 1])
def test_fractional_and_whole_gpus_pass_through(gpu):
    assert _ask(_spec(gpu=gpu), [_node(8, gpu=1)]) == {"cpu": 1.0, "gpu": float(gpu)}


def test_zero_gpu_runs_on_cpus_even_beside_gpus():
    assert _ask(_spec(gpu=0), [_node(4, gpu=2)])["gpu"] == 0.0


def test_gpu_request_on_a_cpu_cluster_is_refused_with_the_fix():
    with pytest.raises(InputError, match=r"resources.gpu: 0.25 GPU .* no GPU; set resources.gpu: 0"):
        _ask(_spec(gpu=0.25), [_node(16), _node(16)])


def test_multi_gpu_trials_take_whole_gpus_on_one_node():
    assert _ask(_spec(gpu=2), [_node(16, gpu=8)]) == {"cpu": 1.0, "gpu": 2.0}
    with pytest.raises(InputError, match=r"no node can hold one trial \(1 CPU \+ 4 GPU\)"):
        _ask(_spec(gpu=4), [_node(16, gpu=2), _node(16, gpu=2)])  # 4 GPUs in all, 2 per node


def test_ranks_follow_whole_gpus_and_can_be_set_for_cpus():
    from harness.spec.schema import ResourceSpec

    assert ResourceSpec(gpu=4).ranks_per_trial() == 4
    assert ResourceSpec(gpu=0.25).ranks_per_trial() == 1
    assert ResourceSpec(gpu=0, ranks=2).ranks_per_trial() == 2


def test_per_node_check_not_the_cluster_sum():
    # 4 CPUs in all, but no single node has 4: such a trial could never be scheduled.
    nodes = [_node(2), _node(2)]
    with pytest.raises(InputError, match=r"no node can hold one trial \(4 CPU\); the nodes have 2 x \(2 CPU\)"):
        _ask(_spec(cpu=4), nodes)
    assert _ask(_spec(cpu=2), nodes) == {"cpu": 2.0, "gpu": 0.0}


def test_cpu_and_gpu_must_fit_on_the_same_node():
    nodes = [_node(8), _node(1, gpu=1)]  # CPUs on one node, the GPU on another
    with pytest.raises(InputError, match=r"\(2 CPU \+ 1 GPU\).*1 x \(8 CPU\); 1 x \(1 CPU, 1 GPU\)"):
        _ask(_spec(cpu=2, gpu=1), nodes)
    assert _ask(_spec(cpu=1, gpu=1), nodes) == {"cpu": 1.0, "gpu": 1.0}


def test_fraction_fits_a_node_with_a_whole_gpu_only():
    assert _ask(_spec(gpu=0.5), [_node(4, gpu=1)])["gpu"] == 0.5


def test_without_a_node_list_the_cluster_is_one_node():
    assert trial_resources(_spec(cpu=2), {"CPU": 2.0}) == {"cpu": 2.0, "gpu": 0.0}


def test_alive_nodes_reads_ray_nodes_and_skips_dead_ones():
    listing = [{"NodeID": "a", "Alive": True, "Resources": {"CPU": 2.0, "GPU": 1.0}},
               {"NodeID": "b", "Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    nodes = alive_nodes(listing)
    assert nodes == [{"CPU": 2.0, "GPU": 1.0}]
    with pytest.raises(InputError, match="no node can hold"):
        trial_resources(_spec(cpu=4), {"CPU": 66.0, "GPU": 9.0}, nodes)


def test_describe_nodes_groups_equal_nodes():
    assert describe_nodes([_node(4, 1), _node(4, 1), _node(8)]) == "2 x (4 CPU, 1 GPU); 1 x (8 CPU)"
    assert describe_nodes([]) == "no live nodes"
