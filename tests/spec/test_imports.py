"""The spec side must import without torch or ray: `harness plan` and sweep expansion run before
anything heavy loads (as the analysis side, tests/analysis/test_imports.py)."""

from light_imports import assert_imports_without_torch_or_ray

MODULES = ["harness.spec", "harness.spec.estimate", "harness.spec.expand", "harness.spec.load",
           "harness.spec.schema", "harness.spec.validate"]


def test_spec_imports_without_torch_or_ray():
    assert_imports_without_torch_or_ray(MODULES)
