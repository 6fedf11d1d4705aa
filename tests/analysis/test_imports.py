"""The analysis side must import without torch or ray (DESIGN.md section 2)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import sys
import harness.analysis
import harness.analysis.compare, harness.analysis.family, harness.analysis.load
import harness.analysis.outputs
import harness.analysis.pipeline, harness.analysis.plots, harness.analysis.report
import harness.analysis.stats, harness.analysis.tables, harness.analysis.wandb_log
import harness.analysis.calibration, harness.analysis.noise, harness.analysis.power
heavy = sorted(m for m in ("torch", "ray") if m in sys.modules)
assert not heavy, f"analysis imported {heavy}"
"""


def test_analysis_imports_without_torch_or_ray():
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
