"""Typed specs: a sweep YAML -> SweepSpec -> list[TrialSpec], with validation and content hashes.

    spec = load_sweep("sweeps/smoke.yaml", overrides=["train.steps=50", "grid.seed=[0]"])
    trials = expand_trials(spec)        # pure: same spec -> same trial ids

Validation collects every problem with its field path (`grid.lora_rank[1]: must be >= 1`) into one
InputError, so a researcher fixes a sweep file in one pass. Nothing here imports torch or ray.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import itertools
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

# The capacity block's types live below this module (so capacity never imports config); they are
# re-exported here, where sweeps and tests have always imported them from.
from harness.capacity.schema import (VARIANT_FIELDS, AdapterSpec, CapacityGrid, CapacitySpec,  # noqa: F401
                                     TargetModules, parse_alpha)
from harness.capacity.settings import capacity_problems, capacity_settings, variants
from harness.errors import InputError, did_you_mean
from harness.strict_model import StrictModel
from harness.tasks.sources import SourceSpec

SYNTHETIC_SOURCE = "builtin:synthetic"
SYNTHETIC_HELDOUT = "builtin:synthetic-heldout"
# Rows split off every real data source of the sweep (eval.heldout_per_source each), never trained on.
SOURCES_HELDOUT = "builtin:sources-heldout"
BUILTIN_EVAL_NAMES = {SYNTHETIC_HELDOUT: "synthetic-heldout", SOURCES_HELDOUT: "sources-heldout"}


class Spec(StrictModel):
    """Base for every spec block: unknown keys are errors (typos must not pass silently), a boolean is
    not a number (`lora_rank: [true]` must not run rank 1), and nan / inf are not numbers either."""


# ---------------------------------------------------------------------------------------------
# Spec blocks


class WorldSpec(Spec):
    """Which synthetic world `builtin:synthetic` and `builtin:synthetic-heldout` draw from."""

    # shop: the e-commerce world (19 subtasks over four domains); recall: the calibration world
    # (harness.tasks.recall: 8 fact-recall subtasks, two per domain, with a capacity mechanism)
    variant: Literal["shop", "recall"] = "shop"
    keys: int = Field(default=64, ge=1)  # recall: products each recall subtask asks about
    # recall: per_key (every product has its own number: the adapter must store subtasks x keys facts)
    # or per_subtask (one number per subtask: the capacity mechanism off)
    facts: Literal["per_key", "per_subtask"] = "per_key"


class DataSpec(Spec):
    # builtin:synthetic and/or real sources mapped to a domain and subtask (harness.tasks.sources)
    sources: list[Union[Literal["builtin:synthetic"], SourceSpec]] = Field(
        default_factory=lambda: [SYNTHETIC_SOURCE]
    )
    per_subtask: int = Field(default=200, ge=1)  # training rows per subtask (volume when the grid has none)
    mode: Literal["per_subtask", "fixed_total", "homogeneous"] = "per_subtask"
    world_seed: int = 0  # the synthetic world's seed: fixed across trials so cells share one world
    world: WorldSpec = Field(default_factory=WorldSpec)  # which synthetic world (calibration: recall)
    mixture_seed: int = 0  # sampling seed for the mixture: fixed so that seeds vary training only
    contamination_check: bool = True  # drop training rows whose input matches an evaluation row
    # Rows whose inputs are embedded (all-MiniLM-L6-v2) for the Vendi score in the record's diversity;
    # 0 skips it. Bookkeeping: it changes what is measured, not what a trial learns.
    embedding_diversity_sample: int = Field(default=256, ge=0)


class EvalSetRef(Spec):
    path: str  # a ShopBench-format JSON / JSON-lines file
    name: str | None = None
    limit: int | None = Field(default=None, ge=1)


class EvalSpec(Spec):
    sets: list[Union[Literal["builtin:synthetic-heldout", "builtin:sources-heldout"], EvalSetRef]] = Field(
        default_factory=lambda: [SYNTHETIC_HELDOUT]
    )
    per_subtask: int = Field(default=100, ge=1)  # held-out questions per synthetic subtask (95% CI half-width <= 0.10)
    # builtin:sources-heldout: rows split off each real data source (distinct inputs, chosen by a hash
    # of the input, so the split does not depend on file order); training never sees their inputs.
    heldout_per_source: int = Field(default=50, ge=1)
    batch_size: int = Field(default=64, ge=1)
    prompt_format: Literal["auto", "raw", "chat"] = "auto"  # auto: chat template when the tokenizer has one
    mc_logits: bool = False  # score multiple-choice options from one forward pass instead of generating
    baseline: bool = True  # also evaluate the untrained base model once per sweep


class TrainSpec(Spec):
    # The compute budget of a cell, a declared choice: `steps` gives every cell equal compute (a cell
    # with more subtasks sees each one less often); `epochs` makes the steps follow the mixture's size
    # (steps = ceil(epochs x rows / sequences per step): equal passes over every row, as the reference
    # study trained, so a bigger mixture gets more compute). Give one of them.
    steps: int | None = Field(default=150, ge=1)  # optimiser steps (null when epochs is set)
    epochs: float | None = Field(default=None, gt=0)  # passes over the training mixture
    lr: float = Field(default=3e-3, gt=0)
    micro_batch: Union[int, Literal["auto"]] = 16  # sequences per forward pass; auto: the largest that fits (GPU probe)
    grad_accum: int = Field(default=1, ge=1)  # micro-batches per optimiser step (auto: derived from batch_size)
    batch_size: int | None = Field(default=None, ge=1)  # sequences per optimiser step; needed by micro_batch auto
    max_seq_len: int = Field(default=256, ge=16)  # tokens; longer examples are truncated from the left
    # How a multiple-choice row is answered, in training and in evaluation: digit (ShopBench: the
    # option's number) or option_text (the option's own text, lm-eval style: evaluation picks the
    # option whose text the model finds likeliest and scores that option's number). option_text is
    # for models too small to learn which number points at an option (builtin:tiny); see README.
    mc_answer: Literal["digit", "option_text"] = "digit"
    # Pack each micro-batch's samples into padding-free rows; position ids restart per sample, so no
    # sample attends across a boundary. SDPA and eager build a dense block-diagonal mask whose cost
    # grows with the square of a row, so rows are bounded by pack_length (unset: the longest sample).
    # flash_attention_* and flex_attention skip the cross-sample blocks: one row per micro-batch
    # (flash finds boundaries only in a single row, so pack_length is refused with it).
    packing: bool = False
    pack_length: int | None = Field(default=None, ge=16)  # tokens per packed row (SDPA/eager/flex)
    # Attention kernel while training (evaluation keeps the model's default): auto = as loaded (SDPA);
    # flash_attention_2/3 need the flash-attn package; flex_attention compiles on first use. Both CUDA only.
    attention: Literal["auto", "sdpa", "eager", "flex_attention", "flash_attention_2",
                       "flash_attention_3"] = "auto"
    warmup_steps: int = Field(default=10, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    log_every: int = Field(default=10, ge=1)  # steps between loss reports
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    # Speed and memory levers (harness.training.losses, harness.training.levers); the same learning up to float rounding.
    # chunked: the LM head and cross-entropy only on labelled (response) positions, chunk by chunk, never
    # the full-vocabulary fp32 logits; fused: the same with each chunk's gradient computed in the forward.
    loss: Literal["plain", "chunked", "fused"] = "chunked"
    loss_chunk_tokens: int = Field(default=2048, ge=64)  # labelled positions per head + loss chunk
    compile: bool = False  # torch.compile each decoder layer (CUDA only; a cold compile costs minutes)
    # Recompute activations in the backward: less memory, ~30% slower. auto: only where memory requires
    # it, i.e. when not even one sample fits (micro_batch auto's probe) or an out-of-memory persists at
    # micro-batch 1 (the retry); never on CPUs.
    grad_checkpointing: Union[bool, Literal["auto"]] = "auto"
    fused_adamw: bool = True  # one fused AdamW kernel (CUDA only; the CPU keeps foreach)
    # Bookkeeping below: none of it changes what a trial learns, so none of it enters trial ids.
    keep_checkpoints: int = Field(default=1, ge=0)  # LoRA adapters kept per trial: 1 = the final one, 0 = none
    checkpoint_every: int | None = Field(default=None, ge=1)  # steps between intermediate adapters (keep > 1)
    eval_every: int | None = Field(default=None, ge=1)  # steps between held-out loss reports (ASHA watches them)
    eval_rows: int = Field(default=2, ge=1)  # held-out rows per synthetic subtask for that loss



def sequences_per_step(train: TrainSpec) -> int:
    """Training sequences in one optimiser step (micro_batch auto needs batch_size; validated)."""
    if train.batch_size is not None:
        return train.batch_size
    return int(train.micro_batch) * train.grad_accum if train.micro_batch != "auto" else 1


def budget_steps(train: TrainSpec, n_rows: int) -> int:
    """Optimiser steps a trial runs: train.steps, or with train.epochs the steps that pass over the
    mixture's n_rows that many times (at least one)."""
    if train.epochs is None:
        return train.steps
    return max(1, math.ceil(train.epochs * n_rows / sequences_per_step(train)))


def budget_note(train: TrainSpec) -> str:
    """What the declared compute budget means for comparisons between cells (reports quote it)."""
    if train.epochs is None:
        return (f"equal compute per cell: train.steps = {train.steps} in every cell, so a cell with more "
                "subtasks sees each subtask fewer times")
    return (f"equal passes over the data: train.epochs = {train.epochs:g}, so steps follow each mixture's "
            "size and a bigger mixture gets proportionally more compute")


class DomainAxis(Spec):
    """How the grid's domain (or subtask) sets are declared; exactly one field is set."""

    incremental: list[str] | None = None  # [a, b, c] -> [a], [a, b], [a, b, c]
    sets: list[list[str]] | None = None  # explicit sets
    each: list[str] | None = None  # [a, b] -> [a], [b]


DEFAULT_RANK = 8


class GridSpec(Spec):
    domains: Union[DomainAxis, list[list[str]], Literal["all"], None] = None
    subtasks: Union[DomainAxis, list[list[str]], None] = None  # task ablation; domains follow from them
    volume: list[int] | None = None  # training rows per subtask (fixed_total: rows in all)
    lora_rank: list[int] | None = None  # ranks (per adapter / expert) crossed with grid.capacity; default [8]
    capacity: list[dict[str, Any]] | None = None  # capacity settings, e.g. [{family: lora}, {family: mole, experts: 4}]
    seed: list[int] = Field(default_factory=lambda: [0])

    @property
    def ranks(self) -> list[int]:
        return self.lora_rank or [DEFAULT_RANK]


class ResourceSpec(Spec):
    cpu: float = Field(default=1, gt=0)  # CPUs per trial (also torch threads)
    gpu: Union[float, Literal["auto"]] = "auto"  # per trial: a fraction packs trials on one GPU; auto: 1 if any
    max_concurrent: int | None = Field(default=None, ge=1)
    gpu_memory_gib: float | None = Field(default=None, gt=0)  # declared GPU size: plan warns past it
    # Data-parallel processes per trial (torch distributed): default one per whole GPU when gpu >= 2,
    # else 1. On CPUs, 2+ runs the same data-parallel code (gloo) without GPUs.
    ranks: int | None = Field(default=None, ge=1)

    def ranks_per_trial(self) -> int:
        gpu = self.gpu if self.gpu != "auto" else 1
        return self.ranks or (int(gpu) if gpu >= 2 else 1)


class WandbSpec(Spec):
    project: str = "divcap"
    entity: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"
    init_timeout: float = Field(default=90, gt=0)  # seconds to wait for the server; then the trial goes on without W&B
    analysis: bool = False  # `harness analyze` also logs the analysis as a W&B run (as --wandb does)


class SearchSpec(Spec):
    """How the driver walks the grid: every trial once, or an Optuna sampler over the same factors.

    `search: optuna` is short for `search: {method: optuna}`."""

    method: Literal["grid", "optuna"] = "grid"  # grid: every trial once; optuna: num_samples draws (TPE)
    num_samples: int | None = Field(default=None, ge=1)  # optuna: trials drawn in all (a repeat reuses its record)
    metric: str | None = None  # optuna's objective: "<eval set>/overall" (default: the first set), "/pooled", "eval_loss"
    mode: Literal["min", "max"] | None = None  # default: min for eval_loss, max for scores
    sampler_seed: int = 0  # the TPE sampler's seed: the same sweep draws the same trials
    scheduler: Literal["none", "asha"] = "none"  # asha: stop trials whose held-out loss trails at a rung
    grace_period: int | None = Field(default=None, ge=1)  # steps before ASHA may stop a trial (default: eval_every)
    reduction_factor: float = Field(default=2.0, gt=1)  # ASHA keeps 1 / reduction_factor at each rung

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"method": value} if isinstance(value, str) else value


class LimitsSpec(Spec):
    """Sizes past which a sweep is refused as a likely typo (a rank of 100000000, a 10^6-trial grid).
    Each is a guard, not a hard limit: raise one on purpose, e.g. --set limits.max_trials=500000."""

    max_trials: int = Field(default=100_000, ge=1)  # trials in the grid; `plan` of 10^5 takes seconds
    max_rank: int = Field(default=4096, ge=1)  # LoRA rank per adapter / expert (a 7B model is 3584 wide)
    max_experts: int = Field(default=256, ge=1)  # mole experts per adapted layer
    max_rows: int = Field(default=10_000_000, ge=1)  # rows per subtask (per_subtask, grid.volume)
    max_steps: int = Field(default=10_000_000, ge=1)  # optimiser steps per trial
    max_seq_len: int = Field(default=131_072, ge=16)  # tokens per sample or packed row
    max_batch: int = Field(default=65_536, ge=1)  # sequences (micro_batch, batch_size, grad_accum, eval.batch_size)


SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit; torch's are 64-bit: the smaller one bounds every seed


class SweepSpec(Spec):
    # A plain folder name: results go to <output_dir>/<name>/, so no separators and not "." or "..".
    name: str
    base_model: str = "builtin:tiny"
    trust_remote_code: bool = False
    data: DataSpec = Field(default_factory=DataSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    grid: GridSpec = Field(default_factory=GridSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    capacity: CapacitySpec = Field(default_factory=CapacitySpec)
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    wandb: WandbSpec = Field(default_factory=WandbSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    output_dir: str = "results"  # results go to <output_dir>/<name>/ (on a cluster: storage every node sees)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)  # sizes refused as likely typos (overridable)

    @field_validator("output_dir", "base_model")
    @classmethod
    def _printable_path(cls, value: str) -> str:
        if not value.strip() or any(not c.isprintable() for c in value):
            raise ValueError(f"{value!r}: give a path or id of printable characters (no control characters "
                             "such as \\0 or a newline), e.g. results")
        return value

    @field_validator("name")
    @classmethod
    def _plain_folder_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", value) or set(value) == {"."}:
            raise ValueError(f"{value!r} is not a plain folder name: results go to <output_dir>/<name>/, so "
                             "use 1-100 letters, digits, '_', '-' or '.', not only dots, e.g. name: smoke")
        return value

    @property
    def results_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# Fields that shape bookkeeping (adapters kept, held-out loss reports), not what a trial learns: left
# out of trial and cell ids, so changing them neither re-runs finished trials nor changes old ids.
IDENTITY_EXCLUDE: dict[str, Any] = {
    "train": {"keep_checkpoints", "checkpoint_every", "eval_every", "eval_rows", "loss", "loss_chunk_tokens",
              "compile", "grad_checkpointing", "fused_adamw", "pack_length", "attention"},
    "data": {"embedding_diversity_sample"},
}


class TrialSpec(Spec):
    """Everything one trial needs, resolved: the driver ships exactly this to a worker."""

    sweep: str
    base_model: str
    trust_remote_code: bool = False
    data: DataSpec
    eval: EvalSpec
    train: TrainSpec
    domains: list[str]
    subtasks: list[str]
    volume: int
    capacity: AdapterSpec | None  # None for the baseline (no adapter)
    seed: int
    kind: Literal["trial", "baseline"] = "trial"

    @property
    def lora_rank(self) -> int:
        return self.capacity.rank if self.capacity else 0

    @property
    def lora_alpha(self) -> float:
        return self.capacity.alpha if self.capacity else 0.0

    @property
    def factors(self) -> dict[str, Any]:
        cap = self.capacity
        return {
            "domains": self.domains,
            "subtasks": self.subtasks,
            "n_domains": len(self.domains),
            "n_subtasks": len(self.subtasks),
            "volume": self.volume,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "capacity_family": cap.family if cap else None,
            "capacity": cap.label if cap else None,
            "adapter_params": cap.params if cap else 0,
            "capacity_budget": cap.budget if cap else None,
            "seed": self.seed,
        }

    @functools.cached_property
    def cell_id(self) -> str:
        parts = dict(self._identity_json)
        parts.pop("seed")
        return _joined_hash(parts)[:12]

    @functools.cached_property
    def trial_id(self) -> str:
        return _joined_hash(self._identity_json)[:12]

    @functools.cached_property
    def _identity_json(self) -> dict[str, str]:
        """identity()'s top-level entries, each as canonical JSON: the ids hash them joined, which is
        content_hash(identity()) byte for byte. The data, eval and train blocks, shared by every trial
        of a sweep, are rendered once per sweep (_block_json), so `plan` of 10^5 trials takes seconds."""
        cap = self.capacity
        classic = cap is None or cap.is_classic_lora
        lora = cap or AdapterSpec(rank=1, alpha=1.0)  # the baseline hashed the defaults
        extra = (dict(lora_alpha=lora.alpha_rule, lora_dropout=lora.dropout, target_modules=lora.target_modules)
                 if classic else {})
        parts = {name: _plain_json(getattr(self, name)) for name in
                 ("sweep", "base_model", "trust_remote_code", "volume", "seed", "kind")}
        parts.update(domains=_names_json(self.domains), subtasks=_names_json(self.subtasks))
        parts.update(data=_block_json(self.data, IDENTITY_EXCLUDE["data"]), eval=_block_json(self.eval),
                     train=_block_json(self.train, IDENTITY_EXCLUDE["train"], extra))
        if classic:
            parts.update(lora_rank=_plain_json(self.lora_rank), lora_alpha=_plain_json(self.lora_alpha))
        else:
            parts["capacity"] = _block_json(cap, {"params"})
        return parts

    def identity(self) -> dict[str, Any]:
        """What the ids hash: the spec minus bookkeeping. Plain-LoRA trials and the baseline keep
        the layout from before capacity families (rank and alpha at the top, the LoRA knobs under
        train), so their ids, and every finished record a resume looks for, stay the same."""
        dump = self.model_dump(exclude=IDENTITY_EXCLUDE)
        _drop_added_later(dump["train"], dump["data"], dump["eval"])
        cap = self.capacity
        if cap is not None and not cap.is_classic_lora:
            dump["capacity"].pop("params")  # derived from the base model's shape, not a choice
            return dump
        dump.pop("capacity")
        dump.update(lora_rank=self.lora_rank, lora_alpha=self.lora_alpha)
        classic = cap or AdapterSpec(rank=1, alpha=1.0)  # the baseline hashed the defaults
        dump["train"].update(lora_alpha=classic.alpha_rule, lora_dropout=classic.dropout,
                             target_modules=classic.target_modules)
        return dump

    @property
    def name(self) -> str:
        """Readable run name from the factors, e.g. 'd2-concept+reasoning-r16-s0'."""
        if self.kind == "baseline":
            return "baseline"
        return (f"d{len(self.domains)}-{'+'.join(self.domains)}-t{len(self.subtasks)}-v{self.volume}-"
                f"{self.capacity.label}-s{self.seed}")


def content_hash(obj: Any) -> str:
    """sha256 of a canonical JSON rendering: key order and whitespace never change a hash."""
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()


# json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str), without building an encoder per call
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _canonical(obj: Any) -> str:
    return _CANONICAL.encode(obj)


def _joined_hash(parts: dict[str, str]) -> str:
    """content_hash of the mapping whose entries `parts` holds already rendered (same bytes)."""
    blob = "{" + ",".join(f"{_CANONICAL.encode(key)}:{parts[key]}" for key in sorted(parts)) + "}"
    return hashlib.sha256(blob.encode()).hexdigest()


@functools.lru_cache(maxsize=65536, typed=True)  # typed: True and 1 render differently
def _plain_json(value: Any) -> str:
    """A scalar (or a tuple of names) rendered canonically, memoised: trials repeat the same values."""
    return _CANONICAL.encode(value)


def _names_json(value: list[str]) -> str:
    return _plain_json(tuple(value)) if all(isinstance(v, str) for v in value) else _canonical(value)


_BLOCK_JSON: dict[tuple[int, str], tuple[Spec, str]] = {}  # (id(block), extra) -> (block kept alive, JSON)


def _drop_added_later(train: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                      eval_: dict[str, Any] | None = None) -> None:
    """Remove from dumped train / data / eval blocks the fields added after ids existed, when they
    hold their old meaning (unset, default, unused), so that older trial ids stay the same."""
    if eval_ is not None and SOURCES_HELDOUT not in eval_["sets"]:  # unused without that eval set
        eval_.pop("heldout_per_source")
    if train is not None:
        for added_later in ("batch_size", "epochs"):
            if train[added_later] is None:
                train.pop(added_later)
        if train.get("epochs") is not None or train["steps"] is None:
            train.pop("steps")  # follows from epochs and the mixture's size
        if train["mc_answer"] == "digit":  # the default answer form
            train.pop("mc_answer")
    if data is not None and data["world"] == WorldSpec().model_dump():  # likewise the default world
        data.pop("world")


def _block_json(block: Spec, exclude: set[str] | None = None, extra: dict[str, Any] | None = None) -> str:
    """A spec block as identity() renders it (`exclude` out, an unset train batch_size out, `extra`
    in), memoised per block object: a sweep's trials share their data, eval, train and capacity blocks."""
    key = (id(block), _canonical(extra) if extra else "")
    hit = _BLOCK_JSON.get(key)
    if hit is not None and hit[0] is block:
        return hit[1]
    dump = block.model_dump(exclude=exclude)
    if isinstance(block, TrainSpec):
        _drop_added_later(train=dump)
    elif isinstance(block, DataSpec):
        _drop_added_later(data=dump)
    elif isinstance(block, EvalSpec):
        _drop_added_later(eval_=dump)
    text = _canonical({**dump, **(extra or {})})
    if len(_BLOCK_JSON) > 4096:
        _BLOCK_JSON.clear()
    _BLOCK_JSON[key] = (block, text)
    return text


# ---------------------------------------------------------------------------------------------
# Loading: YAML + overrides -> SweepSpec, with every problem reported at once


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.steps=50' -> (['train', 'steps'], 50); the value is parsed as YAML."""
    if "=" not in text:
        raise InputError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set train.steps=50")
    key, _, raw = text.partition("=")
    path = key.strip().split(".")
    if not all(part.strip() for part in path):
        raise InputError(f"--set {text!r}: empty key or key part; write KEY.PATH=VALUE, e.g. --set train.steps=50")
    if not raw.strip():
        return path, None
    try:
        return path, load_yaml_text(raw)
    except YamlProblem as exc:
        raise InputError(f"--set {text!r}: the value is not plain YAML ({exc}); close its brackets or quotes, "
                         "or quote the whole value as text, e.g. --set 'name=\"my:sweep\"'") from None


# A command-line choice of one compute budget replaces the file's other one: `--set train.steps=40` on a
# sweep that declares epochs runs 40 steps (and the reverse), instead of refusing both as set.
_OTHER_BUDGET = {("train", "steps"): "epochs", ("train", "epochs"): "steps"}


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    chosen = set()
    for text in overrides:
        path, value = parse_override(text)
        if tuple(path) in _OTHER_BUDGET and value is not None:
            chosen.add(tuple(path))
            other = _OTHER_BUDGET[tuple(path)]
            train = raw.get("train")
            if isinstance(train, dict) and ("train", other) not in chosen:
                train[other] = None
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise InputError(f"--set {text!r}: {part!r} is not a mapping, cannot set a key in it")
            node = child
        node[path[-1]] = value
    return raw


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part.startswith(("literal[", "list[", "function-")) or
                                        part in ("DomainAxis", "SourceSpec", "EvalSetRef", "str", "float", "int")):
            continue  # pydantic's union-branch tags add noise, not location
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


# Keys that earlier versions accepted elsewhere: say where they went instead of "unknown key".
MOVED_KEYS = {"train.lora_alpha": "capacity.alpha", "train.lora_dropout": "capacity.dropout",
              "train.target_modules": "capacity.target_modules"}


def _pydantic_problems(exc: ValidationError) -> list[str]:
    seen, problems = set(), []
    for err in exc.errors():
        if err["type"] == "literal_error" and isinstance(err.get("input"), dict):
            continue  # a mapping was given, so the union's string branch is not what was meant
        loc, msg = _format_loc(err["loc"]), err["msg"].removeprefix("Value error, ")
        if err["type"] == "bool_not_number":  # raised by the block, about one of its fields
            field = err["ctx"]["field"]
            loc = field if loc == "(top level)" else f"{loc}.{field}"
            msg = msg.split(": ", 1)[1]
        if err["type"] == "extra_forbidden":
            moved = MOVED_KEYS.get(".".join(str(p) for p in err["loc"]))
            msg = f"moved to {moved} (capacity settings live in the capacity block)" if moved else \
                "unknown key" + _suggest_key(err["loc"])
        line = f"{loc}: {msg}"
        if line not in seen:
            seen.add(line)
            problems.append(line)
    return problems


def _suggest_key(loc: tuple[Any, ...]) -> str:
    """Did-you-mean for an unknown key, from the field names of the block it sits in."""
    block: Any = SweepSpec
    for part in loc[:-1]:
        fields = getattr(block, "model_fields", {})
        if part in fields:
            annotation = fields[part].annotation
            block = next((a for a in getattr(annotation, "__args__", (annotation,))
                          if hasattr(a, "model_fields")), annotation)
    names = list(getattr(block, "model_fields", {}))
    return did_you_mean(str(loc[-1]), names)


MAX_CONFIG_BYTES = 10 * 2**20  # a sweep or generation spec is a page of YAML, not a data file
MAX_YAML_ALIASES = 100  # alias (*name) uses per document: enough for reuse, too few for an alias bomb
CORE_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge"))


class YamlProblem(yaml.YAMLError):
    """A YAML document we refuse although PyYAML would read it (duplicate keys, tags, alias bombs)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (naming both lines), tags outside YAML's core schema and
    alias bombs, and reads unquoted dates as text (a config holds no timestamps)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases_seen = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_YAML_ALIASES:
                raise YamlProblem(f"more than {MAX_YAML_ALIASES} alias (*name) uses; write the values out")
        return super().compose_node(parent, index)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        if node.tag not in CORE_TAGS:
            line = node.start_mark.line + 1
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise YamlProblem(f"line {line}: YAML tag {tag!r} is not accepted (plain strings, numbers, "
                              "booleans, lists and mappings only); remove the tag, or quote the value")
        return super().construct_object(node, deep)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (list, dict)):
                raise YamlProblem(f"line {line}: a mapping key must be plain text or a number")
            if key in seen:
                raise YamlProblem(f"key {key!r} appears twice (line {seen[key]} and line {line}); the second "
                                  "would silently replace the first: merge them into one")
            seen[key] = line
        return super().construct_mapping(node, deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def load_yaml_text(text: str) -> Any:
    """One YAML document, strictly (see _StrictLoader); YamlProblem on anything it refuses."""
    loader = None
    try:
        loader = _StrictLoader(text)  # its reader refuses control characters already
        return loader.get_single_data()
    except YamlProblem:
        raise
    except yaml.YAMLError as exc:
        raise YamlProblem(" ".join(str(exc).split())) from None
    except RecursionError:
        raise YamlProblem("nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_text_file(path: str | Path, what: str) -> str:
    """A UTF-8 text file; every failure is an InputError naming the file and how to fix it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give the {what} itself")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InputError(f"{path}: {path.stat().st_size} bytes is too large for a {what} "
                             f"(at most {MAX_CONFIG_BYTES} bytes); give the YAML file, not a data file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data:
        raise InputError(f"{path}: the {what} is not UTF-8 text (it looks like UTF-16 or a binary file); "
                         "save it as UTF-8 text")
    try:
        return data.decode("utf-8-sig")  # -sig: tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: the {what} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         "save it as UTF-8 text") from None


def read_yaml_mapping(path: str | Path, what: str, example_keys: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping; every failure is an InputError naming the file."""
    text = read_text_file(path, what)
    try:
        raw = load_yaml_text(text)
    except YamlProblem as exc:
        raise InputError(f"{path}: not valid YAML for a {what}: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a {what} must be a YAML mapping ({example_keys})")
    return raw


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read, override, validate. Raises one InputError listing every problem with its field path."""
    raw = apply_overrides(read_yaml_mapping(path, "sweep file", "name:, grid:, ..."), overrides or [])
    return validate_sweep(raw, source=str(path))


def validate_sweep(raw: dict[str, Any], source: str = "<sweep>") -> SweepSpec:
    """A validated sweep with every local path made absolute against the current directory."""
    try:
        spec = absolute_paths(SweepSpec.model_validate(raw))
    except ValidationError as exc:
        raise _problems_error(source, _pydantic_problems(exc)) from None
    problems = semantic_problems(spec)
    if problems:
        raise _problems_error(source, problems)
    return spec


# ---------------------------------------------------------------------------------------------
# Paths: relative to the directory the command runs in, made absolute once, before anything launches
# (Ray runs trials in other working directories, and on other machines)


def absolute_path(path: str, base: Path | None = None) -> str:
    """`path` against `base` (default: the current directory), `~` expanded, `..` folded; an
    absolute path keeps its form. Symlinks are kept, so the path reads as the user wrote it."""
    return os.path.normpath(os.path.join(base or Path.cwd(), os.path.expanduser(path)))


def _maybe_local(name: str) -> bool:
    """Whether a model or dataset name is a local path rather than a hub id ('org/name'): it
    exists here, or it is written as one (./, ../, /, ~)."""
    return name.startswith((".", "/", "~")) or Path(name).exists()


def absolute_paths(spec: SweepSpec, base: Path | None = None) -> SweepSpec:
    """The spec with every local path absolute: data sources (an hf source only when it is a local
    path, not a hub id), evaluation sets, a local base model and output_dir. Idempotent."""
    def source(src: Any) -> Any:
        if src == SYNTHETIC_SOURCE or (src.kind == "hf" and not _maybe_local(src.path)):
            return src
        return src.model_copy(update={"path": absolute_path(src.path, base)})

    def eval_set(ref: Any) -> Any:
        return ref if ref in BUILTIN_EVAL_NAMES else ref.model_copy(update={"path": absolute_path(ref.path, base)})

    model = spec.base_model
    if not model.startswith("builtin:") and _maybe_local(model):
        model = absolute_path(model, base)
    return spec.model_copy(update={
        "base_model": model, "output_dir": absolute_path(spec.output_dir, base),
        "data": spec.data.model_copy(update={"sources": [source(s) for s in spec.data.sources]}),
        "eval": spec.eval.model_copy(update={"sets": [eval_set(r) for r in spec.eval.sets]}),
    })


def local_paths(spec: SweepSpec) -> dict[str, str]:
    """field path -> local file or directory every trial reads (what a cluster's nodes must see)."""
    out = {f"data.sources[{i}].path": s.path for i, s in enumerate(spec.data.sources)
           if s != SYNTHETIC_SOURCE and (s.kind != "hf" or os.path.isabs(s.path))}
    out.update({f"eval.sets[{i}].path": r.path for i, r in enumerate(spec.eval.sets) if r not in BUILTIN_EVAL_NAMES})
    if os.path.isabs(spec.base_model):
        out["base_model"] = spec.base_model
    return out


def _problems_error(source: str, problems: list[str]) -> InputError:
    lines = "\n".join(f"  - {p}" for p in problems)
    return InputError(f"{source}: {len(problems)} problem(s) in the sweep spec:\n{lines}\n"
                      "Fix these fields and run again; nothing was launched.")


# ---------------------------------------------------------------------------------------------
# Semantic checks: names, grid shape, resources


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


def count_trials(spec: SweepSpec) -> int:
    """Trials the grid expands to (without the baseline), computed without expanding it."""
    found = variants(capacity_grid(spec))
    settings = (len(spec.capacity.match_params) * len(found) if spec.capacity.match_params
                else sum(1 if v.get("rank") else len(spec.grid.ranks) for v in found))
    return len(data_sets(spec)) * len(spec.grid.volume or [1]) * settings * len(spec.grid.seed)


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


def eval_set_names(spec: EvalSpec) -> list[str]:
    """The names evaluation results are keyed by, in declaration order."""
    return [BUILTIN_EVAL_NAMES[ref] if ref in BUILTIN_EVAL_NAMES else ref.name or Path(ref.path).stem
            for ref in spec.sets]


def search_metric(spec: SweepSpec) -> tuple[str, str]:
    """(metric, mode) that Optuna optimises: by default the first evaluation set's overall score."""
    metric = spec.search.metric or f"{eval_set_names(spec.eval)[0]}/overall"
    return metric, spec.search.mode or ("min" if metric == "eval_loss" else "max")


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


# ---------------------------------------------------------------------------------------------
# Expansion: SweepSpec -> TrialSpecs (pure and deterministic)


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
