"""Optimization rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from control.store.rows import Row

COLUMNS = "id, project_id, endpoint_id, model_id, cluster_id, request, status, result, error, workflow_id, created_at, updated_at"

# RUNNING until OptimizeDeployment records its outcome (also an endpoint's optimization_status)
OptimizationStatus = Literal["RUNNING", "SUCCEEDED", "FAILED"]


class OptimizationRow(Row):
    id: UUID
    project_id: UUID
    endpoint_id: UUID | None  # None: a standalone run (POST /api/optimizations, or Reoptimize's advice)
    model_id: UUID
    cluster_id: UUID
    request: dict[str, Any]  # budsim's OptimizationRequest
    status: OptimizationStatus
    result: dict[str, Any] | None  # budsim's OptimizationResult
    error: str | None
    workflow_id: str | None
    created_at: datetime
    updated_at: datetime


async def insert(conn: asyncpg.Connection, project_id: UUID, endpoint_id: UUID | None, model_id: UUID,
                 cluster_id: UUID, request: dict) -> OptimizationRow:
    return OptimizationRow.of(await conn.fetchrow(
        f"""INSERT INTO optimizations (project_id, endpoint_id, model_id, cluster_id, request)
            VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}""",
        project_id, endpoint_id, model_id, cluster_id, request))


async def set_workflow_id(conn: asyncpg.Connection, optimization_id: UUID, workflow_id: str) -> None:
    await conn.execute("UPDATE optimizations SET workflow_id = $2 WHERE id = $1", optimization_id, workflow_id)


async def get(conn: asyncpg.Connection, optimization_id: UUID, project_id: UUID) -> OptimizationRow | None:
    return OptimizationRow.one(await conn.fetchrow(
        f"SELECT {COLUMNS} FROM optimizations WHERE id = $1 AND project_id = $2", optimization_id, project_id))


async def record_result(conn: asyncpg.Connection, optimization_id: UUID, status: OptimizationStatus, result: dict | None,
                        error: str | None) -> None:
    await conn.execute("UPDATE optimizations SET status = $2, result = $3, error = $4, updated_at = now() WHERE id = $1",
                       optimization_id, status, result, error)


async def get_by_workflow_id(conn: asyncpg.Connection, workflow_id: str) -> OptimizationRow | None:
    """The optimization an OptimizeDeployment run records (what a deploy accepted during it waits for)."""
    return OptimizationRow.one(await conn.fetchrow(f"SELECT {COLUMNS} FROM optimizations WHERE workflow_id = $1",
                                                   workflow_id))
