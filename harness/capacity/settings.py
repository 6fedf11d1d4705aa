"""Sweep capacity block + grid.capacity -> one resolved AdapterSpec per trial, and their validation.

    capacity_settings(spec, domains, subtasks)   # -> [AdapterSpec, ...] for one data cell
    capacity_problems(spec)                      # -> ["grid.capacity[1].top_k: 3 exceeds ...", ...]

Each grid.capacity entry overrides the sweep-wide `capacity:` block. Without match_params every entry
is crossed with grid.lora_rank (unless it pins its own rank); with match_params every entry is
resolved once per budget, at the rank whose trainable-parameter count is nearest to the budget.
Pure and torch-free: expansion and `harness plan` run it before anything is loaded.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from harness.capacity.params import adapter_params, match_rank
from harness.config import (VARIANT_FIELDS, AdapterSpec, CapacitySpec, SweepSpec, _budget_rank,
                            data_sets, parse_alpha)
from harness.errors import did_you_mean
from harness.shapes import ModelShape, model_shape

SHARED = "shared"  # the multi_lora adapter every example trains and unknown evaluation rows use


class CapacityError(ValueError):
    """A capacity setting that cannot be built; the message starts with the field path."""


@lru_cache(maxsize=16)
def _shape(base_model: str) -> ModelShape | None:
    return model_shape(base_model)


def variants(spec: SweepSpec) -> list[dict[str, Any]]:
    """The grid's capacity settings with the sweep-wide defaults filled in."""
    base = spec.capacity.model_dump(include=set(VARIANT_FIELDS))
    return [{**base, **entry} for entry in (spec.grid.capacity or [{}])]


def capacity_settings(spec: SweepSpec, domains: list[str], subtasks: list[str]) -> list[AdapterSpec]:
    """Every capacity setting of the grid for one data cell, in declaration order (budgets outermost)."""
    shape = _shape(spec.base_model)
    out = []
    if spec.capacity.match_params:
        for budget in spec.capacity.match_params:
            for i, v in enumerate(variants(spec)):
                out.append(_matched(spec, i, v, budget, shape, domains, subtasks))
        return out
    for v in variants(spec):
        for rank in [v["rank"]] if v.get("rank") else spec.grid.ranks:
            out.append(resolve(spec, v, rank, shape, domains, subtasks))
    return out


def resolve(spec: SweepSpec, v: dict[str, Any], rank: int, shape: ModelShape | None,
            domains: list[str], subtasks: list[str], budget: str | None = None) -> AdapterSpec:
    alpha, rslora = parse_alpha(v["alpha"], rank)
    family = v["family"]
    groups, group_by = trial_groups(v["groups"], domains, subtasks) if family == "multi_lora" else (None, None)
    mole = family == "mole"
    params = None
    if shape is not None:
        params = adapter_params(shape, family, rank, v["target_modules"], experts=v["experts"],
                                n_groups=len(groups or {}))
    return AdapterSpec(
        family=family, rank=rank, alpha=alpha, rslora=rslora, target_modules=v["target_modules"],
        dropout=v["dropout"], experts=v["experts"] if mole else None, top_k=v["top_k"] if mole else None,
        router_aux_weight=v["router_aux_weight"] if mole else None, groups=groups, group_by=group_by,
        eval_map=(spec.capacity.eval_map or None) if groups else None, params=params, budget=budget,
        alpha_rule=v["alpha"],
    )


def budget_params(budget: int | str, shape: ModelShape, targets: Any) -> int:
    """A match_params budget in trainable parameters ('r32': plain LoRA at rank 32 on these targets)."""
    if isinstance(budget, int):
        return budget
    return adapter_params(shape, "lora", _budget_rank(budget), targets)


def _matched(spec: SweepSpec, i: int, v: dict[str, Any], budget: int | str, shape: ModelShape | None,
             domains: list[str], subtasks: list[str]) -> AdapterSpec:
    if shape is None:
        raise CapacityError(f"capacity.match_params: no shape known for base model {spec.base_model!r}, so "
                            "parameters cannot be counted; use a local model directory or a known family")
    target = budget_params(budget, shape, spec.capacity.target_modules)
    n_groups = len(trial_groups(v["groups"], domains, subtasks)[0]) if v["family"] == "multi_lora" else None
    found = match_rank(target, shape, v["family"], v["target_modules"], experts=v["experts"], n_groups=n_groups)
    if found is None:
        smallest = adapter_params(shape, v["family"], 1, v["target_modules"], experts=v["experts"], n_groups=n_groups)
        raise CapacityError(
            f"{_where(spec, i, 'family')}: {v['family']} cannot be matched to budget {budget} "
            f"({target:,} parameters): even rank 1 has {smallest:,} (too many experts or groups for the "
            "budget, or unknown target modules); use fewer experts or a larger budget")
    return resolve(spec, v, found[0], shape, domains, subtasks, budget=str(budget))


def _where(spec: SweepSpec, i: int, field: str) -> str:
    """The field path a researcher should edit: the grid entry if it sets the field, else the block."""
    entries = spec.grid.capacity or []
    return f"grid.capacity[{i}].{field}" if i < len(entries) and field in entries[i] else f"capacity.{field}"


# ---------------------------------------------------------------------------------------------
# multi_lora groups


def trial_groups(groups: str | dict[str, list[str]], domains: list[str],
                 subtasks: list[str]) -> tuple[dict[str, list[str]], str]:
    """(adapter name -> members present in this trial, "domain" | "subtask"). Groups with no member
    in the trial are dropped: an adapter that never sees an example would only be noise."""
    if groups == "domain":
        return {d: [d] for d in domains}, "domain"
    if groups == "subtask":
        return {s: [s] for s in subtasks}, "subtask"
    by = _group_kind(groups)
    present = set(domains if by == "domain" else subtasks)
    out = {g: [m for m in ms if m in present] for g, ms in groups.items()}
    return {g: ms for g, ms in out.items() if ms}, by


def _group_kind(groups: dict[str, list[str]]) -> str:
    """A declared mapping groups subtasks when every member is a known subtask, else domains."""
    members = {m for ms in groups.values() for m in ms}
    return "subtask" if members and members <= _known_subtasks() else "domain"


@lru_cache(maxsize=1)
def _known_subtasks() -> frozenset[str]:
    from harness.tasks import registry

    return frozenset(s.id for s in registry.all_subtasks())


def _group_problems(where: str, groups: dict[str, list[str]], spec: SweepSpec) -> list[str]:
    from harness.tasks import registry

    subtask_mode = _group_kind(groups) == "subtask"
    known = sorted(_known_subtasks()) if subtask_mode else [d.id for d in registry.all_domains()]
    problems = [f"{where}: unknown {'subtask' if subtask_mode else 'domain'} {m!r} in group {g!r}"
                f"{did_you_mean(m, known)}" for g, ms in groups.items() for m in ms if m not in known]
    problems += [f"{where}: group name {SHARED!r} is reserved for the shared adapter; rename it"
                 for g in groups if g == SHARED]
    seen: dict[str, str] = {}
    for g, ms in groups.items():
        for m in ms:
            if m in seen and seen[m] != g:
                problems.append(f"{where}: {m!r} is in groups {seen[m]!r} and {g!r}; give it one adapter")
            seen.setdefault(m, g)
    for j, (doms, subs) in enumerate(data_sets(spec)):
        for m in subs if subtask_mode else doms:
            if m not in seen:
                problems.append(f"{where}: {'subtask' if subtask_mode else 'domain'} {m!r} (data set {j} of "
                                f"the grid) has no adapter; add it to a group")
    return problems


# ---------------------------------------------------------------------------------------------
# Validation (called from config.semantic_problems)


def capacity_problems(spec: SweepSpec, resolve: bool = True) -> list[str]:
    """Every problem with the capacity block and grid.capacity; with `resolve`, also the ones found
    by resolving each data cell's settings (budgets that cannot be met, duplicate settings)."""
    problems: list[str] = []
    for i, entry in enumerate(spec.grid.capacity or []):
        problems += _entry_problems(i, entry)
    if problems:
        return problems
    for i, v in enumerate(variants(spec)):
        problems += _variant_problems(spec, i, v)
    problems += _match_problems(spec)
    if problems or not resolve:
        return problems
    try:
        for domains, subtasks in data_sets(spec):
            _duplicate_problems(capacity_settings(spec, domains, subtasks), problems)
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


def _variant_problems(spec: SweepSpec, i: int, v: dict[str, Any]) -> list[str]:
    problems = []
    if v["family"] == "mole" and v["top_k"] > v["experts"]:
        problems.append(f"{_where(spec, i, 'top_k')}: top_k {v['top_k']} exceeds experts {v['experts']}; "
                        "a token cannot use more experts than there are")
    if v["family"] == "multi_lora" and isinstance(v["groups"], dict):
        problems += _group_problems(_where(spec, i, "groups"), v["groups"], spec)
        names = set(v["groups"]) | {SHARED}
        problems += [f"capacity.eval_map.{key}: unknown group {g!r}{did_you_mean(g, sorted(names))}"
                     for key, g in spec.capacity.eval_map.items() if g not in names]
    return problems


def _match_problems(spec: SweepSpec) -> list[str]:
    if not spec.capacity.match_params:
        return []
    problems = []
    if spec.grid.lora_rank is not None:
        problems.append("grid.lora_rank: capacity.match_params chooses the ranks; remove grid.lora_rank")
    if spec.capacity.rank is not None:
        problems.append("capacity.rank: capacity.match_params chooses the ranks; remove capacity.rank")
    problems += [f"grid.capacity[{i}].rank: capacity.match_params chooses the ranks; remove this rank"
                 for i, entry in enumerate(spec.grid.capacity or []) if "rank" in entry]
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
