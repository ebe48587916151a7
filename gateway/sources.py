"""Where the gateway reads its route table from. Anything with `async def load() -> RouteTable` is a source."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from gateway.routes import RouteTable


@runtime_checkable
class RouteSource(Protocol):
    async def load(self) -> RouteTable:
        """The current table. Raising keeps the gateway on the last table it loaded."""
        ...


class InMemoryRouteSource:
    """A table held in memory; tests and embedders replace it with `set`."""

    def __init__(self, table: RouteTable | None = None) -> None:
        self._table = table or RouteTable()

    def set(self, table: RouteTable) -> None:
        self._table = table

    async def load(self) -> RouteTable:
        return self._table


class JsonFileRouteSource:
    """A JSON file in RouteTable's shape, re-read only when it changes.

    A missing file means no routes yet. Writers should replace the file atomically (write a temporary file in the same
    folder, then rename it over); a half-written file fails validation and the previous table stays in force.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int, int] | None = None
        self._table = RouteTable()

    async def load(self) -> RouteTable:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._table = None, RouteTable()
            return self._table
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if key != self._seen:
            table = RouteTable.model_validate_json(self.path.read_bytes())  # raises on a bad file: keep the old one
            self._seen, self._table = key, table
        return self._table
