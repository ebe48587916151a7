"""Activities on PostgreSQL for deployments: validate and plan, hold GPUs, record progress, publish routes."""

from __future__ import annotations

import asyncio
from uuid import UUID

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from budsim.schemas import OptimizationResult
from core.logging import get_logger
from core.model_facts import ModelArchitecture
from control.payloads.autoscaling import AutoscalingSpec
from control.payloads.deployments import (
    DeployEndpointInput,
    DeployedGeneration,
    DeploymentPlan,
    DeploymentSpec,
    EndpointProgress,
    EndpointRef,
    EndpointStatus,
    GpuReservationRequest,
    PublishInput,
    ReleaseRequest,
    Resources,
    RollingUpdateInput,
    RolloutPrepared,
    RolloutRecord,
    RuntimeConfig,
)
from control.payloads.clusters import ClusterStatus, SimulatedSilicon
from control.payloads.models import BenchmarkCreate, ModelStatus
from control import routing
from control.capacity import check_rollout_gpus, serving_generation
from control.errors import DomainError
from control.releases import release_name  # noqa: F401 (the activities' name for it)
from control.planning import WARMUP_TTFT_MS_DEFAULT, fit_problems, simulated_timing
from control.translate import serving_config
from core.settings import Settings
from control.store import clusters, endpoints, models, optimizations
from control.store.endpoints import EndpointRow

log = get_logger(__name__)
RECOMMENDATION_POLL_S = 0.5
PUBLISH_ATTEMPTS = 3  # of routing.PUBLISH_WAIT_S each: how long a publish waits for a gateway that lags


def invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type="ValidationFailed", non_retryable=True)


def serving_release(endpoint: EndpointRow) -> str:
    """The release whose replicas serve the endpoint now (the latest generation a rolling update finished)."""
    if endpoint.deployed:
        return endpoint.deployed["spec"]["release"]
    return release_name(endpoint.id)


def generation_release(endpoint_id: UUID, generation: int) -> str:
    """The first generation keeps the endpoint's release name; each rolling update runs the next under its own."""
    return release_name(endpoint_id, None if generation == 1 else f"g{generation}")


def settle_propagation(propagation: routing.Propagation) -> None:
    """After a publish's wait: gateways still behind fail this attempt (retried: the writes are idempotent), but
    only PUBLISH_ATTEMPTS times. A gateway that heartbeats yet never reloads must not hold a deploy forever: then
    the publish goes through, the laggards named in the log (it serves the table once it reloads or polls)."""
    if propagation.propagated:
        return
    if activity.info().attempt < PUBLISH_ATTEMPTS:
        raise ApplicationError(routing.describe(propagation), type="RoutesNotPropagated")
    log.warning("published although gateways lag", detail=routing.describe(propagation),
                attempts=activity.info().attempt)


class EndpointActivities:
    def __init__(self, pool: asyncpg.Pool, settings: Settings):
        self.pool = pool
        self.settings = settings

    @activity.defn
    async def load_deployment_plan(self, request: DeployEndpointInput) -> DeploymentPlan:
        """Validation: resources, model/runtime compatibility, configuration parameters. A scale (a replica count
        given) scales the generation that serves, whatever configuration waits to be deployed."""
        async with self.pool.acquire() as conn:
            endpoint = await endpoints.get_endpoint(conn, request.endpoint_id)
            if endpoint is None:
                raise invalid(f"endpoint {request.endpoint_id} no longer exists")
            serving = DeployedGeneration.model_validate(endpoint.deployed) if endpoint.deployed else None
            if request.replicas is not None and serving is not None:
                return await self._plan(conn, endpoint, serving.runtime, serving.config, serving.resources,
                                        request.replicas, serving.spec.release, request.drain_timeout_s)
            return await self._plan(conn, endpoint, endpoint.runtime, endpoint.config, endpoint.resources,
                                    request.replicas if request.replicas is not None else endpoint.replicas,
                                    release_name(endpoint.id), request.drain_timeout_s)

    async def _plan(self, conn: asyncpg.Connection, endpoint: EndpointRow, runtime: str, config: dict | None,
                    resources: dict | None, replicas: int, release: str,
                    drain_timeout_s: float | None = None) -> DeploymentPlan:
        model = await models.get_model(conn, endpoint.model_id)
        cluster = await clusters.get_cluster(conn, endpoint.cluster_id)
        files = await models.model_files(conn, endpoint.model_id)
        if model.status != ModelStatus.AVAILABLE:
            raise invalid(f"model {model.name} is {model.status}, not AVAILABLE: it cannot be deployed")
        if cluster.status != ClusterStatus.READY:
            raise invalid(f"cluster {cluster.name} is {cluster.status}, not READY")
        if config is None or resources is None:
            raise invalid("the endpoint has no configuration yet: PUT /api/endpoints/{id}/config first")
        resources = Resources.model_validate(resources)
        config = RuntimeConfig.model_validate(config)
        if not any(pool["gpu_type"] == resources.gpu_type for pool in cluster.gpus):
            raise invalid(f"cluster {cluster.name} has no {resources.gpu_type} GPUs")
        free, total = await endpoints.free_gpus(conn, cluster.id, resources.gpu_type, excluding=endpoint.id)
        facts = ModelArchitecture.model_validate(model.facts)
        serving = serving_config(config, replicas, runtime, model.context_length)
        problems = fit_problems(facts, resources.gpu_type, serving, free)
        if problems:
            raise invalid("configuration does not fit: " + "; ".join(problems))
        spec = DeploymentSpec(
            endpoint_id=endpoint.id, release=release, served_model_name=endpoint.name,
            model_id=model.id, model_uri=model.source_path,
            model_sha256={f.path: f.sha256 for f in files if f.sha256},
            architecture=facts.model_type, runtime=runtime,
            config=config.model_copy(update={"max_model_len": serving.max_model_len}),
            replicas=replicas, resources=resources,
            timing=simulated_timing(facts, resources.gpu_type, serving, self.settings.sim_load_delay_s,
                                    SimulatedSilicon.model_validate(cluster.simulation) if cluster.simulation else None),
            labels={"bud.ai/project-id": str(endpoint.project_id)},
            startup_timeout_s=self.settings.deploy_ready_timeout_s,
            autoscaling=AutoscalingSpec.model_validate(endpoint.autoscaling) if endpoint.autoscaling else None,
            drain_timeout_s=drain_timeout_s or self.settings.drain_timeout_s,
        )
        return DeploymentPlan(
            spec=spec, cluster_id=cluster.id, cluster_kind=cluster.kind,
            gpus_needed=serving.total_gpus, model_bucket=model.source_path[len("s3://"):].split("/", 1)[0],
            model_prefix=model.source_path[len("s3://"):].split("/", 1)[1],
            model_files=[f.model_dump() for f in files],
        )

    @activity.defn
    async def prepare_rollout(self, request: RollingUpdateInput) -> RolloutPrepared:
        """A rolling update's starting point: the serving generation, the next one (the endpoint's configuration,
        validated like a deploy, under a release of its own) and the batches between them, planned from the GPUs
        this endpoint may hold now. A plan that cannot keep a replica serving fails here, before anything starts."""
        async with self.pool.acquire() as conn:
            endpoint = await endpoints.get_endpoint(conn, request.endpoint_id)
            if endpoint is None:
                raise invalid(f"endpoint {request.endpoint_id} no longer exists")
            try:
                old = serving_generation(endpoint)
                plan = await self._plan(conn, endpoint, endpoint.runtime, endpoint.config, endpoint.resources,
                                        endpoint.replicas, generation_release(endpoint.id, old.generation + 1))
                available, _ = await endpoints.free_gpus(conn, endpoint.cluster_id, plan.spec.resources.gpu_type,
                                                         excluding=endpoint.id)
                rollout = check_rollout_gpus(old, plan.spec.resources, plan.spec.replicas, available)
            except DomainError as error:
                raise ApplicationError(error.message, type="RolloutRefused", non_retryable=True) from error
        new = DeployedGeneration.of(old.generation + 1, plan.spec, endpoint.config, endpoint.resources)
        targets = endpoint.performance_targets or {}
        return RolloutPrepared(old=old, new=new, cluster_id=plan.cluster_id, cluster_kind=plan.cluster_kind,
                               available_gpus=available, plan=rollout,
                               warmup_ttft_ms=targets.get("max_ttft_ms") or WARMUP_TTFT_MS_DEFAULT,
                               model_bucket=plan.model_bucket, model_prefix=plan.model_prefix,
                               model_files=plan.model_files)

    @activity.defn
    async def route_generations(self, request: PublishInput) -> None:
        """Mid-rollout: the routable replicas of both generations into the route table, then until every running
        gateway serves it. The serving generation's record is left as it is until the rollout ends."""
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await endpoints.replace_replicas(conn, request.endpoint_id, request.replicas)
                await conn.execute("UPDATE endpoints SET ready_replicas = $2 WHERE id = $1", request.endpoint_id,
                                   sum(r.ready for r in request.replicas))
            propagation = await routing.wait_for_gateways(conn, on_wait=activity.heartbeat)
        settle_propagation(propagation)

    @activity.defn
    async def record_rollout(self, record: RolloutRecord) -> None:
        async with self.pool.acquire() as conn:
            await endpoints.set_rollout(conn, record.endpoint_id, record.rollout)

    @activity.defn
    async def finish_rollout(self, prepared: RolloutPrepared) -> None:
        """The new generation serves alone: it becomes what the replicas run, the old one what revert goes back to."""
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await endpoints.set_deployed(conn, prepared.new.spec.endpoint_id, prepared.new.model_dump(mode="json"),
                                             prepared.old.model_dump(mode="json"))
                await endpoints.set_replicas_count(conn, prepared.new.spec.endpoint_id, prepared.new.replicas,
                                                   prepared.new.replicas)

    @activity.defn
    async def reserve_gpus(self, request: GpuReservationRequest) -> None:
        async with self.pool.acquire() as conn:
            try:
                await endpoints.reserve_gpus(conn, request.cluster_id, request.endpoint_id, request.gpu_type, request.count)
            except endpoints.InsufficientGpus as error:
                raise ApplicationError(str(error), type="InsufficientGpus", non_retryable=True) from error

    @activity.defn
    async def release_gpus(self, ref: EndpointRef) -> None:
        async with self.pool.acquire() as conn:
            await endpoints.release_gpus(conn, ref.endpoint_id)

    @activity.defn
    async def set_endpoint_progress(self, progress: EndpointProgress) -> None:
        if progress.status == EndpointStatus.RUNNING and progress.inference_url is None:
            progress = progress.model_copy(update={"inference_url": self.settings.gateway_url})
        async with self.pool.acquire() as conn:
            await endpoints.set_progress(conn, progress)

    @activity.defn
    async def publish_endpoint(self, request: PublishInput) -> None:
        """Replicas into the routing table and a route named after the endpoint, then until every running gateway
        serves that table (control.routing), so the RUNNING that follows means routable. Gateways still behind
        after the wait fail this attempt, a bounded number of times (settle_propagation)."""
        async with self.pool.acquire() as conn:
            endpoint = await endpoints.get_endpoint(conn, request.endpoint_id)
            await endpoints.replace_replicas(conn, request.endpoint_id, request.replicas, request.replica_count)
            await endpoints.ensure_route(conn, request.route_name, endpoint.project_id, request.endpoint_id)
            count = request.replica_count if request.replica_count is not None else len(request.replicas)
            ready = request.ready_replicas if request.ready_replicas is not None else sum(r.ready for r in request.replicas)
            await endpoints.set_replicas_count(conn, request.endpoint_id, count, ready)
            if request.health:
                await endpoints.set_health(conn, request.endpoint_id, request.health.model_dump())
                await record_measured_performance(conn, endpoint, request)
            if request.first_generation is not None:  # PUT /config waits while deploying: the row is what ran
                first = DeployedGeneration.of(1, request.first_generation, endpoint.config, endpoint.resources)
                await endpoints.set_deployed(conn, request.endpoint_id, first.model_dump(mode="json"))
            propagation = await routing.wait_for_gateways(conn, on_wait=activity.heartbeat)
        settle_propagation(propagation)

    @activity.defn
    async def unpublish_endpoint(self, ref: EndpointRef) -> None:
        async with self.pool.acquire() as conn:
            await endpoints.remove_from_routing(conn, ref.endpoint_id)

    @activity.defn
    async def release_target(self, ref: EndpointRef) -> ReleaseRequest | None:
        """What to delete for an endpoint: its serving generation's release (the first one's name derives from its
        id); None if it never had a config."""
        async with self.pool.acquire() as conn:
            endpoint = await endpoints.get_endpoint(conn, ref.endpoint_id)
            if endpoint is not None and endpoint.deployed:
                serving = DeployedGeneration.model_validate(endpoint.deployed)
                return ReleaseRequest(cluster_id=endpoint.cluster_id,
                                      spec=serving.spec.model_copy(update={"replicas": 0}))
            if endpoint is None or endpoint.resources is None:
                return None
            model = await models.get_model(conn, endpoint.model_id)
        spec = DeploymentSpec(
            endpoint_id=endpoint.id, release=release_name(endpoint.id), served_model_name=endpoint.name,
            model_id=endpoint.model_id, model_uri=model.source_path, runtime=endpoint.runtime,
            replicas=0, resources=Resources.model_validate(endpoint.resources),
        )
        return ReleaseRequest(cluster_id=endpoint.cluster_id, spec=spec)

    @activity.defn
    async def record_scale_result(self, progress: EndpointProgress) -> None:
        """A scale's outcome: the endpoint keeps serving (RUNNING); a failure is noted as its error."""
        async with self.pool.acquire() as conn:
            await endpoints.set_progress(conn, progress)


    @activity.defn
    async def wait_for_recommendation(self, request: DeployEndpointInput) -> None:
        """Until the optimization a deploy was accepted during has recorded its outcome (polling, heartbeating).
        Its failure, or a search that found no config meeting the targets, fails the deploy with the optimizer's
        reason; success leaves the chosen config on the endpoint for validation."""
        while True:
            async with self.pool.acquire() as conn:
                optimization = await optimizations.get_by_workflow_id(conn, request.optimization_workflow_id)
            if optimization is None:
                raise invalid(f"optimization {request.optimization_workflow_id} does not exist")
            if optimization.status != "RUNNING":
                break
            activity.heartbeat()
            await asyncio.sleep(RECOMMENDATION_POLL_S)
        if optimization.status == "FAILED":
            raise ApplicationError(f"the optimizer failed: {optimization.error}", type="OptimizationFailed",
                                   non_retryable=True)
        result = OptimizationResult.model_validate(optimization.result)
        if not result.meets_targets:
            raise ApplicationError(f"the optimizer found no config that meets the targets: {result.message}",
                                   type="NoFeasibleConfig", non_retryable=True)


async def record_measured_performance(conn: asyncpg.Connection, endpoint: EndpointRow, request: PublishInput) -> None:
    """The health check's measurements become the model's serving benchmarks (per GPU type and config)."""
    health = request.health
    if health is None or health.stream_chunks == 0:
        return  # nothing measured (e.g. simulated Kubernetes nodes)
    details = {"endpoint": endpoint.name, "runtime": endpoint.runtime, "config": endpoint.config,
               "replicas": request.replica_count}
    gpu_type = (endpoint.resources or {}).get("gpu_type")
    for name, score in (("ttft_ms", health.stream_first_token_ms), ("e2e_latency_ms", health.completion_latency_ms)):
        await models.add_benchmark(conn, endpoint.model_id, BenchmarkCreate(
            name=name, score=score, kind="performance", unit="ms", gpu_type=gpu_type, details=details,
            source=f"health check of endpoint {endpoint.name}"))
