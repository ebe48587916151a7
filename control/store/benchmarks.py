"""Benchmark runs of endpoints: the request, each level's result as it finishes (written once per level index),
the run's status; and the short-lived inference keys a run's levels use."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from control.payloads.benchmarks import MAX_DURATION_S, BenchmarkStatus
from control.store.rows import Row

ACTIVE = (BenchmarkStatus.PENDING.value, BenchmarkStatus.RUNNING.value)
STALE_AFTER_S = float(MAX_DURATION_S + 600)  # a level reports at its start and may then run the whole sweep


class BenchmarkRunRow(Row):
    id: UUID
    project_id: UUID
    endpoint_id: UUID
    request: dict[str, Any]
    status: BenchmarkStatus
    step: str | None
    levels: list[dict[str, Any]]
    error: str | None
    workflow_id: str | None
    created_at: datetime
    updated_at: datetime


_COLUMNS = "id, project_id, endpoint_id, request, status, step, levels, error, workflow_id, created_at, updated_at"


async def insert_run(conn: asyncpg.Connection, project_id: UUID, endpoint_id: UUID, request: dict[str, Any],
                     workflow_id_of) -> BenchmarkRunRow | None:
    """A PENDING run; None while another run of the endpoint is PENDING or RUNNING (one sweep at a time). A run
    not updated for longer than the longest sweep (its workflow was terminated) no longer blocks."""
    async with conn.transaction():
        await conn.execute("SELECT id FROM endpoints WHERE id = $1 FOR UPDATE", endpoint_id)
        busy = await conn.fetchval(
            "SELECT count(*) FROM benchmark_runs WHERE endpoint_id = $1 AND status = ANY($2) "
            "AND updated_at > now() - make_interval(secs => $3)", endpoint_id, list(ACTIVE), STALE_AFTER_S)
        if busy:
            return None
        run_id = await conn.fetchval(
            "INSERT INTO benchmark_runs (project_id, endpoint_id, request, status) VALUES ($1, $2, $3, 'PENDING') "
            "RETURNING id", project_id, endpoint_id, request)
        return BenchmarkRunRow.of(await conn.fetchrow(
            f"UPDATE benchmark_runs SET workflow_id = $2 WHERE id = $1 RETURNING {_COLUMNS}",
            run_id, workflow_id_of(run_id)))


async def get_run(conn: asyncpg.Connection, run_id: UUID, project_id: UUID | None = None,
                  endpoint_id: UUID | None = None) -> BenchmarkRunRow | None:
    return BenchmarkRunRow.one(await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM benchmark_runs WHERE id = $1 AND ($2::uuid IS NULL OR project_id = $2) "
        f"AND ($3::uuid IS NULL OR endpoint_id = $3)", run_id, project_id, endpoint_id))


async def list_runs(conn: asyncpg.Connection, endpoint_id: UUID, project_id: UUID,
                    limit: int = 50) -> list[BenchmarkRunRow]:
    """The endpoint's most recent runs first."""
    return BenchmarkRunRow.many(await conn.fetch(
        f"SELECT {_COLUMNS} FROM benchmark_runs WHERE endpoint_id = $1 AND project_id = $2 "
        f"ORDER BY created_at DESC, id DESC LIMIT $3", endpoint_id, project_id, limit))


async def set_status(conn: asyncpg.Connection, run_id: UUID, status: BenchmarkStatus, step: str | None,
                     error: str | None = None) -> None:
    await conn.execute("UPDATE benchmark_runs SET status = $2, step = $3, error = $4, updated_at = now() "
                       "WHERE id = $1", run_id, status.value, step, error)


async def record_level(conn: asyncpg.Connection, run_id: UUID, level: dict[str, Any]) -> None:
    """Put a level's result at its index (a retried write replaces, never appends twice)."""
    async with conn.transaction():
        levels = await conn.fetchval("SELECT levels FROM benchmark_runs WHERE id = $1 FOR UPDATE", run_id)
        if levels is None:
            return
        kept = [item for item in levels if item.get("index") != level["index"]]
        kept.append(level)
        kept.sort(key=lambda item: item["index"])
        await conn.execute("UPDATE benchmark_runs SET levels = $2, updated_at = now() WHERE id = $1", run_id, kept)


# ------------------------------------------------------------------------------------------ the levels' keys
def key_name(run_id: UUID, index: int | None = None) -> str:
    """The run's keys share the prefix `benchmark-<run>/`; a level's is `benchmark-<run>/<index>/`."""
    return f"benchmark-{run_id}/" + (f"{index}/" if index is not None else "")


async def revoke_keys_named(conn: asyncpg.Connection, project_id: UUID, name_prefix: str) -> int:
    """Revoke every live key of the project whose name starts with `name_prefix`; how many were live."""
    pattern = name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    result = await conn.execute(
        "UPDATE inference_keys SET revoked_at = now(), updated_at = now() "
        "WHERE project_id = $1 AND name LIKE $2 AND revoked_at IS NULL", project_id, pattern)
    return int(result.split()[-1])
