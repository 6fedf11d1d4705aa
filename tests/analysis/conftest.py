"""Shared fixtures for the analysis tests: synthetic results directories with planted effects."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# The synth helper lives next to the tests; the package may not be installed (run from a checkout).
for path in (str(HERE), str(REPO)):
    if path not in sys.path:
        sys.path.insert(0, path)

from synth_results import make_results  # noqa: E402


@pytest.fixture(scope="session")
def planted_dir(tmp_path_factory) -> Path:
    """4 domain levels x 3 ranks x 3 seeds, interaction 0.03 planted, 2 failed, a baseline."""
    return make_results(tmp_path_factory.mktemp("planted"), interaction=0.03, failed=2, rng_seed=0)


@pytest.fixture(scope="session")
def null_dir(tmp_path_factory) -> Path:
    """The same design with no interaction planted."""
    return make_results(tmp_path_factory.mktemp("null"), interaction=0.0, rng_seed=1)
