"""The sweep spec's types: SweepSpec (what a sweep file declares) and TrialSpec (one trial, resolved),
with the compute-budget helpers and the content hashes that trial and cell ids are made of.

    spec = load_sweep("sweeps/smoke.yaml")       # harness.spec.load: YAML + overrides, validated
    trials = expand_trials(spec)                 # harness.spec.expand: the grid
    trials[0].trial_id, trials[0].cell_id        # hashes of the trial's identity(), here

Every block is a Spec: unknown keys, booleans for numbers, nan and inf are errors. An id hashes the
spec minus bookkeeping (IDENTITY_EXCLUDE) and minus fields added later while they keep their old
meaning, so finished records keep matching. Nothing here imports torch or ray.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import Field, field_validator, model_validator

# The capacity block's types live below this module (so capacity never imports the spec); they are
# re-exported here, where sweeps and tests have always imported them from.
from harness.capacity.schema import (VARIANT_FIELDS, AdapterSpec, CapacityGrid, CapacitySpec,  # noqa: F401
                                     TargetModules, parse_alpha)
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
    # option whose text the model finds likeliest and scores that option's number). choice_text
    # answers retrieval and ranking rows the same way: training writes the chosen candidates' texts,
    # evaluation orders the candidates by likelihood and scores their numbers. Both are for models
    # too small to learn which number points at an option (builtin:tiny); see README.
    mc_answer: Literal["digit", "option_text", "choice_text"] = "digit"
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
    # Speed and memory levers (harness.training.losses, harness.training.levers); the same learning up to
    # float rounding.
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


def eval_set_names(spec: EvalSpec) -> list[str]:
    """The names evaluation results are keyed by, in declaration order."""
    return [BUILTIN_EVAL_NAMES[ref] if ref in BUILTIN_EVAL_NAMES else ref.name or Path(ref.path).stem
            for ref in spec.sets]


def search_metric(spec: SweepSpec) -> tuple[str, str]:
    """(metric, mode) that Optuna optimises: by default the first evaluation set's overall score."""
    metric = spec.search.metric or f"{eval_set_names(spec.eval)[0]}/overall"
    return metric, spec.search.mode or ("min" if metric == "eval_loss" else "max")


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
