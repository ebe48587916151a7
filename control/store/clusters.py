"""Cluster rows: intent written by the API, status and facts written by the RegisterCluster activities."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from control.payloads.clusters import ClusterFacts, ClusterSpec, ClusterStatus
from control.store.rows import Row

_COLUMNS = "id, project_id, name, kind, gpus, simulation, status, facts, error, workflow_id, created_at, updated_at"


class ClusterRow(Row):
    id: UUID
    project_id: UUID | None  # None: platform-wide (the local cluster), visible to every project
    name: str
    kind: Literal["local", "kubernetes"]
    gpus: list[dict[str, Any]]  # GpuInventory pools as registered
    simulation: dict[str, Any] | None  # SimulatedSilicon of a local cluster; None: the predicted speed
    status: ClusterStatus
    facts: dict[str, Any]  # ClusterFacts once probed
    error: str | None
    workflow_id: str | None
    created_at: datetime
    updated_at: datetime


class ClusterWithKubeconfigRow(ClusterRow):
    """Only backends read this shape: the API never returns the kubeconfig."""

    kubeconfig: str | None


async def insert_cluster(conn: asyncpg.Connection, project_id: UUID | None, spec: ClusterSpec) -> ClusterRow | None:
    """Insert a REGISTERING cluster; None when the name is taken in that project."""
    return ClusterRow.one(await conn.fetchrow(
        f"""
        INSERT INTO clusters (project_id, name, kind, gpus, kubeconfig, simulation)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (project_id, name) DO NOTHING
        RETURNING {_COLUMNS}
        """,
        project_id,
        spec.name,
        spec.kind,
        [pool.model_dump() for pool in spec.gpus],
        spec.kubeconfig,
        spec.simulation.model_dump() if spec.simulation else None,
    ))


async def set_workflow_id(conn: asyncpg.Connection, cluster_id: UUID, workflow_id: str) -> None:
    await conn.execute("UPDATE clusters SET workflow_id = $2 WHERE id = $1", cluster_id, workflow_id)


async def get_cluster(conn: asyncpg.Connection, cluster_id: UUID, project_id: UUID | None = None) -> ClusterRow | None:
    """A cluster visible to the project (its own or a platform-wide one); any cluster when project_id is None."""
    if project_id is None:
        return ClusterRow.one(await conn.fetchrow(f"SELECT {_COLUMNS} FROM clusters WHERE id = $1", cluster_id))
    return ClusterRow.one(await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM clusters WHERE id = $1 AND (project_id = $2 OR project_id IS NULL)",
        cluster_id,
        project_id,
    ))


async def get_platform_cluster_by_name(conn: asyncpg.Connection, name: str) -> ClusterRow | None:
    return ClusterRow.one(
        await conn.fetchrow(f"SELECT {_COLUMNS} FROM clusters WHERE project_id IS NULL AND name = $1", name))


async def list_clusters(conn: asyncpg.Connection, project_id: UUID) -> list[ClusterRow]:
    return ClusterRow.many(await conn.fetch(
        f"SELECT {_COLUMNS} FROM clusters WHERE project_id = $1 OR project_id IS NULL ORDER BY created_at", project_id
    ))


async def update_status(
    conn: asyncpg.Connection,
    cluster_id: UUID,
    status: ClusterStatus,
    facts: ClusterFacts | None,
    error: str | None,
) -> bool:
    """Idempotent: writing the same status twice leaves the same row."""
    result = await conn.execute(
        """
        UPDATE clusters
        SET status = $2, facts = COALESCE($3, facts), error = $4, updated_at = now()
        WHERE id = $1
        """,
        cluster_id,
        status.value,
        facts.model_dump() if facts else None,
        error,
    )
    return result.endswith(" 1")


async def get_cluster_with_kubeconfig(conn: asyncpg.Connection, cluster_id: UUID) -> ClusterWithKubeconfigRow | None:
    """For backends only: the API never returns the kubeconfig."""
    return ClusterWithKubeconfigRow.one(
        await conn.fetchrow(f"SELECT {_COLUMNS}, kubeconfig FROM clusters WHERE id = $1", cluster_id))


async def seal_plain_kubeconfigs(conn: asyncpg.Connection, seal: Callable[[str], str], sealed_prefix: str) -> int:
    """Seal every kubeconfig stored before kubeconfigs were sealed at rest; returns how many were sealed."""
    rows = await conn.fetch("SELECT id, kubeconfig FROM clusters WHERE kubeconfig IS NOT NULL "
                            "AND NOT starts_with(kubeconfig, $1) FOR UPDATE", sealed_prefix)
    for row in rows:
        await conn.execute("UPDATE clusters SET kubeconfig = $2 WHERE id = $1", row["id"], seal(row["kubeconfig"]))
    return len(rows)
