"""What each trial asks Ray for: pure functions of the cluster's resource dicts, tested without Ray.

    resources = trial_resources(spec, ray.cluster_resources(), alive_nodes(ray.nodes()))

A request that no single node can hold (per node, not the cluster's sum) is refused before
anything starts, with the nodes described (Ray would otherwise wait forever).
"""

from __future__ import annotations

from typing import Any

from harness.errors import InputError
from harness.spec.schema import SweepSpec


def alive_nodes(nodes: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The resource totals of the live nodes in a `ray.nodes()` listing."""
    return [dict(n.get("Resources", {})) for n in nodes if n.get("Alive", True)]


def trial_resources(spec: SweepSpec, cluster: dict[str, float],
                    nodes: list[dict[str, float]] | None = None) -> dict[str, float]:
    """What each trial asks Ray for: {"cpu": c, "gpu": g}. Raises InputError for a request that no
    single node can hold (Ray would wait forever): per node, not the cluster sum."""
    nodes = nodes if nodes is not None else [cluster]
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    gpu = spec.resources.gpu
    if gpu == "auto":
        gpu = 1.0 if most_gpus >= 1 else 0.0
    gpu, cpu = float(gpu), float(spec.resources.cpu)
    if gpu > 1 and not gpu.is_integer():
        raise InputError(f"resources.gpu: {gpu:g}: a trial on several GPUs takes whole GPUs (2, 4, 8), "
                         "one data-parallel process each; fractions below 1 pack trials on one GPU")
    if gpu and not cluster.get("GPU", 0):
        raise InputError(f"resources.gpu: {gpu:g} GPU per trial requested but the Ray cluster has no GPU; "
                         "set resources.gpu: 0 (or auto) to run on CPUs")
    if not any(n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu for n in nodes):
        raise InputError(f"resources: no node can hold one trial ({cpu:g} CPU{_and_gpu(gpu)}); the nodes "
                         f"have {describe_nodes(nodes)}; lower resources.cpu or resources.gpu")
    return {"cpu": cpu, "gpu": gpu}


def _and_gpu(gpu: float) -> str:
    return f" + {gpu:g} GPU" if gpu else ""


def describe_nodes(nodes: list[dict[str, float]]) -> str:
    """'2 x (4 CPU, 1 GPU); 1 x (8 CPU)' for an error message."""
    counts: dict[str, int] = {}
    for n in nodes:
        text = f"{n.get('CPU', 0):g} CPU" + (f", {n['GPU']:g} GPU" if n.get("GPU") else "")
        counts[text] = counts.get(text, 0) + 1
    return "; ".join(f"{k} x ({text})" for text, k in counts.items()) or "no live nodes"
