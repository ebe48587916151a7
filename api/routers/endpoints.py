"""Endpoints (the seed's Stages 3-4): create, configure (automatic or manual), deploy, status, scale, autoscale,
delete."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, status
from pydantic import BaseModel
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.deps import PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.errors import ApiError, not_found
from api.optimizing import model_facts, optimization_request, pick_gpu, start_optimization, unprocessable
from control.payloads.autoscaling import AutoscaleInput, AutoscalingSpec
from control.payloads.monitoring import ReoptimizeInput
from control.payloads.deployments import (
    DeployEndpointInput,
    DeployRequest,
    EndpointConfigRequest,
    EndpointCreate,
    EndpointRef,
    EndpointStatus,
    Resources,
    ScaleEndpointInput,
    ScaleRequest,
)
from control.store import clusters, endpoints, models, routes
from workflows.autoscale_endpoint import AutoscaleEndpoint
from workflows.deploy_endpoint import DeployEndpoint
from workflows.reoptimize import Reoptimize
from workflows.ids import (
    autoscale_endpoint_workflow_id,
    reoptimize_endpoint_workflow_id,
    delete_endpoint_workflow_id,
    deploy_endpoint_workflow_id,
    scale_endpoint_workflow_id,
)
from workflows.manage_endpoint import DeleteEndpoint, ScaleEndpoint

router = APIRouter(prefix="/api/endpoints", tags=["endpoints"])
BUSY = {EndpointStatus.DEPLOYING.value, EndpointStatus.DELETING.value}


class Deployment(BaseModel):
    runtime: str
    replicas: int
    ready_replicas: int
    config: dict[str, Any] | None
    resources: dict[str, Any] | None


class EndpointOut(BaseModel):
    """The seed's response shape plus the current step and, on failure, the step and reason."""

    id: UUID
    project_id: UUID
    name: str
    model_id: UUID
    cluster_id: UUID
    status: str
    step: str | None
    deployment: Deployment
    inference_url: str | None
    workflow_id: str | None
    error: dict[str, Any] | None
    optimization_method: str | None
    performance_targets: dict[str, Any]
    optimization_status: str | None
    optimization_workflow_id: str | None
    recommendation: dict[str, Any] | None
    health: dict[str, Any] | None
    autoscaling: dict[str, Any] | None
    autoscaling_state: dict[str, Any] | None
    monitoring: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


def endpoint_out(row) -> dict:
    return {**dict(row), "deployment": {"runtime": row["runtime"], "replicas": row["replicas"],
                                        "ready_replicas": row["ready_replicas"],
                                        "config": row["config"], "resources": row["resources"]}}


async def owned_endpoint(conn, endpoint_id: UUID, project_id: UUID):
    row = await endpoints.get_endpoint(conn, endpoint_id, project_id)
    if row is None or row["status"] == EndpointStatus.DELETED:
        raise not_found("endpoint", endpoint_id)
    return row


@router.post("", response_model=EndpointOut, status_code=status.HTTP_201_CREATED)
async def create_endpoint(body: EndpointCreate, pool: PoolDep, principal: PrincipalDep) -> dict:
    if body.project_id != principal.project_id:
        raise not_found("project", body.project_id)
    async with pool.acquire() as conn:
        if await models.get_model(conn, body.model_id, principal.project_id) is None:
            raise not_found("model", body.model_id)
        if await clusters.get_cluster(conn, body.cluster_id, principal.project_id) is None:
            raise not_found("cluster", body.cluster_id)
        owner = await routes.name_owner(conn, body.name)
        if owner is not None and owner != principal.project_id:
            raise ApiError(409, f"the model name {body.name!r} belongs to another project", {"field": "name"})
        row = await endpoints.insert_endpoint(conn, body)
        if row is None:
            raise ApiError(409, f"an endpoint named {body.name!r} exists (names are the model names clients use)",
                           {"field": "name"})
        return endpoint_out(row)


@router.get("", response_model=list[EndpointOut])
async def list_endpoints(pool: PoolDep, principal: PrincipalDep) -> list[dict]:
    async with pool.acquire() as conn:
        return [endpoint_out(row) for row in await endpoints.list_endpoints(conn, principal.project_id)]


@router.get("/{endpoint_id}", response_model=EndpointOut)
async def get_endpoint(endpoint_id: UUID, pool: PoolDep, principal: PrincipalDep) -> dict:
    async with pool.acquire() as conn:
        return endpoint_out(await owned_endpoint(conn, endpoint_id, principal.project_id))


@router.put("/{endpoint_id}/config", response_model=EndpointOut, status_code=status.HTTP_202_ACCEPTED)
async def configure_endpoint(endpoint_id: UUID, body: EndpointConfigRequest, pool: PoolDep, temporal: TemporalDep,
                             settings: SettingsDep, principal: PrincipalDep) -> dict:
    """MANUAL configs are checked now (422 with the reasons); REGRESSOR/HEURISTIC start OptimizeDeployment and the
    recommended config becomes the endpoint's config when it finishes."""
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
        if endpoint["status"] in BUSY:
            raise ApiError(409, f"endpoint is {endpoint['status']}: wait for it to settle")
        model = await models.get_model(conn, endpoint["model_id"])
        cluster = await clusters.get_cluster(conn, endpoint["cluster_id"])
        model_facts(model)
        gpu_type, _ = pick_gpu(cluster, body.resources.gpu_type if body.resources else None)
        request = await optimization_request(
            conn, model=model, cluster=cluster, endpoint_id=endpoint_id, runtime=body.runtime,
            method=body.optimization_method, targets=body.performance_targets, workload=body.workload,
            gpu_type=gpu_type, config=body.config, replicas=body.replicas)
        if body.optimization_method == "MANUAL":
            config = body.config
            gpus = config.tensor_parallel_size * config.pipeline_parallel_size
            if body.resources and body.resources.gpu_count != gpus:
                raise unprocessable("resources.gpu_count", f"must equal tensor_parallel_size x pipeline_parallel_size = {gpus}")
            resources = body.resources or Resources(gpu_type=gpu_type, gpu_count=gpus)
            resources = resources.model_copy(update={"gpu_type": gpu_type})
            await endpoints.set_configuration(
                conn, endpoint_id, runtime=body.runtime, method="MANUAL", targets=body.performance_targets.model_dump(),
                config=config.model_dump(), replicas=body.replicas or 1, resources=resources.model_dump(),
                recommendation=None, optimization_status="RUNNING", optimization_workflow_id=None)
        else:
            await endpoints.set_configuration(
                conn, endpoint_id, runtime=body.runtime, method=body.optimization_method,
                targets=body.performance_targets.model_dump(), config=None, replicas=body.replicas or 1,
                resources=None, recommendation=None, optimization_status="RUNNING", optimization_workflow_id=None)
        # MANUAL runs too: the workflow predicts the config's performance and checks the targets.
        run = await start_optimization(conn, temporal, settings, project_id=principal.project_id,
                                       endpoint_id=endpoint_id, model_id=model["id"], cluster_id=cluster["id"],
                                       request=request)
        await conn.execute("UPDATE endpoints SET optimization_workflow_id = $2 WHERE id = $1", endpoint_id,
                           run["workflow_id"])
        return endpoint_out(await endpoints.get_endpoint(conn, endpoint_id))


@router.post("/{endpoint_id}/deploy", response_model=EndpointOut, status_code=status.HTTP_202_ACCEPTED)
async def deploy_endpoint(endpoint_id: UUID, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep,
                          principal: PrincipalDep, body: DeployRequest | None = None) -> dict:
    body = body or DeployRequest()
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
        model = await models.get_model(conn, endpoint["model_id"])
        if model["status"] != "AVAILABLE":
            raise ApiError(409, f"model {model['name']} is {model['status']}: only AVAILABLE models can be deployed",
                           {"field": "model_id", "status": model["status"]})
        if endpoint["status"] in BUSY or endpoint["status"] == EndpointStatus.RUNNING:
            raise ApiError(409, f"endpoint is {endpoint['status']}")
        if endpoint["config"] is None:
            waiting = endpoint["optimization_status"] == "RUNNING"
            raise ApiError(409, "the optimizer is still choosing a configuration" if waiting else
                           "the endpoint has no configuration: PUT /api/endpoints/{id}/config first")
        workflow_id = deploy_endpoint_workflow_id(endpoint_id)
        try:
            await temporal.start_workflow(
                DeployEndpoint.run, DeployEndpointInput(endpoint_id=endpoint_id, keep_on_failure=body.keep_on_failure),
                id=workflow_id, task_queue=settings.control_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
        except WorkflowAlreadyStartedError:
            raise ApiError(409, "a deployment of this endpoint is already running") from None
        await endpoints.set_workflow(conn, endpoint_id, workflow_id, body.keep_on_failure)
        return endpoint_out(await endpoints.get_endpoint(conn, endpoint_id))


@router.post("/{endpoint_id}/scale", response_model=EndpointOut, status_code=status.HTTP_202_ACCEPTED)
async def scale_endpoint(endpoint_id: UUID, body: ScaleRequest, pool: PoolDep, temporal: TemporalDep,
                         settings: SettingsDep, principal: PrincipalDep) -> dict:
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
        if endpoint["status"] != EndpointStatus.RUNNING:
            raise ApiError(409, f"only RUNNING endpoints scale; this one is {endpoint['status']}")
        if (endpoint["autoscaling"] or {}).get("enabled"):
            raise ApiError(409, "the autoscaler owns this endpoint's replica count: "
                                "PUT /api/endpoints/{id}/autoscaling with enabled false first", {"field": "replicas"})
        resources = Resources.model_validate(endpoint["resources"])
        free, total = await endpoints.free_gpus(conn, endpoint["cluster_id"], resources.gpu_type, excluding=endpoint_id)
        needed = resources.gpu_count * body.replicas
        if needed > free:
            raise ApiError(409, f"not enough GPUs: {body.replicas} replicas need {needed} {resources.gpu_type}, "
                                f"{free} free of {total}", {"field": "replicas"})
        try:
            await temporal.start_workflow(
                ScaleEndpoint.run, ScaleEndpointInput(endpoint_id=endpoint_id, replicas=body.replicas,
                                                      previous_replicas=endpoint["replicas"]),
                id=scale_endpoint_workflow_id(endpoint_id), task_queue=settings.control_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
        except WorkflowAlreadyStartedError:
            raise ApiError(409, "a scale of this endpoint is already running") from None
        await endpoints.set_status(conn, endpoint_id, EndpointStatus.RUNNING, f"scaling to {body.replicas}")
        return endpoint_out(await endpoints.get_endpoint(conn, endpoint_id))


@router.put("/{endpoint_id}/autoscaling", response_model=EndpointOut, status_code=status.HTTP_202_ACCEPTED)
async def configure_autoscaling(endpoint_id: UUID, body: AutoscalingSpec, pool: PoolDep, temporal: TemporalDep,
                                settings: SettingsDep, principal: PrincipalDep) -> dict:
    """The seed's Stage 4 block. Kubernetes gets a HorizontalPodAutoscaler; on the local cluster the
    AutoscaleEndpoint workflow scales by the same rules. A new body replaces the running autoscaler's spec."""
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
        if endpoint["status"] != EndpointStatus.RUNNING:
            raise ApiError(409, f"only RUNNING endpoints autoscale; this one is {endpoint['status']}")
        resources = Resources.model_validate(endpoint["resources"])
        free, total = await endpoints.free_gpus(conn, endpoint["cluster_id"], resources.gpu_type,
                                                excluding=endpoint_id)
        cluster = await clusters.get_cluster(conn, endpoint["cluster_id"])
        # Kubernetes: the HPA's ceiling is held up front (it adds pods without asking); local: the autoscaler
        # reserves as it scales, within the cluster.
        available = free if cluster["kind"] != "local" else total
        needed = resources.gpu_count * body.max_replicas
        if body.enabled and needed > available:
            raise ApiError(409, f"max_replicas {body.max_replicas} would need {needed} {resources.gpu_type}; "
                                f"{available} {'free' if cluster['kind'] != 'local' else 'in the cluster'}",
                           {"field": "max_replicas"})
        # Stored before the workflow starts, so its own first record is never overwritten by this one.
        await endpoints.set_autoscaling(conn, endpoint_id, body.model_dump(mode="json"), {"message": "applying"})
        await temporal.start_workflow(
            AutoscaleEndpoint.run,
            AutoscaleInput(endpoint_id=endpoint_id, sync_period_s=settings.autoscale_sync_s),
            id=autoscale_endpoint_workflow_id(endpoint_id), task_queue=settings.control_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="update", start_signal_args=[body])
        return endpoint_out(await endpoints.get_endpoint(conn, endpoint_id))


class MetricsOut(BaseModel):
    """The seed's Stage 5 for one endpoint: live metrics, alerts, measured vs predicted, re-optimization advice."""

    endpoint_id: UUID
    status: str
    monitoring: dict[str, Any] | None


@router.get("/{endpoint_id}/metrics", response_model=MetricsOut)
async def endpoint_metrics(endpoint_id: UUID, pool: PoolDep, principal: PrincipalDep) -> dict:
    """The last observation (the schedule refreshes it every BUD_REOPTIMIZE_INTERVAL_S; null before the first)."""
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
    return {"endpoint_id": endpoint_id, "status": endpoint["status"], "monitoring": endpoint["monitoring"]}


@router.post("/{endpoint_id}/metrics/refresh", response_model=MetricsOut, status_code=status.HTTP_202_ACCEPTED)
async def refresh_endpoint_metrics(endpoint_id: UUID, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep,
                                   principal: PrincipalDep, window_s: int = 300) -> dict:
    """Observe the endpoint now (Reoptimize for this endpoint alone) over the last `window_s` seconds."""
    if not 10 <= window_s <= 86_400:
        raise ApiError(422, "window_s must be between 10 and 86400 seconds", [{"field": "window_s"}])
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
        if endpoint["status"] != EndpointStatus.RUNNING:
            raise ApiError(409, f"only RUNNING endpoints have live metrics; this one is {endpoint['status']}")
    await temporal.start_workflow(
        Reoptimize.run, ReoptimizeInput(endpoint_id=endpoint_id, window_s=window_s,
                                        optimizer_queue=settings.optimizer_queue),
        id=reoptimize_endpoint_workflow_id(endpoint_id), task_queue=settings.control_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    return {"endpoint_id": endpoint_id, "status": endpoint["status"], "monitoring": endpoint["monitoring"]}


@router.delete("/{endpoint_id}", response_model=EndpointOut, status_code=status.HTTP_202_ACCEPTED)
async def delete_endpoint(endpoint_id: UUID, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep,
                          principal: PrincipalDep) -> dict:
    """Cancels a deployment in flight (it cleans up what it created), then removes the release, routes and GPUs."""
    async with pool.acquire() as conn:
        await owned_endpoint(conn, endpoint_id, principal.project_id)
        await temporal.start_workflow(
            DeleteEndpoint.run, EndpointRef(endpoint_id=endpoint_id), id=delete_endpoint_workflow_id(endpoint_id),
            task_queue=settings.control_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
        await endpoints.set_status(conn, endpoint_id, EndpointStatus.DELETING, "deleting")
        return endpoint_out(await endpoints.get_endpoint(conn, endpoint_id))
