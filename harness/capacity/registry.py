"""The capacity-family registry: each adapter family is one `Family`, registered with its metadata.

    from harness.capacity.registry import FAMILIES, get_family
    get_family("mole").knobs                 # ('experts', 'top_k', 'router_aux_weight')
    get_family("moe")                        # InputError: unknown capacity family 'moe' (did you mean 'mole'?) ...
    FAMILIES.names()                         # ['lora', 'dora', 'multi_lora', 'mole']

The definitions live in harness.capacity.families (registered when harness.capacity is imported, then
frozen), in the way PEFT registers a method once with `register_peft_method`: nothing else in the
harness compares family names, so a new family (VeRA, PiSSA, ...) is one more `Family` there. This
module is the bottom of the capacity package: it imports nothing from the harness but the errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from harness.errors import InputError, unknown_name_message

# (in_features, out_features) of every adapted linear layer of one transformer block
LayerDims = list[tuple[int, int]]


def _no_knobs(v: dict[str, Any], domains: list[str], subtasks: list[str], eval_map: dict[str, str]) -> dict:
    return {}


def _no_problems(v: dict[str, Any], where: Callable[[str], str], grid: Any) -> list[str]:
    return []


def _no_suffix(spec: Any) -> str:
    return ""


@dataclass(frozen=True)
class Family:
    """One way of adding trainable capacity to a frozen base model, with everything the harness asks
    of it. Callables take the capacity setting as a plain dict `v` (a grid.capacity entry with the
    sweep-wide capacity block filled in) or the resolved AdapterSpec, never a family name."""

    name: str  # what `capacity.family` says in a sweep
    summary: str  # one line for docs and error messages
    # Trainable parameters of one transformer block at `rank`: (dims, rank, experts, n_groups) -> count.
    # A test checks every family's count against the parameters its `adapted` class really creates.
    layer_params: Callable[[LayerDims, int, int | None, int | None], int]
    # The implementation (harness.capacity.adapters): attach(model, spec) and load(model, path, spec,
    # trainable) class methods; instances train, route, save and merge (`merged()`).
    adapted: type
    knobs: tuple[str, ...] = ()  # capacity fields only this family reads (documented in CapacitySpec)
    # v, the trial's domains and subtasks, capacity.eval_map -> the AdapterSpec fields of these knobs
    resolve_knobs: Callable[[dict[str, Any], list[str], list[str], dict[str, str]], dict[str, Any]] = _no_knobs
    # v, where(field) -> its field path, the CapacityGrid -> problems with this family's knobs
    knob_problems: Callable[[dict[str, Any], Callable[[str], str], Any], list[str]] = _no_problems
    label_suffix: Callable[[Any], str] = _no_suffix  # AdapterSpec -> what follows the name: '-e4k2'
    # Ids keep the layout from before families existed (rank and alpha at the top of the identity):
    # true for plain LoRA only, so its finished records are still found by --resume.
    legacy_ids: bool = False


class FamilyRegistry:
    """Families by name, in registration order; frozen once the shipped definitions are in."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        self._frozen = False

    def register(self, family: Family) -> Family:
        if self._frozen:
            raise RuntimeError(f"capacity family {family.name!r}: the registry is frozen after import; "
                               "add the definition to harness/capacity/families.py")
        if family.name in self._families:
            raise ValueError(f"capacity family {family.name!r} is already registered")
        self._families[family.name] = family
        return family

    def freeze(self) -> None:
        self._frozen = True

    def get(self, name: str) -> Family:
        """The family called `name`; InputError with a did-you-mean and the known names otherwise."""
        try:
            return self._families[name]
        except (KeyError, TypeError):
            raise InputError(self.unknown(name)) from None

    def unknown(self, name: Any) -> str:
        return unknown_name_message("capacity family", str(name), self._families)

    def names(self) -> list[str]:
        return list(self._families)

    def __contains__(self, name: object) -> bool:
        return name in self._families

    def __iter__(self) -> Iterator[Family]:
        return iter(self._families.values())


FAMILIES = FamilyRegistry()


def register_family(family: Family) -> Family:
    return FAMILIES.register(family)


def get_family(name: str) -> Family:
    return FAMILIES.get(name)
