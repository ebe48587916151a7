"""Reading OpenAI-style server-sent events: `data: {json}` events ending with `data: [DONE]`."""

from __future__ import annotations

import json
from typing import Any

DONE = "[DONE]"


def parse_sse(text: str) -> list[dict[str, Any] | str]:
    """The data payloads of an SSE body in order: decoded JSON objects, and the final "[DONE]" marker as a string.

    Raises ValueError on a line that is neither blank, a comment, nor a `data:` field, or on malformed JSON.
    """
    events: list[dict[str, Any] | str] = []
    for line in text.splitlines():
        if not line or line.startswith(":"):
            continue
        if not line.startswith("data:"):
            raise ValueError(f"not an SSE data line: {line!r}")
        payload = line[len("data:") :].strip()
        events.append(DONE if payload == DONE else json.loads(payload))
    return events
