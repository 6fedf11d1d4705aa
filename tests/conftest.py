"""Shared test settings: offline everything, a per-session cache for builtin models, tiny specs."""

from __future__ import annotations

import os
from pathlib import Path

# Before any harness/HF/W&B import: no network, no account, no Ray auth.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "ec_guide"


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ec_guide() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"EC-Guide data not found at {SHARED_DATA}")
    return SHARED_DATA / "EC-Guide"


@pytest.fixture(scope="module")
def ray_session():
    """A local 2-CPU Ray for one test module (Ray's start-up is the slow part of the sweep tests)."""
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
