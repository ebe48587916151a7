"""Domain errors: what the control plane refuses and why, independent of how the API reports it.

`Conflict` is a rule of the current state (the endpoint is busy, the GPUs are taken: retrying later may work);
`Invalid` is input the caller must change (a config that cannot fit, an unknown GPU type). Both name the field at
fault. The API maps them to 409 and 422 in one place (api/errors.py).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    def __init__(self, message: str, field: str | None = None, **details: Any):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details


class Conflict(DomainError):
    """The request is well-formed but the current state forbids it."""


class Invalid(DomainError):
    """The request cannot be carried out as given; `problems` lists every reason (default: the message)."""

    def __init__(self, message: str, field: str | None = None, problems: list[str] | None = None, **details: Any):
        super().__init__(message, field, **details)
        self.problems = problems or [message]


def invalid_field(field: str, message: str) -> Invalid:
    """One field's problem, reported as "field: message"."""
    return Invalid(f"{field}: {message}", field, problems=[message])
