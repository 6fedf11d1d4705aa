"""Sweep capacity block + grid.capacity -> one resolved AdapterSpec per trial, and their validation.

    grid = harness.spec.expand.capacity_grid(spec)     # what of the sweep this module reads
    capacity_settings(grid, domains, subtasks)   # -> [AdapterSpec, ...] for one data cell
    capacity_problems(grid)                      # -> ["grid.capacity[1].top_k: 3 exceeds ...", ...]

Each grid.capacity entry overrides the sweep-wide `capacity:` block. Without match_params every entry
is crossed with grid.lora_rank (unless it pins its own rank); with match_params every entry is
resolved once per budget, at the rank whose trainable-parameter count is nearest to the budget.
Pure and torch-free: expansion and `harness plan` run it before anything is loaded. Family-specific
knobs are resolved and checked by each family's definition (harness.capacity.families).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from harness.capacity.families import LORA
from harness.capacity.params import adapter_params, match_rank
from harness.capacity.registry import get_family
from harness.capacity.schema import (VARIANT_FIELDS, AdapterSpec, CapacityGrid, CapacitySpec, budget_rank,
                                     parse_alpha)
from harness.errors import did_you_mean
from harness.shapes import ModelShape, model_shape


class CapacityError(ValueError):
    """A capacity setting that cannot be built; the message starts with the field path."""


@lru_cache(maxsize=16)
def _shape(base_model: str) -> ModelShape | None:
    return model_shape(base_model)


def variants(grid: CapacityGrid) -> list[dict[str, Any]]:
    """The grid's capacity settings with the sweep-wide defaults filled in."""
    base = grid.capacity.model_dump(include=set(VARIANT_FIELDS))
    return [{**base, **entry} for entry in (grid.entries or [{}])]


def capacity_settings(grid: CapacityGrid, domains: list[str], subtasks: list[str]) -> list[AdapterSpec]:
    """Every capacity setting of the grid for one data cell, in declaration order (budgets outermost)."""
    shape = _shape(grid.base_model)
    out = []
    if grid.capacity.match_params:
        for budget in grid.capacity.match_params:
            for i, v in enumerate(variants(grid)):
                out.append(_matched(grid, i, v, budget, shape, domains, subtasks))
        return out
    for v in variants(grid):
        for rank in [v["rank"]] if v.get("rank") else grid.ranks:
            out.append(resolve(grid, v, rank, shape, domains, subtasks))
    return out


def family_knobs(grid: CapacityGrid, v: dict[str, Any], domains: list[str], subtasks: list[str]) -> dict[str, Any]:
    """The AdapterSpec fields of the setting's family-specific knobs in this data cell."""
    return get_family(v["family"]).resolve_knobs(v, domains, subtasks, grid.capacity.eval_map)


def resolve(grid: CapacityGrid, v: dict[str, Any], rank: int, shape: ModelShape | None,
            domains: list[str], subtasks: list[str], budget: str | None = None) -> AdapterSpec:
    alpha, rslora = parse_alpha(v["alpha"], rank)
    knobs = family_knobs(grid, v, domains, subtasks)
    params = None
    if shape is not None:
        params = adapter_params(shape, v["family"], rank, v["target_modules"], experts=v["experts"],
                                n_groups=len(knobs.get("groups") or {}))
    return AdapterSpec(
        family=v["family"], rank=rank, alpha=alpha, rslora=rslora, target_modules=v["target_modules"],
        dropout=v["dropout"], params=params, budget=budget, alpha_rule=v["alpha"], **knobs,
    )


def budget_params(budget: int | str, shape: ModelShape, targets: Any) -> int:
    """A match_params budget in trainable parameters ('r32': plain LoRA at rank 32 on these targets)."""
    if isinstance(budget, int):
        return budget
    return adapter_params(shape, LORA.name, budget_rank(budget), targets)


def _matched(grid: CapacityGrid, i: int, v: dict[str, Any], budget: int | str, shape: ModelShape | None,
             domains: list[str], subtasks: list[str]) -> AdapterSpec:
    if shape is None:
        raise CapacityError(f"capacity.match_params: no shape known for base model {grid.base_model!r}, so "
                            "parameters cannot be counted; use a local model directory or a known family")
    target = budget_params(budget, shape, grid.capacity.target_modules)
    n_groups = len(family_knobs(grid, v, domains, subtasks).get("groups") or {})
    found = match_rank(target, shape, v["family"], v["target_modules"], experts=v["experts"], n_groups=n_groups)
    if found is None:
        smallest = adapter_params(shape, v["family"], 1, v["target_modules"], experts=v["experts"], n_groups=n_groups)
        raise CapacityError(
            f"{_where(grid, i, 'family')}: {v['family']} cannot be matched to budget {budget} "
            f"({target:,} parameters): even rank 1 has {smallest:,} (too many experts or groups for the "
            "budget, or unknown target modules); use fewer experts or a larger budget")
    return resolve(grid, v, found[0], shape, domains, subtasks, budget=str(budget))


def _where(grid: CapacityGrid, i: int, field: str) -> str:
    """The field path a researcher should edit: the grid entry if it sets the field, else the block."""
    entries = grid.entries
    return f"grid.capacity[{i}].{field}" if i < len(entries) and field in entries[i] else f"capacity.{field}"


# ---------------------------------------------------------------------------------------------
# Validation (called from config.semantic_problems)


def capacity_problems(grid: CapacityGrid, resolve: bool = True) -> list[str]:
    """Every problem with the capacity block and grid.capacity; with `resolve`, also the ones found
    by resolving each data cell's settings (budgets that cannot be met, duplicate settings)."""
    problems: list[str] = []
    for i, entry in enumerate(grid.entries):
        problems += _entry_problems(i, entry)
    if problems:
        return problems
    for i, v in enumerate(variants(grid)):
        problems += get_family(v["family"]).knob_problems(v, lambda field, i=i: _where(grid, i, field), grid)
    problems += _match_problems(grid)
    if problems or not resolve:
        return problems
    try:
        for domains, subtasks in grid.cells():
            _duplicate_problems(capacity_settings(grid, domains, subtasks), problems)
    except CapacityError as exc:
        problems.append(str(exc))
    return problems


def _entry_problems(i: int, entry: Any) -> list[str]:
    where = f"grid.capacity[{i}]"
    if not isinstance(entry, dict):
        return [f"{where}: each capacity setting is a mapping, e.g. {{family: mole, experts: 4, top_k: 2}}"]
    problems = [f"{where}.{key}: unknown key{did_you_mean(str(key), list(VARIANT_FIELDS))}; "
                f"a setting may set {', '.join(VARIANT_FIELDS)}" for key in entry if key not in VARIANT_FIELDS]
    if problems:
        return problems
    try:
        CapacitySpec.model_validate(entry)
    except ValidationError as exc:
        for err in exc.errors():
            field, msg = ".".join(str(p) for p in err["loc"][:1]), err["msg"].removeprefix("Value error, ")
            if err["type"] == "bool_not_number":  # raised by the block, naming its field in the message
                field, msg = msg.split(": ", 1)
            problems.append(f"{where}.{field}: {msg}")
    return sorted(set(problems), key=problems.index)


def _match_problems(grid: CapacityGrid) -> list[str]:
    if not grid.capacity.match_params:
        return []
    problems = []
    if grid.lora_rank_declared:
        problems.append("grid.lora_rank: capacity.match_params chooses the ranks; remove grid.lora_rank")
    if grid.capacity.rank is not None:
        problems.append("capacity.rank: capacity.match_params chooses the ranks; remove capacity.rank")
    problems += [f"grid.capacity[{i}].rank: capacity.match_params chooses the ranks; remove this rank"
                 for i, entry in enumerate(grid.entries) if "rank" in entry]
    return problems


def _duplicate_problems(settings: list[AdapterSpec], problems: list[str]) -> None:
    seen: set[str] = set()
    for s in settings:
        key = s.model_dump_json()
        if key in seen:
            message = (f"grid.capacity: two settings resolve to the same adapter ({s.label}"
                       f"{', budget ' + s.budget if s.budget else ''}); remove one")
            if message not in problems:
                problems.append(message)
        seen.add(key)
