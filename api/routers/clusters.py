"""Clusters: POST records the intent and starts RegisterCluster; GET shows what the workflow found."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from api.deps import PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.errors import not_found
from control import clusters as cluster_rules
from control.errors import Conflict
from control.payloads.clusters import ClusterSpec
from control.store import clusters
from workflows.ids import register_cluster_workflow_id
from workflows.starters import start_register_cluster

router = APIRouter(prefix="/api/clusters", tags=["clusters"])


class ClusterOut(BaseModel):
    id: UUID
    project_id: UUID | None
    name: str
    kind: str
    gpus: list[dict[str, Any]]
    simulation: dict[str, Any] | None = Field(default=None, description="local: how its simulated GPUs differ from the predictor")
    status: str
    facts: dict[str, Any]
    error: str | None
    workflow_id: str | None
    created_at: datetime
    updated_at: datetime


class ClusterAccepted(BaseModel):
    id: UUID
    status: str
    workflow_id: str


@router.post("", response_model=ClusterAccepted, status_code=status.HTTP_202_ACCEPTED)
async def register_cluster(
    spec: ClusterSpec, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep, principal: PrincipalDep
) -> dict:
    cluster_rules.accepted_spec(spec, settings)
    async with pool.acquire() as conn:
        row = await clusters.insert_cluster(conn, principal.project_id, cluster_rules.for_storage(spec, settings))
        if row is None:
            raise Conflict(f"cluster {spec.name!r} already exists in this project", "name")
        workflow_id = register_cluster_workflow_id(row.id)
        await clusters.set_workflow_id(conn, row.id, workflow_id)
    await start_register_cluster(temporal, settings, row.id, cluster_rules.for_workflow(spec))
    return {"id": row.id, "status": row.status, "workflow_id": workflow_id}


@router.get("", response_model=list[ClusterOut])
async def list_clusters(pool: PoolDep, principal: PrincipalDep) -> list[dict]:
    async with pool.acquire() as conn:
        return [row.model_dump() for row in await clusters.list_clusters(conn, principal.project_id)]


@router.get("/{cluster_id}", response_model=ClusterOut)
async def get_cluster(cluster_id: UUID, pool: PoolDep, principal: PrincipalDep) -> dict:
    async with pool.acquire() as conn:
        row = await clusters.get_cluster(conn, cluster_id, principal.project_id)
    if row is None:
        raise not_found("cluster", cluster_id)
    return row.model_dump()
