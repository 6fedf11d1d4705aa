"""The spec side must import without torch or ray: `harness plan` and sweep expansion run before
anything heavy loads (as the analysis side, tests/analysis/test_imports.py)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import sys
import harness.spec
import harness.spec.estimate, harness.spec.expand, harness.spec.load, harness.spec.schema
import harness.spec.validate
heavy = sorted(m for m in ("torch", "ray") if m in sys.modules)
assert not heavy, f"the spec imported {heavy}"
"""


def test_spec_imports_without_torch_or_ray():
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
