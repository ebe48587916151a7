"""Optimizations: predict and search configurations for a model on a cluster (budsim, as a workflow)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, status
from pydantic import BaseModel

from api.deps import PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.errors import not_found
from api.optimizing import start_optimization
from control.payloads.optimization import OptimizationCreate
from control.planning import check_request, optimization_request
from control.store import clusters, models, optimizations

router = APIRouter(prefix="/api/optimizations", tags=["optimizations"])


class OptimizationOut(BaseModel):
    id: UUID
    endpoint_id: UUID | None
    model_id: UUID
    cluster_id: UUID
    status: str
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    workflow_id: str | None
    created_at: datetime
    updated_at: datetime


@router.post("", response_model=OptimizationOut, status_code=status.HTTP_202_ACCEPTED)
async def create_optimization(body: OptimizationCreate, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep,
                              principal: PrincipalDep):
    async with pool.acquire() as conn:
        model = await models.get_model(conn, body.model_id, principal.project_id)
        if model is None:
            raise not_found("model", body.model_id)
        cluster = await clusters.get_cluster(conn, body.cluster_id, principal.project_id)
        if cluster is None:
            raise not_found("cluster", body.cluster_id)
        request = await optimization_request(
            conn, model=model, cluster=cluster, runtime=body.runtime, method=body.optimization_method,
            targets=body.performance_targets, workload=body.workload, gpu_type=body.gpu_type, config=body.config,
            replicas=body.replicas, gpu_field="gpu_type")
    check_request(request)
    return await start_optimization(pool, temporal, settings, project_id=principal.project_id, model_id=model.id,
                                    cluster_id=cluster.id, request=request)


@router.get("/{optimization_id}", response_model=OptimizationOut)
async def get_optimization(optimization_id: UUID, pool: PoolDep, principal: PrincipalDep):
    async with pool.acquire() as conn:
        row = await optimizations.get(conn, optimization_id, principal.project_id)
    if row is None:
        raise not_found("optimization", optimization_id)
    return row
