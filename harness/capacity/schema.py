"""The capacity part of the sweep schema: the capacity block, one trial's resolved AdapterSpec, and
the CapacityGrid view of a sweep that capacity resolution reads.

They sit below harness.spec.schema (which re-exports them), so the capacity package never imports the
sweep schema: config expands and validates sweeps by calling harness.capacity.settings, never the
other way round. The family name is checked against the registry (harness.capacity.registry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, Field, field_validator

from harness.capacity.registry import FAMILIES, get_family
from harness.strict_model import StrictModel

SHARED = "shared"  # the multi_lora adapter every example trains and unknown evaluation rows use


def _known_family(value: str) -> str:
    if value not in FAMILIES:
        raise ValueError(FAMILIES.unknown(value))
    return value


FamilyName = Annotated[str, AfterValidator(_known_family)]  # a name in the family registry
TargetModules = Union[Literal["all-linear", "attention", "mlp"], list[str]]


class CapacitySpec(StrictModel):  # as harness.spec.schema.Spec, which sits above this module
    """How trainable capacity is added to the frozen base model: the defaults of every setting in
    grid.capacity (which varies them) and, with match_params, the parameter budgets to match."""

    family: FamilyName = "lora"  # lora | dora | multi_lora | mole: harness.capacity.families
    rank: int | None = Field(default=None, ge=1)  # per adapter / per expert; default: grid.lora_rank
    alpha: Union[float, str] = "2x_rank"  # a number (fixed), "<k>x_rank", or "rslora:<alpha>" (alpha/sqrt(rank))
    target_modules: TargetModules = "all-linear"  # all-linear | attention | mlp | [module names]
    dropout: float = Field(default=0.0, ge=0, lt=1)  # on the adapter's input
    experts: int = Field(default=4, ge=1)  # mole: LoRA experts per adapted layer
    top_k: int = Field(default=2, ge=1)  # mole: experts each token uses
    router_aux_weight: float = Field(default=0.01, ge=0)  # mole: weight of the load-balancing loss
    groups: Union[Literal["domain", "subtask"], dict[str, list[str]]] = "domain"  # multi_lora: one adapter per ...
    eval_map: dict[str, str] = Field(default_factory=dict)  # multi_lora: eval task name / track / task type -> group
    # Trainable-parameter budgets ("r32" = plain LoRA rank 32 on these target modules, or a count):
    # each grid.capacity setting gets the rank whose parameter count is nearest to each budget.
    match_params: list[Union[int, str]] | None = None

    @field_validator("alpha")
    @classmethod
    def _alpha_rule(cls, value: Union[float, str]) -> Union[float, str]:
        parse_alpha(value, 1)
        return value

    @field_validator("match_params")
    @classmethod
    def _budgets(cls, value: list[Union[int, str]] | None) -> list[Union[int, str]] | None:
        for item in value or []:
            if isinstance(item, int) and item < 1 or isinstance(item, str) and not budget_rank(item):
                raise ValueError(f"{item!r}: a budget is a parameter count (e.g. 400000) or 'r<rank>' "
                                 "(plain LoRA's parameters at that rank, e.g. r32)")
        return value


# Knobs a grid.capacity entry may set (the rest are sweep-wide, in the capacity block).
VARIANT_FIELDS = ("family", "rank", "alpha", "target_modules", "dropout", "experts", "top_k",
                  "router_aux_weight", "groups")


def parse_alpha(rule: Union[float, str], rank: int) -> tuple[float, bool]:
    """(lora_alpha, use_rslora) from an alpha rule; ValueError with the accepted forms otherwise."""
    if not isinstance(rule, str):
        if rule <= 0:
            raise ValueError("must be positive")
        return float(rule), False
    try:
        if rule.endswith("x_rank") and float(rule[: -len("x_rank")]) > 0:
            return float(rule[: -len("x_rank")]) * rank, False
        if rule.startswith("rslora:") and float(rule[len("rslora:"):]) > 0:
            return float(rule[len("rslora:"):]), True
    except ValueError:
        pass
    raise ValueError(f"{rule!r}: use a positive number (fixed alpha), '<k>x_rank' (e.g. '2x_rank') or "
                     "'rslora:<alpha>' (scaling alpha / sqrt(rank), e.g. 'rslora:16')")


def budget_rank(label: str) -> int | None:
    """The rank of a match_params budget label ('r32' -> 32); None when it is not one."""
    return int(label[1:]) if label[:1] == "r" and label[1:].isdigit() and int(label[1:]) > 0 else None


class AdapterSpec(StrictModel):  # as harness.spec.schema.Spec, which sits above this module
    """One trial's resolved capacity setting (what the trainer builds)."""

    family: FamilyName = "lora"
    rank: int = Field(ge=1)
    alpha: float = Field(gt=0)
    rslora: bool = False  # scaling alpha / sqrt(rank) instead of alpha / rank
    target_modules: TargetModules = "all-linear"
    dropout: float = 0.0
    experts: int | None = None  # mole
    top_k: int | None = None  # mole
    router_aux_weight: float | None = None  # mole
    groups: dict[str, list[str]] | None = None  # multi_lora: adapter name -> the domains or subtasks it trains on
    group_by: Literal["domain", "subtask"] | None = None  # multi_lora: what the group members are
    eval_map: dict[str, str] | None = None  # multi_lora: declared evaluation routing
    params: int | None = None  # trainable parameters counted from the model shape (None: shape unknown)
    budget: str | None = None  # the match_params budget this setting was matched to
    alpha_rule: Union[float, str] = "2x_rank"  # what the sweep said (alpha is its value at this rank)

    @property
    def is_classic_lora(self) -> bool:
        """Plain LoRA as the harness ran it before capacity families existed (ids kept stable)."""
        return get_family(self.family).legacy_ids and not self.rslora and self.budget is None

    @property
    def label(self) -> str:
        """Short readable name: lora-r8, dora-r8, multi_lora-g4-r8, mole-e4k2-r8."""
        return f"{self.family}{get_family(self.family).label_suffix(self)}-r{self.rank}"

    @property
    def scaling(self) -> float:
        return self.alpha / (self.rank ** 0.5 if self.rslora else self.rank)


CellSets = list[tuple[list[str], list[str]]]  # the grid's (domains, subtasks) data sets


@dataclass(frozen=True)
class CapacityGrid:
    """What capacity resolution reads from a sweep (harness.spec.expand.capacity_grid builds it), so that
    harness.capacity.settings needs nothing from the sweep schema above it."""

    base_model: str
    capacity: CapacitySpec  # the sweep-wide capacity block
    entries: list[dict[str, Any]]  # grid.capacity as written ([] when absent)
    ranks: list[int]  # grid.lora_rank, or the default rank
    lora_rank_declared: bool  # grid.lora_rank was given (match_params forbids it)
    cells: Callable[[], CellSets]  # the data sets, computed on demand (only valid grids have them)
