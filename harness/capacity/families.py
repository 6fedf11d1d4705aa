"""The capacity families, one registered definition each: the only place that knows their names.

    lora        r (i + o) per adapted layer           A: r x i, B: o x r
    dora        r (i + o) + o                          plus the magnitude vector
    multi_lora  (G + 1) r (i + o)                      G group adapters and the shared one
    mole        E r (i + o) + E i                      E experts and the router (E x i, no bias)

A definition names the family's knobs (the capacity fields only it reads), counts its trainable
parameters by hand from the model shape (no torch: `harness plan` and match_params use it; tests check
it against what peft and harness.capacity.mole build), resolves and validates its knobs for one trial,
gives the label suffix, and points at the class that attaches, loads and merges it
(harness.capacity.adapters). Adding a family is adding one `register_family(Family(...))` here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from harness.capacity.adapters import DoraAdapted, MoleAdapted, MultiLoraAdapted, PeftAdapted
from harness.capacity.registry import Family, LayerDims, register_family
from harness.capacity.schema import SHARED, CapacityGrid
from harness.errors import did_you_mean
from harness.tasks import registry as task_registry


def _lora_params(dims: LayerDims, rank: int, experts: int | None, n_groups: int | None) -> int:
    return sum(rank * (i + o) for i, o in dims)


LORA = register_family(Family(  # also what a match_params budget 'r32' counts (plain LoRA at rank 32)
    name="lora", summary="one LoRA adapter (rsLoRA scaling with alpha 'rslora:<alpha>')",
    layer_params=_lora_params, adapted=PeftAdapted, legacy_ids=True,
))


register_family(Family(
    name="dora", summary="weight-decomposed LoRA: a LoRA direction plus a trained magnitude vector",
    layer_params=lambda dims, rank, experts, n_groups: _lora_params(dims, rank, None, None) + sum(o for _, o in dims),
    adapted=DoraAdapted,
))


# ---------------------------------------------------------------------------------------------
# multi_lora: one LoRA adapter per group of domains or subtasks, plus a shared one


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
    return frozenset(s.id for s in task_registry.all_subtasks())


def _multi_lora_knobs(v: dict[str, Any], domains: list[str], subtasks: list[str], eval_map: dict[str, str]) -> dict:
    groups, group_by = trial_groups(v["groups"], domains, subtasks)
    return {"groups": groups, "group_by": group_by, "eval_map": (eval_map or None) if groups else None}


def _multi_lora_problems(v: dict[str, Any], where: Callable[[str], str], grid: CapacityGrid) -> list[str]:
    if not isinstance(v["groups"], dict):
        return []
    problems = _group_problems(where("groups"), v["groups"], grid)
    names = set(v["groups"]) | {SHARED}
    return problems + [f"capacity.eval_map.{key}: unknown group {g!r}{did_you_mean(g, sorted(names))}"
                       for key, g in grid.capacity.eval_map.items() if g not in names]


def _group_problems(where: str, groups: dict[str, list[str]], grid: CapacityGrid) -> list[str]:
    subtask_mode = _group_kind(groups) == "subtask"
    kind = "subtask" if subtask_mode else "domain"
    known = sorted(_known_subtasks()) if subtask_mode else [d.id for d in task_registry.all_domains()]
    problems = [f"{where}: unknown {kind} {m!r} in group {g!r}{did_you_mean(m, known)}"
                for g, ms in groups.items() for m in ms if m not in known]
    problems += [f"{where}: group name {SHARED!r} is reserved for the shared adapter; rename it"
                 for g in groups if g == SHARED]
    seen: dict[str, str] = {}
    for g, ms in groups.items():
        for m in ms:
            if m in seen and seen[m] != g:
                problems.append(f"{where}: {m!r} is in groups {seen[m]!r} and {g!r}; give it one adapter")
            seen.setdefault(m, g)
    for j, (doms, subs) in enumerate(grid.cells()):
        for m in subs if subtask_mode else doms:
            if m not in seen:
                problems.append(f"{where}: {kind} {m!r} (data set {j} of the grid) has no adapter; add it to a group")
    return problems


register_family(Family(
    name="multi_lora",
    summary="one LoRA adapter per capability domain or subtask group, trained with a shared adapter",
    layer_params=lambda dims, rank, experts, n_groups: ((n_groups or 1) + 1) * _lora_params(dims, rank, None, None),
    adapted=MultiLoraAdapted, knobs=("groups", "eval_map"),
    resolve_knobs=_multi_lora_knobs, knob_problems=_multi_lora_problems,
    label_suffix=lambda spec: f"-g{len(spec.groups or {})}",
))


# ---------------------------------------------------------------------------------------------
# mole: a mixture of LoRA experts with a token-level router (harness.capacity.mole)


def _mole_knobs(v: dict[str, Any], domains: list[str], subtasks: list[str], eval_map: dict[str, str]) -> dict:
    return {"experts": v["experts"], "top_k": v["top_k"], "router_aux_weight": v["router_aux_weight"]}


def _mole_problems(v: dict[str, Any], where: Callable[[str], str], grid: CapacityGrid) -> list[str]:
    if v["top_k"] <= v["experts"]:
        return []
    return [f"{where('top_k')}: top_k {v['top_k']} exceeds experts {v['experts']}; "
            "a token cannot use more experts than there are"]


register_family(Family(
    name="mole", summary="a mixture of LoRA experts with a token-level router",
    layer_params=lambda dims, rank, experts, n_groups:
        (experts or 1) * (_lora_params(dims, rank, None, None) + sum(i for i, _ in dims)),
    adapted=MoleAdapted, knobs=("experts", "top_k", "router_aux_weight"),
    resolve_knobs=_mole_knobs, knob_problems=_mole_problems,
    label_suffix=lambda spec: f"-e{spec.experts}k{spec.top_k}",
))
