"""Typed specs: a sweep YAML -> SweepSpec -> list[TrialSpec], with validation and content hashes.

    spec = load_sweep("sweeps/smoke.yaml", overrides=["train.steps=50", "grid.seed=[0]"])
    trials = expand_trials(spec)        # pure: same spec -> same trial ids

Validation collects every problem with its field path (`grid.lora_rank[1]: must be >= 1`) into one
InputError, so a researcher fixes a sweep file in one pass. Nothing here imports torch or ray.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import InputError, did_you_mean
from harness.tasks.sources import SourceSpec

SYNTHETIC_SOURCE = "builtin:synthetic"
SYNTHETIC_HELDOUT = "builtin:synthetic-heldout"


class Spec(BaseModel):
    """Base for every spec block: unknown keys are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# Spec blocks


class DataSpec(Spec):
    # builtin:synthetic and/or real sources mapped to a domain and subtask (harness.tasks.sources)
    sources: list[Union[Literal["builtin:synthetic"], SourceSpec]] = Field(
        default_factory=lambda: [SYNTHETIC_SOURCE]
    )
    per_subtask: int = Field(default=200, ge=1)  # training rows per subtask (volume when the grid has none)
    mode: Literal["per_subtask", "fixed_total", "homogeneous"] = "per_subtask"
    world_seed: int = 0  # the synthetic world's seed: fixed across trials so cells share one world
    mixture_seed: int = 0  # sampling seed for the mixture: fixed so that seeds vary training only
    contamination_check: bool = True  # drop training rows whose input matches an evaluation row


class EvalSetRef(Spec):
    path: str  # a ShopBench-format JSON / JSON-lines file
    name: str | None = None
    limit: int | None = Field(default=None, ge=1)


class EvalSpec(Spec):
    sets: list[Union[Literal["builtin:synthetic-heldout"], EvalSetRef]] = Field(
        default_factory=lambda: [SYNTHETIC_HELDOUT]
    )
    per_subtask: int = Field(default=24, ge=1)  # held-out questions per synthetic subtask
    batch_size: int = Field(default=64, ge=1)
    prompt_format: Literal["auto", "raw", "chat"] = "auto"  # auto: chat template when the tokenizer has one
    mc_logits: bool = False  # score multiple-choice options from one forward pass instead of generating
    baseline: bool = True  # also evaluate the untrained base model once per sweep


class TrainSpec(Spec):
    steps: int = Field(default=150, ge=1)  # optimiser steps
    lr: float = Field(default=3e-3, gt=0)
    lora_alpha: Union[float, str] = "2x_rank"  # a number, or "<k>x_rank"
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: Union[Literal["all-linear", "attention", "mlp"], list[str]] = "all-linear"
    micro_batch: int = Field(default=16, ge=1)  # sequences per forward pass
    grad_accum: int = Field(default=1, ge=1)  # micro-batches per optimiser step
    max_seq_len: int = Field(default=256, ge=16)  # tokens; longer examples are truncated from the left
    # Pack each micro-batch into one padding-free row (samples never attend across boundaries). Pays
    # with flash-attention's varlen kernels; with SDPA's dense block mask, attention grows with the
    # square of the packed row, which made it slower than padding for builtin:tiny on the CPU.
    packing: bool = False
    warmup_steps: int = Field(default=10, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    log_every: int = Field(default=10, ge=1)  # steps between loss reports
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    # Bookkeeping below: none of it changes what a trial learns, so none of it enters trial ids.
    keep_checkpoints: int = Field(default=1, ge=0)  # LoRA adapters kept per trial: 1 = the final one, 0 = none
    checkpoint_every: int | None = Field(default=None, ge=1)  # steps between intermediate adapters (keep > 1)
    eval_every: int | None = Field(default=None, ge=1)  # steps between held-out loss reports (ASHA watches them)
    eval_rows: int = Field(default=2, ge=1)  # held-out rows per synthetic subtask for that loss

    @field_validator("lora_alpha")
    @classmethod
    def _alpha_rule(cls, value: Union[float, str]) -> Union[float, str]:
        if isinstance(value, str):
            try:
                if not value.endswith("x_rank") or float(value[: -len("x_rank")]) <= 0:
                    raise ValueError
            except ValueError:
                raise ValueError("must be a positive number or '<k>x_rank' (e.g. '2x_rank')") from None
        elif value <= 0:
            raise ValueError("must be positive")
        return value


class DomainAxis(Spec):
    """How the grid's domain (or subtask) sets are declared; exactly one field is set."""

    incremental: list[str] | None = None  # [a, b, c] -> [a], [a, b], [a, b, c]
    sets: list[list[str]] | None = None  # explicit sets
    each: list[str] | None = None  # [a, b] -> [a], [b]


class GridSpec(Spec):
    domains: Union[DomainAxis, list[list[str]], Literal["all"], None] = None
    subtasks: Union[DomainAxis, list[list[str]], None] = None  # task ablation; domains follow from them
    volume: list[int] | None = None  # training rows per subtask (fixed_total: rows in all)
    lora_rank: list[int] = Field(default_factory=lambda: [8])
    seed: list[int] = Field(default_factory=lambda: [0])


class ResourceSpec(Spec):
    cpu: float = Field(default=1, gt=0)  # CPUs per trial (also torch threads)
    gpu: Union[float, Literal["auto"]] = "auto"  # per trial: a fraction packs trials on one GPU; auto: 1 if any
    max_concurrent: int | None = Field(default=None, ge=1)
    gpu_memory_gib: float | None = Field(default=None, gt=0)  # declared GPU size: plan warns past it


class WandbSpec(Spec):
    project: str = "divcap"
    entity: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"
    init_timeout: float = Field(default=90, gt=0)  # seconds to wait for the server; then the trial goes on without W&B


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


class SweepSpec(Spec):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base_model: str = "builtin:tiny"
    trust_remote_code: bool = False
    data: DataSpec = Field(default_factory=DataSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    grid: GridSpec = Field(default_factory=GridSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    wandb: WandbSpec = Field(default_factory=WandbSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    output_dir: str = "results"  # results go to <output_dir>/<name>/ (on a cluster: storage every node sees)

    @property
    def results_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# Fields that shape bookkeeping (adapters kept, held-out loss reports), not what a trial learns: left
# out of trial and cell ids, so changing them neither re-runs finished trials nor changes old ids.
IDENTITY_EXCLUDE: dict[str, Any] = {
    "train": {"keep_checkpoints", "checkpoint_every", "eval_every", "eval_rows"},
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
    lora_rank: int
    lora_alpha: float
    seed: int
    kind: Literal["trial", "baseline"] = "trial"

    @property
    def factors(self) -> dict[str, Any]:
        return {
            "domains": self.domains,
            "subtasks": self.subtasks,
            "n_domains": len(self.domains),
            "n_subtasks": len(self.subtasks),
            "volume": self.volume,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "seed": self.seed,
        }

    @property
    def cell_id(self) -> str:
        return content_hash(self.model_dump(exclude={"seed": True, **IDENTITY_EXCLUDE}))[:12]

    @property
    def trial_id(self) -> str:
        return content_hash(self.model_dump(exclude=IDENTITY_EXCLUDE))[:12]

    @property
    def name(self) -> str:
        """Readable run name from the factors, e.g. 'd2-concept+reasoning-r16-s0'."""
        if self.kind == "baseline":
            return "baseline"
        return f"d{len(self.domains)}-{'+'.join(self.domains)}-t{len(self.subtasks)}-v{self.volume}-r{self.lora_rank}-s{self.seed}"


def content_hash(obj: Any) -> str:
    """sha256 of a canonical JSON rendering: key order and whitespace never change a hash."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Loading: YAML + overrides -> SweepSpec, with every problem reported at once


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.steps=50' -> (['train', 'steps'], 50); the value is parsed as YAML."""
    if "=" not in text:
        raise InputError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set train.steps=50")
    key, _, raw = text.partition("=")
    if not key.strip():
        raise InputError(f"--set {text!r}: empty key")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
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


def _pydantic_problems(exc: ValidationError) -> list[str]:
    seen, problems = set(), []
    for err in exc.errors():
        if err["type"] == "literal_error" and isinstance(err.get("input"), dict):
            continue  # a mapping was given, so the union's string branch is not what was meant
        loc, msg = _format_loc(err["loc"]), err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _suggest_key(err["loc"])
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


def read_yaml_mapping(path: str | Path, what: str, example_keys: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping; every failure is an InputError naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a {what} must be a YAML mapping ({example_keys})")
    return raw


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read, override, validate. Raises one InputError listing every problem with its field path."""
    raw = apply_overrides(read_yaml_mapping(path, "sweep file", "name:, grid:, ..."), overrides or [])
    return validate_sweep(raw, source=str(path))


def validate_sweep(raw: dict[str, Any], source: str = "<sweep>") -> SweepSpec:
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise _problems_error(source, _pydantic_problems(exc)) from None
    problems = semantic_problems(spec)
    if problems:
        raise _problems_error(source, problems)
    return spec


def _problems_error(source: str, problems: list[str]) -> InputError:
    lines = "\n".join(f"  - {p}" for p in problems)
    return InputError(f"{source}: {len(problems)} problem(s) in the sweep spec:\n{lines}\n"
                      "Fix these fields and run again; nothing was launched.")


# ---------------------------------------------------------------------------------------------
# Semantic checks: names, grid shape, resources


def available_subtasks(spec: SweepSpec) -> dict[str, str]:
    """subtask id -> domain, over every source the sweep declares."""
    from harness.tasks import registry

    out: dict[str, str] = {}
    for src in spec.data.sources:
        if src == SYNTHETIC_SOURCE:
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
        if ref != SYNTHETIC_HELDOUT and not Path(ref.path).exists():
            problems.append(f"eval.sets[{i}].path: file not found: {ref.path}")
    for i, src in enumerate(spec.data.sources):
        if src != SYNTHETIC_SOURCE and src.kind != "hf" and not Path(src.path).exists():
            problems.append(f"data.sources[{i}].path: file not found: {src.path}")
    gpu = spec.resources.gpu
    if gpu != "auto" and (gpu < 0 or (gpu > 1 and not float(gpu).is_integer())):
        problems.append(f"resources.gpu: {gpu}: use a fraction in (0, 1], a whole number, 0, or auto")
    return problems + _train_schedule_problems(spec.train) + _search_problems(spec)


def _train_schedule_problems(train: TrainSpec) -> list[str]:
    """Held-out losses and intermediate adapters happen at loss-report steps (train.log_every)."""
    problems = []
    for field in ("eval_every", "checkpoint_every"):
        every = getattr(train, field)
        if every is not None and every % train.log_every:
            problems.append(f"train.{field}: {every} must be a multiple of train.log_every "
                            f"({train.log_every}): both happen at loss-report steps")
    if train.checkpoint_every is not None and train.keep_checkpoints < 2:
        problems.append(f"train.checkpoint_every: intermediate adapters need train.keep_checkpoints >= 2 "
                        f"(got {train.keep_checkpoints}: 1 keeps only the final adapter, 0 none)")
    if train.keep_checkpoints > 1 and train.checkpoint_every is None:
        problems.append(f"train.keep_checkpoints: {train.keep_checkpoints} keeps intermediate adapters: "
                        "set train.checkpoint_every (steps between them), or keep 1 (the final one)")
    return problems


def eval_set_names(spec: EvalSpec) -> list[str]:
    """The names evaluation results are keyed by, in declaration order."""
    return ["synthetic-heldout" if ref == SYNTHETIC_HELDOUT else ref.name or Path(ref.path).stem
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
        if grace >= spec.train.steps:
            problems.append(f"search.grace_period: {grace} steps leaves ASHA nothing to stop before "
                            f"train.steps ({spec.train.steps}); use fewer")
    return problems


# ---------------------------------------------------------------------------------------------
# Expansion: SweepSpec -> TrialSpecs (pure and deterministic)


def resolve_alpha(rule: Union[float, str], rank: int) -> float:
    if isinstance(rule, str):
        return float(rule[: -len("x_rank")]) * rank
    return float(rule)


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


def expand_trials(spec: SweepSpec) -> list[TrialSpec]:
    """The full factorial: data sets x volume x rank x seed, seeds innermost."""
    volumes = spec.grid.volume or [spec.data.per_subtask]
    trials = []
    for (domains, subtasks), volume, rank, seed in itertools.product(
        data_sets(spec), volumes, spec.grid.lora_rank, spec.grid.seed
    ):
        trials.append(TrialSpec(
            sweep=spec.name, base_model=spec.base_model, trust_remote_code=spec.trust_remote_code,
            data=spec.data, eval=spec.eval, train=spec.train, domains=domains, subtasks=subtasks,
            volume=volume, lora_rank=rank, lora_alpha=resolve_alpha(spec.train.lora_alpha, rank),
            seed=seed,
        ))
    return trials


def baseline_trial(spec: SweepSpec) -> TrialSpec:
    """The untrained base model, evaluated once per sweep so the report can show the lift."""
    return TrialSpec(
        sweep=spec.name, base_model=spec.base_model, trust_remote_code=spec.trust_remote_code,
        data=spec.data, eval=spec.eval, train=spec.train, domains=[], subtasks=[], volume=0,
        lora_rank=0, lora_alpha=0.0, seed=0, kind="baseline",
    )
