"""Fuzzing the shipped sweeps (issue 16): mutate them as a careless user would (drop keys, wrong types,
out-of-range and huge numbers, unicode, text damage) and run `harness plan`'s work in this process:
load, validate, expand, estimate. Every outcome is a plan or an InputError; anything else is a bug,
and no example may take long (a hang would be a grid expanded before its size was checked).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import InputError
from harness.spec.estimate import plan_summary
from harness.spec.load import apply_overrides, load_yaml_text, validate_sweep
from harness.sweep.driver import planned_trials

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {p.name: yaml.safe_load(p.read_text()) for p in sorted((REPO / "sweeps").glob("*.yaml"))}
SLOWEST_EXAMPLE_S = 10.0  # a shipped sweep plans in well under a second; a hang blows far past this

HUGE_INTS = st.sampled_from([2**31, 2**63, 10**12, 10**100, 10**400, -(10**30)])
SCALARS = st.one_of(
    st.booleans(), st.none(), st.integers(-5, 70), HUGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=24),
    st.sampled_from(["all", "auto", "builtin:tiny", "builtin:nope", "..", ".", "2x_rank", "rslora:16", "lora",
                     "mole", "dora", "multi_lora", "concept", "reasoning", "r32", "optuna", "asha", "日本語",
                     "\u202e", "a/b", "~", "yes", "1e400"]),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=4),
    st.lists(st.lists(st.sampled_from(["concept", "reasoning", "behavior", "multilingual", "x"]), max_size=3),
             max_size=3),
    st.dictionaries(st.sampled_from(["family", "rank", "experts", "top_k", "alpha", "incremental", "sets", "each",
                                     "method", "num_samples", "steps", "path", "bogus"]), SCALARS, max_size=3),
)


def key_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in a nested mapping/list, parents before children."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        out.append(prefix + (key,))
        out += key_paths(child, prefix + (key,))
    return out


def parent_of(root: Any, path: tuple) -> Any:
    for key in path[:-1]:
        root = root[key]
    return root


@st.composite
def mutated_sweeps(draw) -> tuple[str, dict]:
    name = draw(st.sampled_from(sorted(SHIPPED)))
    raw = copy.deepcopy(SHIPPED[name])
    for _ in range(draw(st.integers(1, 4))):
        paths = key_paths(raw)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = parent_of(raw, path), path[-1]
        op = draw(st.sampled_from(["drop", "replace", "replace", "scale", "wrap"]))
        if op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(VALUES)
        elif op == "scale" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = parent[key] * draw(st.sampled_from([-1, 0, 1000, 10**9, 10**30, 0.5, 1e300]))
        elif op == "wrap":
            parent[key] = [parent[key]]
    return name, raw


def plan_in_process(raw: Any, source: str) -> None:
    """What `harness plan` does after reading the file; an InputError is a clean refusal."""
    started = time.monotonic()
    try:
        if not isinstance(raw, dict):
            raise InputError(f"{source}: a sweep file must be a YAML mapping")
        spec = validate_sweep(raw, source=source)
        trials = planned_trials(spec)
        plan_summary(spec, trials)
    except InputError as exc:
        assert str(exc).startswith(source) or "--set" in str(exc) or source in str(exc), str(exc)
    assert time.monotonic() - started < SLOWEST_EXAMPLE_S


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@FUZZ
@given(mutated_sweeps())
def test_mutated_shipped_sweeps_plan_or_fail_cleanly(case):
    name, raw = case
    plan_in_process(raw, name)


@FUZZ
@given(st.sampled_from(sorted(SHIPPED)), st.integers(0, 10**6), st.integers(0, 6),
       st.text(min_size=0, max_size=6))
def test_damaged_sweep_text_loads_plans_or_fails_cleanly(name, where, cut, insert):
    """Text-level damage: a few characters cut and arbitrary (unicode, control) text put in their place."""
    text = (REPO / "sweeps" / name).read_text()
    at = where % (len(text) + 1)
    damaged = text[:at] + insert + text[at + cut:]
    try:
        raw = load_yaml_text(damaged)
    except yaml.YAMLError:  # YamlProblem: load_sweep turns it into an InputError naming the file
        return
    plan_in_process(raw, name)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(SHIPPED)),
       st.lists(st.tuples(st.sampled_from(["grid.lora_rank", "grid.seed", "grid.volume", "train.steps",
                                           "train.lr", "name", "base_model", "capacity.rank", "limits.max_trials",
                                           "resources.gpu", "data.per_subtask", "grid.domains", "search"]),
                          st.text(max_size=12)), min_size=1, max_size=3))
def test_set_overrides_with_arbitrary_text_plan_or_fail_cleanly(name, overrides):
    raw = copy.deepcopy(SHIPPED[name])
    try:
        raw = apply_overrides(raw, [f"{key}={value}" for key, value in overrides])
    except InputError as exc:
        assert "--set" in str(exc)
        return
    plan_in_process(raw, name)
