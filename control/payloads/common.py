"""Shared field rules: name patterns, and the bounds of free-form JSON a request may store."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, Field

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
