"""A sweep on an existing multi-node cluster (`--address`): a simulated Ray cluster of a head and a
second node (1 CPU each), results on a shared path; records must come back from both nodes."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from harness.results import load_records
from harness.spec.load import validate_sweep
from harness.sweep.driver import planned_trials, run_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    os.environ["RAY_AUTH_MODE"] = "disabled"
    assert not ray.is_initialized()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_sweep_on_an_existing_two_node_cluster(tmp_path, cluster):
    import ray
    from harness.tasks import synthetic

    shared = tmp_path / "shared storage"  # any path every node sees (a space, to be sure it is quoted)
    (tmp_path / "mc.json").write_text(json.dumps(synthetic.generate_rows("unit_price", "heldout", 2)))
    spec = validate_sweep({
        "name": "cluster", "output_dir": str(shared), "data": {"per_subtask": 8},
        "eval": {"sets": [{"path": str(tmp_path / "mc.json"), "name": "mc"}], "baseline": False},
        "grid": {"domains": {"each": ["concept"]}, "lora_rank": [2, 4], "seed": [0]},
        "train": {"steps": 2, "micro_batch": 4, "max_seq_len": 128, "log_every": 1, "warmup_steps": 0},
        "resources": {"cpu": 1, "gpu": "auto"}, "wandb": {"mode": "disabled"}})
    outcome = run_sweep(spec, address=cluster.address)
    records, problems = load_records(outcome.results_dir)
    assert not problems and outcome.failed == []
    assert sorted(r.run.trial_id for r in records) == sorted(t.trial_id for t in planned_trials(spec))
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    used = {r.meta["ray_node_id"] for r in records}
    assert len(nodes) == 2 and used == nodes, "each 1-CPU node ran one of the two trials"
    assert (shared / "cluster" / "ray").is_dir()  # Tune's storage_path sits beside the records
    table = pd.read_parquet(outcome.results_dir / "scores.parquet")
    assert len(table) == 2 and set(table["task"]) == {"unit_price"}
