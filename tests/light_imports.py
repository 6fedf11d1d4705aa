"""Shared by the torch-free import tests: import modules in a fresh interpreter, fail if torch or ray
came along (a test process has imported both long before, so it cannot tell)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
heavy = sorted(m for m in ("torch", "ray") if m in sys.modules)
assert not heavy, f"importing {sys.argv[1:]} imported {heavy}"
"""


def assert_imports_without_torch_or_ray(modules: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", CHECK, *modules], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
