"""StrictModel: the base of every model that reads user input (sweep blocks, data sources, generation
specs). Unknown keys are errors, a boolean is not a number or text, nan and inf are not numbers.

YAML reads unquoted true/false/yes/no/on/off as booleans and pydantic would take `lora_rank: [true]`
as rank 1 and `name: yes` as text only with a confusing message; here both get one that names the
field and the fix. Nothing here imports beyond pydantic.
"""

from __future__ import annotations

import json
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for name, info in cls.model_fields.items():
            where = _misplaced_bool(info.annotation, value.get(name)) if name in value else None
            if where is not None:
                raise PydanticCustomError(
                    "bool_not_number", "{field}: {value} is a boolean, not a number or text; YAML reads "
                    "unquoted true/false/yes/no/on/off as booleans: write the number, or quote the text",
                    {"field": name + where, "value": json.dumps(_first_bool(value[name]))})
        return value


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    if get_origin(annotation) is Literal:
        return any(isinstance(a, bool) for a in get_args(annotation))
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_admits_bool(a) for a in get_args(annotation))
    return False


def _list_item_types(annotation: Any) -> list[Any]:
    if get_origin(annotation) is list:
        return list(get_args(annotation)[:1])
    if get_origin(annotation) in (Union, types.UnionType):
        return [t for a in get_args(annotation) for t in _list_item_types(a)]
    return []


def _misplaced_bool(annotation: Any, value: Any) -> str | None:
    """'' (the value itself) or '[i]' (a list item) where a boolean sits in place of a number or
    text; None when there is none. Nested blocks check their own fields."""
    if isinstance(value, bool):
        return None if _admits_bool(annotation) else ""
    items = _list_item_types(annotation) if isinstance(value, list) else []
    if items and not any(_admits_bool(t) for t in items):
        return next((f"[{i}]" for i, v in enumerate(value) if isinstance(v, bool)), None)
    return None


def _first_bool(value: Any) -> Any:
    return value if isinstance(value, bool) else next(v for v in value if isinstance(v, bool))
