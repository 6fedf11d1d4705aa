"""Semantic checks of a sweep, past what its types check: names, grid shape, resources, limits.

    problems = semantic_problems(spec)      # [] or one line per problem, each naming its field

Unknown domains and subtasks (with a did-you-mean), missing files, a compute budget given twice,
resources no trial can use, a base model that cannot exist, sizes past `limits` (likely typos), a
grid past limits.max_trials (counted, never expanded) and capacity settings that do not resolve.
load_sweep (harness.spec.load) raises them all in one InputError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.capacity.settings import capacity_problems
from harness.errors import did_you_mean
from harness.spec.expand import _axis_sets, available_subtasks, capacity_grid, count_trials
from harness.spec.schema import (BUILTIN_EVAL_NAMES, SEED_MAX, SOURCES_HELDOUT, SYNTHETIC_SOURCE, DataSpec,
                                 DomainAxis, SweepSpec, TrainSpec, eval_set_names)


def _axis_problems(name: str, axis: Any, known: list[str], kind: str) -> list[str]:
    problems = []
    if isinstance(axis, DomainAxis):
        set_fields = [f for f in ("incremental", "sets", "each") if getattr(axis, f) is not None]
        if len(set_fields) != 1:
            return [f"grid.{name}: give exactly one of incremental, sets, each (got {set_fields or 'none'})"]
    sets = _axis_sets(axis, known)
    if axis is not None and not sets:
        problems.append(f"grid.{name}: empty: list at least one {kind} set")
    for i, members in enumerate(sets):
        if not members:
            problems.append(f"grid.{name}[{i}]: empty {kind} set")
        for m in members:
            if m not in known:
                problems.append(f"grid.{name}[{i}]: unknown {kind} {m!r}{did_you_mean(m, known)}; "
                                f"known: {', '.join(sorted(known))}")
        if len(set(members)) != len(members):
            problems.append(f"grid.{name}[{i}]: repeated {kind} in {members}")
    return problems


def semantic_problems(spec: SweepSpec) -> list[str]:
    from harness.tasks import registry

    problems: list[str] = []
    domains = [d.id for d in registry.all_domains()]
    subtasks = available_subtasks(spec)
    grid = spec.grid
    if grid.domains is not None and grid.subtasks is not None:
        problems.append("grid: give domains or subtasks, not both (subtask sets imply their domains)")
    if grid.domains is None and grid.subtasks is None:
        problems.append("grid.domains: missing: declare the domain sets to sweep, e.g. "
                        "{incremental: [concept, reasoning]}")
    problems += _axis_problems("domains", grid.domains, domains, "domain")
    problems += _axis_problems("subtasks", grid.subtasks, list(subtasks), "subtask")
    if grid.domains is not None:
        for i, members in enumerate(_axis_sets(grid.domains, domains)):
            missing = [d for d in members if d in domains and d not in subtasks.values()]
            if missing:
                problems.append(f"grid.domains[{i}]: no data source provides domain(s) {missing}; "
                                "add builtin:synthetic or a source mapped to them under data.sources")
    for field in ("lora_rank", "seed", "volume"):
        values = getattr(grid, field)
        if values is None:
            continue
        if not values:
            problems.append(f"grid.{field}: empty list: give at least one value")
        minimum = 0 if field == "seed" else 1
        for i, v in enumerate(values):
            if v < minimum:
                problems.append(f"grid.{field}[{i}]: {v} must be >= {minimum}")
        if len(set(values)) != len(values):
            problems.append(f"grid.{field}: repeated values {values}")
    if spec.data.mode == "fixed_total" and not grid.volume:
        problems.append("grid.volume: data.mode fixed_total needs grid.volume (total training rows)")
    for i, ref in enumerate(spec.eval.sets):
        if ref not in BUILTIN_EVAL_NAMES and not Path(ref.path).exists():
            problems.append(f"eval.sets[{i}].path: file not found: {ref.path}")
    problems += _heldout_problems(spec)
    for i, src in enumerate(spec.data.sources):
        if src != SYNTHETIC_SOURCE and src.kind != "hf" and not Path(src.path).exists():
            problems.append(f"data.sources[{i}].path: file not found: {src.path}")
    problems += (_resource_problems(spec) + _train_schedule_problems(spec.train) + _search_problems(spec)
                 + _world_problems(spec.data))
    problems += _base_model_problems(spec.base_model) + _limit_problems(spec)
    problems += capacity_problems(capacity_grid(spec), resolve=False)
    if problems:
        return problems
    # Count before resolving (a 10^9-trial grid is refused, not expanded); capacity settings are
    # resolved per data cell and rank, which needs the rest to be valid first.
    return _trial_count_problems(spec) or capacity_problems(capacity_grid(spec), resolve=True)


def _base_model_problems(base_model: str) -> list[str]:
    """A base model that cannot exist is refused at plan time, not after Ray has started."""
    from harness.model import BUILTIN_IDS  # imports no torch at module level

    if base_model.startswith("builtin:"):
        if base_model in BUILTIN_IDS:
            return []
        return [f"base_model: unknown builtin model {base_model!r}{did_you_mean(base_model, BUILTIN_IDS)}; "
                f"known: {', '.join(BUILTIN_IDS)}"]
    path = Path(base_model).expanduser()
    looks_local = (path.is_absolute() or base_model.startswith((".", "~")) or "\\" in base_model
                   or base_model.count("/") != 1)
    if path.exists():
        config = path / "config.json"
        if not config.is_file():
            return [f"base_model: {base_model} is not a model directory (no config.json in it); give the "
                    "directory that save_pretrained wrote, a hub id (org/name) or builtin:tiny"]
        try:
            if not isinstance(json.loads(config.read_bytes()), dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError, RecursionError) as exc:
            return [f"base_model: {config} is not a readable model config ({str(exc)[:80]}); "
                    "save the model again with save_pretrained"]
        return []
    if looks_local:
        return [f"base_model: local model directory {base_model} does not exist; fix the path (relative "
                "paths are read from the directory you run in), or give a hub id (org/name) or builtin:tiny"]
    return []


def _limit_problems(spec: SweepSpec) -> list[str]:
    """Sizes past spec.limits (likely typos) and seeds past what the random generators take."""
    lim, tr = spec.limits, spec.train
    checks = [("grid.lora_rank", spec.grid.lora_rank or [], lim.max_rank, "max_rank"),
              ("capacity.rank", [spec.capacity.rank or 1], lim.max_rank, "max_rank"),
              ("capacity.experts", [spec.capacity.experts], lim.max_experts, "max_experts"),
              ("data.per_subtask", [spec.data.per_subtask], lim.max_rows, "max_rows"),
              ("grid.volume", spec.grid.volume or [], lim.max_rows, "max_rows"),
              ("eval.per_subtask", [spec.eval.per_subtask], lim.max_rows, "max_rows"),
              ("train.steps", [tr.steps or 1], lim.max_steps, "max_steps"),
              ("train.max_seq_len", [tr.max_seq_len], lim.max_seq_len, "max_seq_len"),
              ("train.pack_length", [tr.pack_length or 16], lim.max_seq_len, "max_seq_len"),
              ("train.micro_batch", [tr.micro_batch if isinstance(tr.micro_batch, int) else 1], lim.max_batch,
               "max_batch"),
              ("train.batch_size", [tr.batch_size or 1], lim.max_batch, "max_batch"),
              ("train.grad_accum", [tr.grad_accum], lim.max_batch, "max_batch"),
              ("eval.batch_size", [spec.eval.batch_size], lim.max_batch, "max_batch")]
    for i, entry in enumerate(spec.grid.capacity or []):
        for key, name in (("rank", "max_rank"), ("experts", "max_experts")):
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, int):
                checks.append((f"grid.capacity[{i}].{key}", [value], getattr(lim, name), name))
    problems = []
    for field, values, limit, name in checks:
        for i, v in enumerate(values):
            if v > limit:
                where = f"{field}[{i}]" if len(values) > 1 or field in ("grid.lora_rank", "grid.volume") else field
                problems.append(f"{where}: {v} is past limits.{name} ({limit}), likely a typo; use a smaller "
                                f"value, or raise the limit on purpose with --set limits.{name}={v}")
    seeds = [("grid.seed", spec.grid.seed), ("data.world_seed", [spec.data.world_seed]),
             ("data.mixture_seed", [spec.data.mixture_seed]), ("search.sampler_seed", [spec.search.sampler_seed])]
    for field, values in seeds:
        problems += [f"{field}: {v} must be between 0 and {SEED_MAX} (a 32-bit seed)"
                     for v in values if not 0 <= v <= SEED_MAX and (field != "grid.seed" or v >= 0)]
    return problems


def _trial_count_problems(spec: SweepSpec) -> list[str]:
    n = count_trials(spec)
    if n <= spec.limits.max_trials:
        return []
    return [f"grid: {n} trials is past limits.max_trials ({spec.limits.max_trials}); shrink the grid, or "
            f"raise the limit on purpose with --set limits.max_trials={n}"]


def _world_problems(data: DataSpec) -> list[str]:
    """The recall world asks the facts training teaches, in the same words (closed-book recall)."""
    from harness.tasks.recall import max_keys

    if data.world.variant != "recall":
        return []
    problems = []
    if data.contamination_check:
        problems.append("data.contamination_check: the recall world (data.world.variant recall) evaluates "
                        "the facts it trains, so every training row matches an evaluation row; set "
                        "data.contamination_check: false")
    if data.world.keys > max_keys(data.world_seed):
        problems.append(f"data.world.keys: {data.world.keys} products asked for; the world "
                        f"(seed {data.world_seed}) has {max_keys(data.world_seed)}; use at most that")
    return problems


def _heldout_problems(spec: SweepSpec) -> list[str]:
    """Rows split off the sources must stay out of training: that is the contamination check's job."""
    if SOURCES_HELDOUT not in spec.eval.sets:
        return []
    i = spec.eval.sets.index(SOURCES_HELDOUT)
    if all(s == SYNTHETIC_SOURCE for s in spec.data.sources):
        return [f"eval.sets[{i}]: {SOURCES_HELDOUT} splits rows off the real data sources, and "
                "data.sources has none; add a source, or use builtin:synthetic-heldout"]
    if not spec.data.contamination_check:
        return [f"eval.sets[{i}]: {SOURCES_HELDOUT} needs data.contamination_check: true, which keeps "
                "the held-out rows' inputs out of every training mixture"]
    return []


def _resource_problems(spec: SweepSpec) -> list[str]:
    problems: list[str] = []
    gpu = spec.resources.gpu
    if gpu != "auto" and (gpu < 0 or (gpu > 1 and not float(gpu).is_integer())):
        problems.append(f"resources.gpu: {gpu}: use a fraction in (0, 1], a whole number, 0, or auto")
    ranks = spec.resources.ranks
    if ranks and gpu != "auto" and gpu >= 2 and ranks != int(gpu):
        problems.append(f"resources.ranks: {ranks} processes for {gpu:g} GPUs per trial; a data-parallel "
                        "trial runs one process per GPU (leave ranks out, or make them equal)")
    if gpu == 0 and spec.train.attention in ("flex_attention", "flash_attention_2", "flash_attention_3"):
        problems.append(f"train.attention: {spec.train.attention} trains on CUDA GPUs only and this sweep "
                        "runs on CPUs (resources.gpu 0); use sdpa, or give the trials GPUs")
    if spec.resources.ranks_per_trial() > 1 and spec.train.micro_batch == "auto":
        problems.append("train.micro_batch: auto probes one GPU's memory; with several ranks per trial "
                        "give a number (every rank must use the same micro-batch)")
    if ranks and ranks > 1 and gpu != "auto" and 0 < gpu < 1:
        problems.append(f"resources.ranks: {ranks} processes cannot share a fraction of a GPU "
                        f"(resources.gpu {gpu:g}); use whole GPUs, or 0 to run the ranks on CPUs")
    return problems


def _train_schedule_problems(train: TrainSpec) -> list[str]:
    """Held-out losses and intermediate adapters happen at loss-report steps (train.log_every)."""
    problems = []
    if train.epochs is not None and train.steps is not None and "steps" in train.model_fields_set:
        problems.append(f"train.steps: {train.steps} and train.epochs: {train.epochs:g} both set the compute "
                        "budget; give steps (equal compute per cell) or epochs (steps follow the mixture's "
                        "size), not both (on the command line, --set train.epochs=N alone replaces the file's steps)")
    if train.epochs is None and train.steps is None:
        problems.append("train.steps: missing compute budget; give train.steps (optimiser steps) or "
                        "train.epochs (passes over the mixture)")
    for field in ("eval_every", "checkpoint_every"):
        every = getattr(train, field)
        if every is not None and every % train.log_every:
            problems.append(f"train.{field}: {every} must be a multiple of train.log_every "
                            f"({train.log_every}): both happen at loss-report steps")
    if train.checkpoint_every is not None and train.keep_checkpoints < 2:
        problems.append(f"train.checkpoint_every: intermediate adapters need train.keep_checkpoints >= 2 "
                        f"(got {train.keep_checkpoints}: 1 keeps only the final adapter, 0 none)")
    if train.micro_batch == "auto" and train.batch_size is None:
        problems.append("train.batch_size: micro_batch auto needs the sequences per optimiser step "
                        "(e.g. batch_size: 64); the micro-batch and accumulation are then chosen to fit")
    if train.micro_batch == "auto" and train.grad_accum != 1:
        problems.append("train.grad_accum: with micro_batch auto the accumulation is derived from "
                        "train.batch_size; leave grad_accum out")
    if isinstance(train.micro_batch, int) and train.batch_size not in (None, train.micro_batch * train.grad_accum):
        problems.append(f"train.batch_size: {train.batch_size} is not micro_batch x grad_accum "
                        f"({train.micro_batch} x {train.grad_accum}); give one or the other")
    problems += _packing_problems(train)
    if isinstance(train.micro_batch, int) and train.micro_batch < 1:
        problems.append(f"train.micro_batch: {train.micro_batch} must be >= 1 (or auto)")
    if train.keep_checkpoints > 1 and train.checkpoint_every is None:
        problems.append(f"train.keep_checkpoints: {train.keep_checkpoints} keeps intermediate adapters: "
                        "set train.checkpoint_every (steps between them), or keep 1 (the final one)")
    return problems


def _packing_problems(train: TrainSpec) -> list[str]:
    if train.pack_length is None:
        return []
    if not train.packing:
        return ["train.pack_length: rows are packed only with train.packing: true; set it, or drop pack_length"]
    if train.attention.startswith("flash_attention"):
        return [f"train.pack_length: {train.attention} finds sample boundaries only in a single packed "
                "row, so each micro-batch is one row; drop pack_length"]
    if train.pack_length < train.max_seq_len:
        return [f"train.pack_length: {train.pack_length} tokens cannot hold the longest sample "
                f"(train.max_seq_len {train.max_seq_len}); raise pack_length or leave it unset"]
    return []


def _search_problems(spec: SweepSpec) -> list[str]:
    search, problems = spec.search, []
    if search.method == "optuna" and search.num_samples is None:
        problems.append("search.num_samples: missing: optuna needs the number of trials to draw, "
                        "e.g. search: {method: optuna, num_samples: 8}")
    if search.method == "grid" and search.num_samples is not None:
        problems.append("search.num_samples: only used by method optuna (grid runs every trial once)")
    if search.metric is not None:
        known = ["eval_loss"] + [f"{n}/{k}" for n in eval_set_names(spec.eval) for k in ("overall", "pooled")]
        if search.metric not in known:
            problems.append(f"search.metric: unknown metric {search.metric!r}{did_you_mean(search.metric, known)}; "
                            f"known: {', '.join(known)}")
        elif search.metric == "eval_loss" and spec.train.eval_every is None:
            problems.append("search.metric: eval_loss needs train.eval_every (held-out loss reports)")
    if search.scheduler == "asha":
        if spec.train.eval_every is None:
            problems.append("search.scheduler: asha watches the held-out loss: set train.eval_every "
                            "(steps between reports, a multiple of train.log_every)")
        grace = search.grace_period or spec.train.eval_every or 1
        if spec.train.epochs is not None:
            problems.append("search.scheduler: asha stops trials at equal step counts, but with train.epochs "
                            "each cell runs its own number of steps; use train.steps with asha")
        elif grace >= spec.train.steps:
            problems.append(f"search.grace_period: {grace} steps leaves ASHA nothing to stop before "
                            f"train.steps ({spec.train.steps}); use fewer")
    return problems
