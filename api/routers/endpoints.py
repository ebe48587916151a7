"""Endpoints: create, configure (automatic or manual), deploy, status, scale, autoscale,
delete. Each route parses, checks with control/ (domain errors become 409/422 in api/errors.py), writes through the
stores and starts its workflow through workflows/starters.py."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from api.deps import PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.errors import not_found
from api.live_monitoring import EndpointAlerts, GpuRows, prometheus_view
from api.optimizing import start_optimization
from control import capacity
from control.planning import available_facts
from control.errors import Conflict, invalid_field
from control.payloads.autoscaling import MAX_SCALE_TO_ZERO_AFTER_S, AutoscalingSpec
from control.payloads.deployments import (
    DeployEndpointInput,
    DeployRequest,
    EndpointConfigRequest,
    EndpointCreate,
    EndpointStatus,
    RollingUpdateInput,
    ScaleEndpointInput,
    ScaleRequest,
)
from control import benchmarks as benchmark_rules
from control.payloads.benchmarks import BenchmarkInput, BenchmarkRequest, BenchmarkRunOut, BenchmarkStatus
from control.store import benchmarks as benchmark_runs
from control.store import clusters, endpoints, models
from workflows.ids import benchmark_endpoint_workflow_id, deploy_endpoint_workflow_id
from workflows.starters import (
    start_autoscaler,
    start_benchmark_endpoint,
    start_delete_endpoint,
    start_deploy_endpoint,
    start_endpoint_reoptimize,
    start_rolling_update,
    revert_rolling_update,
    start_scale_endpoint,
)

router = APIRouter(prefix="/api/endpoints", tags=["endpoints"])

class Deployment(BaseModel):
    """What the replicas run (the serving generation); before the first deploy, the configuration stored for it."""

    runtime: str
    replicas: int
    ready_replicas: int
    config: dict[str, Any] | None
    resources: dict[str, Any] | None
    generation: int | None = Field(default=None, description="counts the rolling updates; null before a deploy")


class PendingConfig(BaseModel):
    """A configuration stored by PUT /config that the replicas do not run yet: POST /deploy rolls it out."""

    runtime: str
    replicas: int
    config: dict[str, Any] | None = Field(description="null while the optimizer is still choosing it")
    resources: dict[str, Any] | None


class EndpointOut(BaseModel):
    """The endpoint's status, deployment and inference URL, the current step and, on failure, the step and reason."""

    id: UUID
    project_id: UUID
    name: str
    model_id: UUID
    cluster_id: UUID
    status: str
    step: str | None
    deployment: Deployment
    pending_config: PendingConfig | None
    rollout: dict[str, Any] | None = Field(description="the last rolling update: its plan, steps and outcome")
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
    serving = row.deployed or {"runtime": row.runtime, "replicas": row.replicas, "config": row.config,
                               "resources": row.resources}
    return {**row.model_dump(), "pending_config": capacity.pending_configuration(row),
            "deployment": {"runtime": serving["runtime"], "replicas": serving["replicas"],
                           "ready_replicas": row.ready_replicas, "config": serving["config"],
                           "resources": serving["resources"], "generation": serving.get("generation")}}


async def owned_endpoint(conn, endpoint_id: UUID, project_id: UUID):
    row = await endpoints.get_endpoint(conn, endpoint_id, project_id)
    if row is None or row.status == EndpointStatus.DELETED:
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
        await capacity.require_name_of_project(conn, body.name, principal.project_id)
        row = await endpoints.insert_endpoint(conn, body)
        if row is None:
            raise Conflict(f"an endpoint named {body.name!r} exists (names are the model names clients use)", "name")
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
    recommended config becomes the endpoint's config when it finishes. A refused PUT changes nothing."""
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
        model = await models.get_model(conn, endpoint.model_id)
        cluster = await clusters.get_cluster(conn, endpoint.cluster_id)
        plan = await capacity.plan_configuration(conn, endpoint, model, cluster, body)
    # MANUAL runs too: the workflow predicts the config's performance and checks the targets.
    await start_optimization(pool, temporal, settings, project_id=principal.project_id, model_id=model.id,
                             cluster_id=cluster.id, request=plan.request, endpoint_id=endpoint_id, body=body, plan=plan)
    async with pool.acquire() as conn:
        return endpoint_out(await endpoints.get_endpoint(conn, endpoint_id))


@router.post("/{endpoint_id}/deploy", response_model=EndpointOut, status_code=status.HTTP_202_ACCEPTED)
async def deploy_endpoint(endpoint_id: UUID, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep,
                          principal: PrincipalDep, body: DeployRequest | None = None) -> dict:
    """Accepted while the optimizer is still choosing the config: the deploy waits for it (step "waiting for the
    optimizer") and fails with the optimizer's reason when no config meets the targets.

    On a RUNNING endpoint with a pending configuration (PUT /config since it was deployed) this starts a rolling
    update: the endpoint shows UPDATING with the step, `rollout` shows the plan (a surge on spare GPUs, or replace in
    place one replica at a time when there is none) before the first step, and it serves throughout. 409 with the
    reason when no plan keeps a replica serving, or nothing is pending."""
    body = body or DeployRequest()
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
        model = await models.get_model(conn, endpoint.model_id)
        if endpoint.status == EndpointStatus.RUNNING:
            return await start_rollout(conn, temporal, settings, endpoint, model)
        waiting_for = capacity.optimization_to_wait_for(endpoint, model)
        # DEPLOYING before the run starts, so the run's own steps are never overwritten by "queued".
        await endpoints.set_workflow(conn, endpoint_id, deploy_endpoint_workflow_id(endpoint_id), body.keep_on_failure)
        try:
            await start_deploy_endpoint(temporal, settings, DeployEndpointInput(
                endpoint_id=endpoint_id, keep_on_failure=body.keep_on_failure, optimization_workflow_id=waiting_for))
        except Exception:
            await endpoints.set_status(conn, endpoint_id, endpoint.status, endpoint.step)
            raise
        return endpoint_out(await endpoints.get_endpoint(conn, endpoint_id))


async def start_rollout(conn, temporal, settings, endpoint, model) -> dict:
    available_facts(model)  # only AVAILABLE models are deployed
    plan = await capacity.check_rollout(conn, endpoint)
    waiting_for = endpoint.optimization_workflow_id if plan is None else None
    step = ("rolling update: queued, planned once the optimizer has chosen the configuration" if plan is None
            else f"rolling update: queued: {plan.summary}")
    await endpoints.set_updating(conn, endpoint.id, deploy_endpoint_workflow_id(endpoint.id), step)
    if plan is not None:
        await endpoints.set_rollout(conn, endpoint.id, {"status": "PENDING", "plan": plan.summary,
                                                        "max_surge": plan.max_surge,
                                                        "steps": [s.model_dump() for s in plan.steps]})
    try:
        await start_rolling_update(temporal, settings, RollingUpdateInput(endpoint_id=endpoint.id,
                                                                          optimization_workflow_id=waiting_for))
    except Exception:
        await endpoints.set_status(conn, endpoint.id, endpoint.status, endpoint.step)
        raise
    return endpoint_out(await endpoints.get_endpoint(conn, endpoint.id))


@router.post("/{endpoint_id}/revert", response_model=EndpointOut, status_code=status.HTTP_202_ACCEPTED)
async def revert_endpoint(endpoint_id: UUID, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep,
                          principal: PrincipalDep) -> dict:
    """Back to the last stable generation, never with zero replicas serving. During a rolling update: it stops at
    the next step and rolls back (the new generation drains after the old one serves at its full count). After one:
    the replaced generation's configuration becomes the endpoint's again and rolls out like any update. Either way
    nothing stays pending. 409 when there is nothing to go back to."""
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
        if endpoint.status == EndpointStatus.UPDATING:
            if not await revert_rolling_update(temporal, endpoint_id, "reverted by request"):
                raise Conflict("the rolling update is finishing: POST /revert again once the endpoint is RUNNING")
            await endpoints.configure_as(conn, endpoint_id, capacity.serving_generation(endpoint).model_dump(mode="json"))
            await endpoints.set_status(conn, endpoint_id, EndpointStatus.UPDATING, "rolling update: reverting at the "
                                       "next step")
            return endpoint_out(await endpoints.get_endpoint(conn, endpoint_id))
        capacity.require_running(endpoint, "revert")
        if not endpoint.previous_deployed:
            raise Conflict("nothing to revert to: no rolling update replaced an earlier generation of this endpoint")
        model = await models.get_model(conn, endpoint.model_id)
        stored = {"runtime": endpoint.runtime, "config": endpoint.config, "resources": endpoint.resources,
                  "replicas": endpoint.replicas}
        await endpoints.configure_as(conn, endpoint_id, endpoint.previous_deployed)
        try:
            return await start_rollout(conn, temporal, settings, await endpoints.get_endpoint(conn, endpoint_id), model)
        except Conflict:
            await endpoints.configure_as(conn, endpoint_id, stored)  # refused: nothing changed
            raise


@router.post("/{endpoint_id}/scale", response_model=EndpointOut, status_code=status.HTTP_202_ACCEPTED)
async def scale_endpoint(endpoint_id: UUID, body: ScaleRequest, pool: PoolDep, temporal: TemporalDep,
                         settings: SettingsDep, principal: PrincipalDep) -> dict:
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
        await capacity.check_scale(conn, endpoint, body.replicas)
        await start_scale_endpoint(temporal, settings, ScaleEndpointInput(
            endpoint_id=endpoint_id, replicas=body.replicas, previous_replicas=endpoint.replicas,
            drain_timeout_s=body.drain_timeout_s))
        await endpoints.set_status(conn, endpoint_id, EndpointStatus.RUNNING, f"scaling to {body.replicas}")
        return endpoint_out(await endpoints.get_endpoint(conn, endpoint_id))


@router.put("/{endpoint_id}/autoscaling", response_model=EndpointOut, status_code=status.HTTP_202_ACCEPTED)
async def configure_autoscaling(endpoint_id: UUID, body: AutoscalingSpec, pool: PoolDep, temporal: TemporalDep,
                                settings: SettingsDep, principal: PrincipalDep) -> dict:
    """The autoscaling block (an autoscaling/v2 HPA spec). Kubernetes gets a HorizontalPodAutoscaler; on the local
    cluster the AutoscaleEndpoint workflow scales by the same rules. A new body replaces the running autoscaler's spec.

    Scale to zero (local cluster): with `min_replicas: 0` the last replica stops once the endpoint had no request for
    `scale_to_zero_after_s` seconds (60 to 86400, default 300). The endpoint stays RUNNING with
    `deployment.replicas: 0`; `autoscaling_state.idle_since` says since when it had no request. The first request the
    gateway sees for it brings one replica back at the autoscaler's next sync (BUD_AUTOSCALE_SYNC_S) and the gateway
    answers it once the replica is ready or its cold-start wait runs out."""
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
        cluster = await clusters.get_cluster(conn, endpoint.cluster_id)
        if body.enabled and body.min_replicas == 0:
            if cluster.kind != "local":
                raise Conflict("scale to zero runs on the local cluster's autoscaler; a HorizontalPodAutoscaler "
                               "keeps at least one replica", "min_replicas")
            if body.scale_to_zero_after_s < settings.scale_to_zero_min_s:
                raise invalid_field("scale_to_zero_after_s", f"must be at least {settings.scale_to_zero_min_s:g} "
                                    f"seconds (at most {MAX_SCALE_TO_ZERO_AFTER_S})")
        await capacity.check_autoscaling(conn, endpoint, cluster, body)
        # Stored before the workflow starts, so its own first record is never overwritten by this one.
        await endpoints.set_autoscaling(conn, endpoint_id, body.model_dump(mode="json"), {"message": "applying"})
        await start_autoscaler(temporal, settings, endpoint_id, body)
        return endpoint_out(await endpoints.get_endpoint(conn, endpoint_id))


class MetricsOut(BaseModel):
    """Monitoring for one endpoint: live metrics, alerts, measured vs predicted, re-optimization advice."""

    endpoint_id: UUID
    status: str
    monitoring: dict[str, Any] | None
    alerts: EndpointAlerts | None = Field(default=None, description="firing and pending now, from Prometheus's rules")
    gpu: GpuRows | None = Field(default=None, description="the endpoint's GPUs now (DCGM), or 'not measured'")


@router.get("/{endpoint_id}/metrics", response_model=MetricsOut)
async def endpoint_metrics(endpoint_id: UUID, pool: PoolDep, settings: SettingsDep, principal: PrincipalDep) -> dict:
    """The last observation (the schedule refreshes it every BUD_REOPTIMIZE_INTERVAL_S; null before the first), and
    what Prometheus says now: the alerts its rules fire for the endpoint and its GPU rows."""
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
    return {"endpoint_id": endpoint_id, "status": endpoint.status, "monitoring": endpoint.monitoring,
            **await prometheus_view(settings.prometheus_url, endpoint_id)}


@router.post("/{endpoint_id}/metrics/refresh", response_model=MetricsOut, status_code=status.HTTP_202_ACCEPTED)
async def refresh_endpoint_metrics(endpoint_id: UUID, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep,
                                   principal: PrincipalDep,
                                   window_s: Annotated[int, Query(ge=10, le=86_400, description="seconds")] = 300) -> dict:
    """Observe the endpoint now (Reoptimize for this endpoint alone) over the last `window_s` seconds."""
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
    capacity.require_running(endpoint, "have live metrics")
    await start_endpoint_reoptimize(temporal, settings, endpoint_id, window_s)
    return {"endpoint_id": endpoint_id, "status": endpoint.status, "monitoring": endpoint.monitoring}


@router.delete("/{endpoint_id}", response_model=EndpointOut, status_code=status.HTTP_202_ACCEPTED)
async def delete_endpoint(endpoint_id: UUID, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep,
                          principal: PrincipalDep) -> dict:
    """Cancels a deployment in flight (it cleans up what it created), then removes the release, routes and GPUs."""
    async with pool.acquire() as conn:
        await owned_endpoint(conn, endpoint_id, principal.project_id)
        await start_delete_endpoint(temporal, settings, endpoint_id)
        await endpoints.set_status(conn, endpoint_id, EndpointStatus.DELETING, "deleting")
        return endpoint_out(await endpoints.get_endpoint(conn, endpoint_id))


# ------------------------------------------------------------------------------------------------ benchmarks
@router.post("/{endpoint_id}/benchmark", response_model=BenchmarkRunOut, status_code=status.HTTP_202_ACCEPTED)
async def benchmark_endpoint(endpoint_id: UUID, body: BenchmarkRequest, pool: PoolDep, temporal: TemporalDep,
                             settings: SettingsDep, principal: PrincipalDep) -> dict:
    """Start a load sweep through the gateway: one level per `concurrency`, each streaming `requests_per_level`
    completions of `input_tokens` in and `output_tokens` out, timed on the client. Every level becomes a measurement
    (GET /api/measurements?source_id=<run id>) and is shown beside the optimizer's prediction. 409 unless the
    endpoint is RUNNING or while another sweep of it runs; 422 for levels above the deployment's max_num_seqs x
    replicas or tokens beyond its context."""
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
        capacity.require_running(endpoint, "can be benchmarked")
        model = await models.get_model(conn, endpoint.model_id)
        benchmark_rules.check_request(endpoint, model, body)
        run = await benchmark_runs.insert_run(conn, principal.project_id, endpoint_id, body.model_dump(mode="json"),
                                              benchmark_endpoint_workflow_id)
        if run is None:
            raise Conflict("a benchmark of this endpoint is already running; wait for it to finish")
        try:
            await start_benchmark_endpoint(temporal, settings, BenchmarkInput(
                run_id=run.id, endpoint_id=endpoint_id, project_id=principal.project_id, request=body))
        except Exception:
            await benchmark_runs.set_status(conn, run.id, BenchmarkStatus.FAILED, "starting",
                                            "the workflow could not be started")
            raise
        return run.model_dump()


@router.get("/{endpoint_id}/benchmarks", response_model=list[BenchmarkRunOut])
async def list_benchmarks(endpoint_id: UUID, pool: PoolDep, principal: PrincipalDep,
                          limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[dict]:
    """The endpoint's benchmark runs, most recent first."""
    async with pool.acquire() as conn:
        await owned_endpoint(conn, endpoint_id, principal.project_id)
        return [run.model_dump() for run in await benchmark_runs.list_runs(conn, endpoint_id, principal.project_id,
                                                                           limit)]


@router.get("/{endpoint_id}/benchmarks/{run_id}", response_model=BenchmarkRunOut)
async def get_benchmark(endpoint_id: UUID, run_id: UUID, pool: PoolDep, principal: PrincipalDep) -> dict:
    """One run: its status and, per finished level, measured TTFT/TPOT p50/p99, throughput and errors beside the
    prediction for the same config and workload."""
    async with pool.acquire() as conn:
        await owned_endpoint(conn, endpoint_id, principal.project_id)
        run = await benchmark_runs.get_run(conn, run_id, principal.project_id, endpoint_id)
    if run is None:
        raise not_found("benchmark run", run_id)
    return run.model_dump()
