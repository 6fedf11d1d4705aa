"""Expansion: SweepSpec -> TrialSpecs, the full factorial (pure and deterministic: same spec -> same ids).

    trials = expand_trials(spec)        # data sets x volume x capacity setting x seed, seeds innermost
    baseline = baseline_trial(spec)     # the untrained base model, evaluated once per sweep

`data_sets` reads the grid's domain or subtask axis against the subtasks the sources provide
(`available_subtasks`); `count_trials` counts the grid without expanding it (limits.max_trials).
"""

from __future__ import annotations

import itertools
from typing import Any

from harness.capacity.schema import CapacityGrid
from harness.capacity.settings import capacity_settings, variants
from harness.spec.schema import SYNTHETIC_SOURCE, SweepSpec, TrialSpec


def available_subtasks(spec: SweepSpec) -> dict[str, str]:
    """subtask id -> domain, over every source the sweep declares."""
    from harness.tasks import registry
    from harness.tasks.recall import recall_subtasks

    out: dict[str, str] = {}
    for src in spec.data.sources:
        if src == SYNTHETIC_SOURCE and spec.data.world.variant == "recall":
            out.update(recall_subtasks())
        elif src == SYNTHETIC_SOURCE:
            out.update({s.id: s.domain for s in registry.all_subtasks()})
        else:
            out[src.subtask] = src.domain
    return out


def _axis_sets(axis: Any, universe: list[str]) -> list[list[str]]:
    if axis is None:
        return []
    if axis == "all":
        return [list(universe)]
    if isinstance(axis, list):
        return [list(s) for s in axis]
    if axis.incremental is not None:
        return [axis.incremental[: i + 1] for i in range(len(axis.incremental))]
    if axis.sets is not None:
        return [list(s) for s in axis.sets]
    if axis.each is not None:
        return [[x] for x in axis.each]
    return []


def count_trials(spec: SweepSpec) -> int:
    """Trials the grid expands to (without the baseline), computed without expanding it."""
    found = variants(capacity_grid(spec))
    settings = (len(spec.capacity.match_params) * len(found) if spec.capacity.match_params
                else sum(1 if v.get("rank") else len(spec.grid.ranks) for v in found))
    return len(data_sets(spec)) * len(spec.grid.volume or [1]) * settings * len(spec.grid.seed)


def data_sets(spec: SweepSpec) -> list[tuple[list[str], list[str]]]:
    """The grid's (domains, subtasks) pairs, in declaration order."""
    from harness.tasks import registry

    subtask_domain = available_subtasks(spec)
    if spec.grid.subtasks is not None:
        out = []
        for subs in _axis_sets(spec.grid.subtasks, list(subtask_domain)):
            doms = list(dict.fromkeys(subtask_domain[s] for s in subs))
            out.append((doms, list(subs)))
        return out
    domain_ids = [d.id for d in registry.all_domains()]
    return [(list(doms), [s for s, d in subtask_domain.items() if d in doms])
            for doms in _axis_sets(spec.grid.domains, domain_ids)]


def capacity_grid(spec: SweepSpec) -> CapacityGrid:
    """The parts of the sweep that capacity resolution reads (harness.capacity.settings)."""
    return CapacityGrid(base_model=spec.base_model, capacity=spec.capacity, entries=spec.grid.capacity or [],
                        ranks=spec.grid.ranks, lora_rank_declared=spec.grid.lora_rank is not None,
                        cells=lambda: data_sets(spec))


def expand_trials(spec: SweepSpec) -> list[TrialSpec]:
    """The full factorial: data sets x volume x capacity setting x seed, seeds innermost."""
    volumes = spec.grid.volume or [spec.data.per_subtask]
    grid = capacity_grid(spec)
    trials = []
    for domains, subtasks in data_sets(spec):
        settings = capacity_settings(grid, domains, subtasks)  # per data set: volume does not change them
        for volume, capacity, seed in itertools.product(volumes, settings, spec.grid.seed):
            # Built from parts validated already: model_construct skips re-validating each one (10^5 trials)
            trials.append(TrialSpec.model_construct(
                sweep=spec.name, base_model=spec.base_model, trust_remote_code=spec.trust_remote_code,
                data=spec.data, eval=spec.eval, train=spec.train, domains=domains, subtasks=subtasks,
                volume=volume, capacity=capacity, seed=seed, kind="trial",
            ))
    return trials


def baseline_trial(spec: SweepSpec) -> TrialSpec:
    """The untrained base model, evaluated once per sweep so the report can show the lift."""
    return TrialSpec(
        sweep=spec.name, base_model=spec.base_model, trust_remote_code=spec.trust_remote_code,
        data=spec.data, eval=spec.eval, train=spec.train, domains=[], subtasks=[], volume=0,
        capacity=None, seed=0, kind="baseline",
    )
