"""The capacity-family registry: one definition per family, the only place that knows their names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.capacity.adapters import PeftAdapted
from harness.capacity.registry import FAMILIES, Family, FamilyRegistry, get_family
from harness.errors import InputError
from harness.spec.expand import expand_trials
from harness.spec.load import validate_sweep

PACKAGE = Path(__file__).resolve().parents[2] / "harness"
DEFINITIONS = PACKAGE / "capacity" / "families.py"


def _half_lora(dims, rank, experts, n_groups):
    return sum(rank * (i + o) for i, o in dims)


def test_shipped_families_are_registered_and_frozen():
    assert FAMILIES.names() == ["lora", "dora", "multi_lora", "mole"]
    assert get_family("mole").knobs == ("experts", "top_k", "router_aux_weight")
    with pytest.raises(RuntimeError, match="frozen"):
        FAMILIES.register(Family(name="vera", summary="", layer_params=_half_lora, adapted=PeftAdapted))


def test_unknown_family_names_get_a_did_you_mean():
    with pytest.raises(InputError, match=r"unknown capacity family 'dorra' \(did you mean 'dora'\?\)"):
        get_family("dorra")


def test_a_fresh_registry_refuses_duplicates():
    registry = FamilyRegistry()
    registry.register(Family(name="x", summary="", layer_params=_half_lora, adapted=PeftAdapted))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Family(name="x", summary="", layer_params=_half_lora, adapted=PeftAdapted))
    assert registry.names() == ["x"] and "x" in registry and "lora" not in registry


def test_one_definition_is_all_a_new_family_needs(monkeypatch):
    """A throwaway family registered for this test only: the sweep validates, expands, labels and
    counts it through the registry alone, and its own knob check reaches the user with the field path."""
    def no_big_ranks(v, where, grid):
        return [f"{where('rank')}: plain_plus takes ranks up to 8"] if (v["rank"] or 0) > 8 else []

    plain_plus = Family(name="plain_plus", summary="LoRA under another name", layer_params=_half_lora,
                        adapted=PeftAdapted, knob_problems=no_big_ranks, label_suffix=lambda spec: "-pp")
    monkeypatch.setitem(FAMILIES._families, "plain_plus", plain_plus)
    raw = {"name": "t", "grid": {"domains": {"sets": [["concept"]]}, "lora_rank": [4],
                                 "capacity": [{"family": "lora"}, {"family": "plain_plus"}]}}
    trials = expand_trials(validate_sweep(raw))
    assert [t.capacity.label for t in trials] == ["lora-r4", "plain_plus-pp-r4"]
    assert trials[1].capacity.params == trials[0].capacity.params > 0
    assert trials[1].trial_id != trials[0].trial_id  # only plain lora keeps the legacy id layout
    raw["grid"]["capacity"][1]["rank"] = 16
    with pytest.raises(InputError, match=r"grid.capacity\[1\].rank: plain_plus takes ranks up to 8"):
        validate_sweep(raw)


def _family_name_tests(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines that compare with a family name or key a dict by one: dispatch on the name."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Dict):
            operands = [k for k in node.keys if k is not None]
        else:
            continue
        for value in operands:
            items = value.elts if isinstance(value, (ast.Tuple, ast.List, ast.Set)) else [value]
            if any(isinstance(i, ast.Constant) and i.value in names for i in items):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_no_family_dispatch_outside_the_definitions():
    names = set(FAMILIES.names())
    found = {str(path.relative_to(PACKAGE)): lines for path in sorted(PACKAGE.rglob("*.py"))
             if path != DEFINITIONS and (lines := _family_name_tests(ast.parse(path.read_text()), names))}
    assert not found, f"family names tested outside harness/capacity/families.py (file: lines): {found}"


def test_the_dispatch_check_sees_the_old_style():
    old = 'if spec.family == "mole": pass\nextra = {"multi_lora": 1}.get(f)\nok = f in ("dora", "x")\n'
    assert _family_name_tests(ast.parse(old), {"mole", "multi_lora", "dora"}) == [1, 2, 3]
