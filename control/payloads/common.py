"""Shared field rules: name patterns, and the bounds of free-form JSON a request may store."""

from __future__ import annotations

import json
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from core.gpu_types import CANONICAL_GPU_TYPES, GPU_TYPE_NAMES, canonical_gpu_type

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Identifiers people write (GPU types, architectures): letters, digits and . _ - only, starting with one of the first.
IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_JSON_FIELD_ITEMS = 32
MAX_JSON_FIELD_DEPTH = 4
MAX_JSON_FIELD_BYTES = 16 * 1024


def _small_json(value: Any) -> Any:
    """At most MAX_JSON_FIELD_DEPTH levels of objects/lists and MAX_JSON_FIELD_BYTES as JSON."""
    level = [value]
    for _ in range(MAX_JSON_FIELD_DEPTH):
        level = [child for node in level if isinstance(node, (dict, list))
                 for child in (node.values() if isinstance(node, dict) else node)]
    if any(isinstance(node, (dict, list)) and node for node in level):
        raise ValueError(f"nests deeper than {MAX_JSON_FIELD_DEPTH} levels")
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_JSON_FIELD_BYTES:
        raise ValueError(f"is {size:,} bytes as JSON, more than {MAX_JSON_FIELD_BYTES:,}")
    return value


# A small free-form JSON object stored as given (a benchmark's details, a metric selector).
SmallJsonObject = Annotated[dict[str, Any], Field(max_length=MAX_JSON_FIELD_ITEMS), AfterValidator(_small_json)]


# A GPU type: one of the catalog's names or aliases (core/gpu_types.py), stored as its canonical name. The schema's
# enum lists every accepted spelling; the API also takes them in any case.
GpuTypeName = Annotated[str, Field(max_length=64, json_schema_extra={"enum": list(GPU_TYPE_NAMES)}, description=(
    f"GPU type: a catalog name ({', '.join(CANONICAL_GPU_TYPES)}) or an alias such as h100_sxm")),
    AfterValidator(canonical_gpu_type)]


def _json_number(value: Any) -> Any:
    if isinstance(value, (bool, str)):
        raise ValueError("must be a number")
    return value


def _json_boolean(value: Any) -> Any:
    if value is not None and not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


_JSON_NUMBER, _JSON_BOOLEAN = BeforeValidator(_json_number), BeforeValidator(_json_boolean)


def _json_check(annotation: Any) -> BeforeValidator | None:
    """The check for a field of type int, float or bool (or one of them or None), else None."""
    args = [arg for arg in get_args(annotation) if arg is not type(None)] if get_origin(annotation) in (
        Union, UnionType) else [annotation]
    if len(args) != 1 or args[0] not in (int, float, bool):
        return None
    return _JSON_BOOLEAN if args[0] is bool else _JSON_NUMBER


class RequestBody(BaseModel):
    """A request body (or part of one): a number field takes only JSON numbers and a boolean field only true or
    false, as the schema says; pydantic alone would also read true as 1, "5" as 5 and "yes" as true."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for field in cls.model_fields.values():
            check = _json_check(field.annotation)
            if check is not None and check not in field.metadata:
                field.metadata.append(check)
                changed = True
        if changed:
            cls.model_rebuild(force=True, raise_errors=False)
