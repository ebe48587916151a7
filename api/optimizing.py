"""Shared by the endpoints and optimizations routers: record an optimization (and, for an endpoint, its new
configuration) in one transaction, then start OptimizeDeployment. Everything is validated before this is called
(control/planning.py, control/capacity.py): a refused request writes nothing."""

from __future__ import annotations

from uuid import UUID

import asyncpg
from temporalio.client import Client

from budsim.schemas import OptimizationRequest
from control.capacity import ConfigurationPlan
from control.payloads.deployments import EndpointConfigRequest
from control.payloads.optimization import CalibrationSource, OptimizeDeploymentInput
from control.store import endpoints, optimizations
from core.settings import Settings
from workflows.starters import optimization_workflow_id, start_optimize_deployment


async def start_optimization(pool: asyncpg.Pool, temporal: Client, settings: Settings, *, project_id: UUID,
                             model_id: UUID, cluster_id: UUID, request: OptimizationRequest,
                             endpoint_id: UUID | None = None, body: EndpointConfigRequest | None = None,
                             plan: ConfigurationPlan | None = None):
    """The optimization row (with its workflow id) and, given an endpoint's `body` and `plan`, the endpoint's
    configuration with optimization_status RUNNING, in one transaction; then the workflow. Returns the row."""
    async with pool.acquire() as conn, conn.transaction():
        row = await optimizations.insert(conn, project_id, endpoint_id, model_id, cluster_id,
                                         request.model_dump(mode="json"))
        workflow_id = optimization_workflow_id(row.id, endpoint_id)
        await optimizations.set_workflow_id(conn, row.id, workflow_id)
        if endpoint_id is not None and body is not None and plan is not None:
            await endpoints.set_configuration(
                conn, endpoint_id, runtime=body.runtime, method=body.optimization_method,
                targets=body.performance_targets.model_dump(),
                config=plan.config.model_dump() if plan.config else None, replicas=plan.replicas,
                resources=plan.resources.model_dump() if plan.resources else None, recommendation=None,
                optimization_status="RUNNING", optimization_workflow_id=workflow_id)
    run = OptimizeDeploymentInput(optimization_id=row.id, endpoint_id=endpoint_id, request=request,
                                  calibrate_from=CalibrationSource(project_id=project_id, model_id=model_id))
    try:
        await start_optimize_deployment(temporal, settings, run)
    except Exception:
        # Temporal refused or was unreachable: no run will ever record an outcome, so record the failure now.
        async with pool.acquire() as conn, conn.transaction():
            reason = "the optimization could not be started"
            await optimizations.record_result(conn, row.id, "FAILED", None, reason)
            if endpoint_id is not None:
                await endpoints.record_recommendation(conn, endpoint_id, "FAILED", None, None, None, None)
        raise
    async with pool.acquire() as conn:
        return await optimizations.get(conn, row.id, project_id)
