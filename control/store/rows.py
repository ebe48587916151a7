"""The base of the rows the stores return: frozen pydantic models, so a row read from PostgreSQL is typed (UUIDs,
datetimes, enums, JSONB as dicts) and cannot be changed by a caller believing it writes the database."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self

import asyncpg
from pydantic import BaseModel, ConfigDict


class Row(BaseModel):
    """One result row. Every column of the query must be a field (extra columns are an error, not dropped)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def of(cls, record: asyncpg.Record) -> Self:
        return cls.model_validate(dict(record))

    @classmethod
    def one(cls, record: asyncpg.Record | None) -> Self | None:
        """None when the query found no row."""
        return None if record is None else cls.of(record)

    @classmethod
    def many(cls, records: Iterable[asyncpg.Record]) -> list[Self]:
        return [cls.of(record) for record in records]
