"""The analysis side must import without torch or ray (DESIGN.md section 2)."""

from light_imports import assert_imports_without_torch_or_ray

MODULES = ["harness.analysis", "harness.analysis.compare", "harness.analysis.family", "harness.analysis.load",
           "harness.analysis.outputs", "harness.analysis.pipeline", "harness.analysis.plots",
           "harness.analysis.report", "harness.analysis.stats", "harness.analysis.tables",
           "harness.analysis.wandb_log", "harness.analysis.calibration", "harness.analysis.noise",
           "harness.analysis.power"]


def test_analysis_imports_without_torch_or_ray():
    assert_imports_without_torch_or_ray(MODULES)
