"""Shared by the endpoints and optimizations routers: build budsim's request from registry and cluster facts,
check a manual config synchronously, and start OptimizeDeployment."""

from __future__ import annotations

from uuid import UUID

import asyncpg
from temporalio.client import Client

from api.errors import ApiError
from budsim.errors import InvalidRequest
from budsim.schemas import Method, OptimizationRequest, Targets, Workload
from budsim.search import validate_request
from core.gpu_types import canonical_gpu_type
from core.model_facts import ModelArchitecture
from control.payloads.deployments import PerformanceTargets, RuntimeConfig, WorkloadSpec
from control.payloads.optimization import OptimizeDeploymentInput
from control.planning import fit_problems, serving_config
from core.settings import Settings
from control.store import endpoints, optimizations
from workflows.ids import optimize_workflow_id
from workflows.optimize_deployment import OptimizeDeployment


def unprocessable(field: str, message: str) -> ApiError:
    return ApiError(422, f"{field}: {message}", [{"field": field, "message": message}])


def model_facts(model: asyncpg.Record) -> ModelArchitecture:
    if model["status"] != "AVAILABLE" or not model["facts"]:
        raise ApiError(409, f"model {model['name']} is {model['status']}: only AVAILABLE models can be optimized or "
                            "deployed", {"field": "model_id", "status": model["status"]})
    return ModelArchitecture.model_validate(model["facts"])


def pick_gpu(cluster: asyncpg.Record, requested: str | None, field: str = "resources.gpu_type") -> tuple[str, dict]:
    pools = {pool["gpu_type"]: pool for pool in cluster["gpus"]}
    if requested is None:
        gpu_type = next(iter(pools))
    else:
        try:
            gpu_type = canonical_gpu_type(requested)
        except ValueError as error:
            raise unprocessable(field, str(error)) from None
    if gpu_type not in pools:
        raise unprocessable(field, f"cluster {cluster['name']} has no {gpu_type}; it has {', '.join(pools)}")
    return gpu_type, pools[gpu_type]


async def optimization_request(
    conn: asyncpg.Connection, *, model: asyncpg.Record, cluster: asyncpg.Record, endpoint_id: UUID | None,
    runtime: str, method: str, targets: PerformanceTargets, workload: WorkloadSpec, gpu_type: str | None,
    config: RuntimeConfig | None, replicas: int | None, gpu_field: str = "resources.gpu_type",
) -> OptimizationRequest:
    facts = model_facts(model)
    gpu_type, pool = pick_gpu(cluster, gpu_type, gpu_field)
    free, _ = await endpoints.free_gpus(conn, cluster["id"], gpu_type, excluding=endpoint_id)
    manual = None
    if method == "MANUAL":
        if config is None:
            raise unprocessable("config", "MANUAL optimization needs a config")
        manual = serving_config(config, replicas or 1, runtime, model["context_length"])
        problems = fit_problems(facts, gpu_type, manual, free)
        if problems:
            raise ApiError(422, "config: does not fit: " + "; ".join(problems),
                           [{"field": "config", "message": problem} for problem in problems])
    return OptimizationRequest(
        model=facts, gpu_type=gpu_type, available_gpus=free, runtime=runtime, method=Method(method),
        targets=Targets(**targets.model_dump()), workload=Workload(**workload.model_dump()), config=manual,
        max_model_len=(config.max_model_len if config and config.max_model_len else None),
        price_per_hour=pool.get("price_per_hour"),
    )


async def start_optimization(
    conn: asyncpg.Connection, temporal: Client, settings: Settings, *, project_id: UUID, endpoint_id: UUID | None,
    model_id: UUID, cluster_id: UUID, request: OptimizationRequest,
) -> asyncpg.Record:
    try:
        validate_request(request)
    except InvalidRequest as error:
        if error.field == "available_gpus":
            raise ApiError(409, f"no free {request.gpu_type} GPUs on the cluster", {"field": "cluster_id"}) from None
        raise ApiError(422, f"{error.field}: {error.message}", [{"field": error.field, "message": error.message}]) from None
    row = await optimizations.insert(conn, project_id, endpoint_id, model_id, cluster_id, request.model_dump(mode="json"))
    workflow_id = optimize_workflow_id(endpoint_id or row["id"], str(row["id"])[:8])
    await optimizations.set_workflow_id(conn, row["id"], workflow_id)
    await temporal.start_workflow(
        OptimizeDeployment.run, OptimizeDeploymentInput(optimization_id=row["id"], endpoint_id=endpoint_id, request=request),
        id=workflow_id, task_queue=settings.optimizer_queue)
    return {**dict(row), "workflow_id": workflow_id}
