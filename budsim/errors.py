"""Errors the optimizer raises for input a caller must fix (the API turns them into 422)."""

from __future__ import annotations


class InvalidRequest(ValueError):
    """A request field is unknown or impossible (unknown GPU, TP 3 on a 32-head model, a negative target).

    Infeasible *targets* are not an error: the optimizer answers them with a normal result that says what fails.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
