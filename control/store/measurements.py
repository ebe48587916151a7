"""Measurement rows: written once (an import, a benchmark level, a production window), never changed, each in
one project. Lists page in the order rows were written, by an opaque cursor."""

from __future__ import annotations

import base64
from datetime import datetime
from uuid import UUID, uuid4

import asyncpg

from control.payloads.measurements import MeasurementCreate
from control.store.rows import Row


class MeasurementRow(Row):
    id: UUID
    project_id: UUID
    model_id: UUID | None
    model_name: str
    architecture: str | None
    parameter_count: int | None
    gpu_type: str
    runtime: str
    runtime_version: str | None
    precision: str | None
    quantization: str | None
    tp: int
    pp: int
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    input_tokens: int
    output_tokens: int
    concurrency: int
    ttft_p50_ms: float
    ttft_p99_ms: float | None
    tpot_p50_ms: float
    tpot_p99_ms: float | None
    throughput_tps: float | None
    request_count: int | None
    source_kind: str
    source_id: str | None
    window_start: datetime | None
    window_end: datetime | None
    source_key: str | None
    created_at: datetime

    def out(self) -> dict:
        """The API's shape: the source fields as one object."""
        fields = self.model_dump(exclude={"source_kind", "source_id", "window_start", "window_end", "source_key"})
        return {**fields, "source": {"kind": self.source_kind, "id": self.source_id,
                                     "window_start": self.window_start, "window_end": self.window_end}}


_FIELDS = ("model_id", "model_name", "architecture", "parameter_count", "gpu_type", "runtime", "runtime_version",
           "precision", "quantization", "tp", "pp", "max_num_seqs", "max_num_batched_tokens", "input_tokens",
           "output_tokens", "concurrency", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms",
           "throughput_tps", "request_count")
_COLUMNS = ("id, project_id, " + ", ".join(_FIELDS) +
            ", source_kind, source_id, window_start, window_end, source_key, created_at")
_INSERT = (f"INSERT INTO measurements (project_id, {', '.join(_FIELDS)}, source_kind, source_id, window_start, "
           f"window_end, source_key) VALUES ({', '.join(f'${i}' for i in range(1, len(_FIELDS) + 7))}) "
           f"ON CONFLICT (project_id, source_key) WHERE source_key IS NOT NULL DO NOTHING RETURNING {_COLUMNS}")


def _values(project_id: UUID, item: MeasurementCreate, source_key: str | None) -> tuple:
    return (project_id, *(getattr(item, name) for name in _FIELDS), item.source.kind.value, item.source.id,
            item.source.window_start, item.source.window_end, source_key)


_BULK_INSERT = (f"INSERT INTO measurements (id, project_id, {', '.join(_FIELDS)}, source_kind, source_id, "
                f"window_start, window_end) VALUES ({', '.join(f'${i}' for i in range(1, len(_FIELDS) + 7))})")


async def insert_measurements(conn: asyncpg.Connection, project_id: UUID, items: list[MeasurementCreate]) -> list[UUID]:
    """All of `items` in one transaction (all or nothing); their ids, in order."""
    ids = [uuid4() for _ in items]
    async with conn.transaction():
        await conn.executemany(_BULK_INSERT, [(ident, *_values(project_id, item, None)[:-1])
                                              for ident, item in zip(ids, items)])
    return ids


async def record_measurement(conn: asyncpg.Connection, project_id: UUID, item: MeasurementCreate,
                             source_key: str) -> MeasurementRow:
    """Write once per `source_key`: a second call returns the row the first one wrote."""
    row = await conn.fetchrow(_INSERT, *_values(project_id, item, source_key))
    if row is None:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM measurements WHERE project_id = $1 AND source_key = $2",
                                  project_id, source_key)
    return MeasurementRow.of(row)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"m{seq}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    """ValueError for anything this module did not write."""
    text = base64.urlsafe_b64decode(cursor.encode()).decode()
    if not text.startswith("m") or not text[1:].isdigit() or len(text) > 20:
        raise ValueError("not a measurements cursor")
    return int(text[1:])


async def list_measurements(conn: asyncpg.Connection, project_id: UUID, *, model_id: UUID | None = None,
                            gpu_type: str | None = None, runtime: str | None = None, source_id: str | None = None,
                            limit: int = 100, cursor: str | None = None) -> tuple[list[MeasurementRow], str | None]:
    """The project's measurements, oldest first, and the cursor of the next page (None on the last)."""
    conditions, args = ["project_id = $1"], [project_id]
    for column, value in (("model_id", model_id), ("gpu_type", gpu_type), ("runtime", runtime),
                          ("source_id", source_id)):
        if value is not None:
            args.append(value)
            conditions.append(f"{column} = ${len(args)}")
    if cursor is not None:
        args.append(decode_cursor(cursor))
        conditions.append(f"seq > ${len(args)}")
    args.append(limit + 1)
    records = await conn.fetch(
        f"SELECT seq, {_COLUMNS} FROM measurements WHERE {' AND '.join(conditions)} ORDER BY seq "
        f"LIMIT ${len(args)}", *args)
    rows = [MeasurementRow.model_validate({k: v for k, v in record.items() if k != "seq"}) for record in records]
    if len(rows) > limit:
        return rows[:limit], encode_cursor(records[limit - 1]["seq"])
    return rows, None


async def models_of_project(conn: asyncpg.Connection, project_id: UUID, model_ids: set[UUID]) -> set[UUID]:
    """Which of `model_ids` are the project's models."""
    if not model_ids:
        return set()
    return {record["id"] for record in await conn.fetch(
        "SELECT id FROM models WHERE id = ANY($1) AND project_id = $2", list(model_ids), project_id)}
