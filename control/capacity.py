"""What an endpoint may do now and whether the GPUs are there: the rules behind naming, configure, deploy, scale,
autoscale and routing traffic to it, raised as domain errors (control/errors.py) before anything is written or
started."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from budsim.schemas import OptimizationRequest
from control.errors import Conflict, invalid_field
from control.payloads.autoscaling import AutoscalingSpec
from control.payloads.deployments import (
    DeployedGeneration,
    EndpointConfigRequest,
    EndpointStatus,
    Resources,
    RolloutPlan,
    RuntimeConfig,
)
from control.payloads.models import ModelStatus
from control.payloads.traffic import BackendTarget, RouteBackendIn, RouteFallbackIn
from control.planning import check_request, optimization_request, plan_rollout
from control.store import endpoints, providers, routes
from control.store.clusters import ClusterRow
from control.store.endpoints import EndpointRow
from control.store.models import ModelRow

BUSY = {EndpointStatus.DEPLOYING, EndpointStatus.UPDATING, EndpointStatus.DELETING}


async def require_name_of_project(conn: asyncpg.Connection, name: str, project_id: UUID) -> None:
    """Endpoint and route names are the model names clients send to the gateway: one project owns each."""
    owner = await routes.name_owner(conn, name)
    if owner is not None and owner != project_id:
        raise Conflict(f"the model name {name!r} belongs to another project", "name")


def require_settled(endpoint: EndpointRow) -> None:
    if endpoint.status == EndpointStatus.UPDATING:
        raise Conflict(f"a rolling update is in progress ({endpoint.step}): wait for it to finish, or POST "
                       "/api/endpoints/{id}/revert to go back to the serving generation")
    if endpoint.status in BUSY:
        raise Conflict(f"endpoint is {endpoint.status}: wait for it to settle")


def require_running(endpoint: EndpointRow, action: str) -> None:
    if endpoint.status != EndpointStatus.RUNNING:
        raise Conflict(f"only RUNNING endpoints {action}; this one is {endpoint.status}")


def manual_resources(config: RuntimeConfig, resources: Resources | None, gpu_type: str) -> Resources:
    """A manual config's per-replica GPUs: tensor x pipeline parallel, of the GPU type chosen on the cluster."""
    gpus = config.tensor_parallel_size * config.pipeline_parallel_size
    if resources is not None and resources.gpu_count != gpus:
        raise invalid_field("resources.gpu_count", f"must equal tensor_parallel_size x pipeline_parallel_size = {gpus}")
    return (resources or Resources(gpu_type=gpu_type, gpu_count=gpus)).model_copy(update={"gpu_type": gpu_type})


@dataclass(frozen=True)
class ConfigurationPlan:
    """A configuration that passed every check, and what the endpoint stores for it until the optimizer answers
    (a MANUAL config is the endpoint's at once; REGRESSOR/HEURISTIC leave config and resources for the optimizer)."""

    request: OptimizationRequest
    config: RuntimeConfig | None
    resources: Resources | None
    replicas: int


async def plan_configuration(conn: asyncpg.Connection, endpoint: EndpointRow, model: ModelRow, cluster: ClusterRow,
                             body: EndpointConfigRequest) -> ConfigurationPlan:
    """PUT /config's whole validation: the endpoint settled, the model AVAILABLE, the GPU type on the cluster, a
    MANUAL config fitting the free GPUs with matching resources, and a request the optimizer accepts."""
    require_settled(endpoint)
    request = await optimization_request(
        conn, model=model, cluster=cluster, endpoint_id=endpoint.id, runtime=body.runtime,
        method=body.optimization_method, targets=body.performance_targets, workload=body.workload,
        gpu_type=body.resources.gpu_type if body.resources else None, config=body.config, replicas=body.replicas)
    check_request(request)
    replicas = body.replicas or 1
    if body.optimization_method != "MANUAL":
        return ConfigurationPlan(request=request, config=None, resources=None, replicas=replicas)
    assert body.config is not None  # optimization_request refuses MANUAL without one
    return ConfigurationPlan(request=request, config=body.config, replicas=replicas,
                             resources=manual_resources(body.config, body.resources, request.gpu_type))


def optimization_to_wait_for(endpoint: EndpointRow, model: ModelRow) -> str | None:
    """Whether the endpoint can be deployed now: None when it has its config, the optimization's workflow id when
    the optimizer is still choosing one (the deploy waits for it). Conflict otherwise."""
    if model.status != ModelStatus.AVAILABLE:
        raise Conflict(f"model {model.name} is {model.status}: only AVAILABLE models can be deployed",
                       "model_id", status=str(model.status))
    require_settled(endpoint)
    if endpoint.status == EndpointStatus.RUNNING:
        raise Conflict(f"endpoint is {endpoint.status}")
    if endpoint.config is not None:
        return None
    if endpoint.optimization_status == "RUNNING" and endpoint.optimization_workflow_id:
        return endpoint.optimization_workflow_id
    raise Conflict("the endpoint has no configuration: PUT /api/endpoints/{id}/config first")


# ------------------------------------------------------------------------------------------ generations
def serving_generation(endpoint: EndpointRow) -> DeployedGeneration:
    if not endpoint.deployed:
        raise Conflict("this endpoint's serving configuration was not recorded (deployed before rolling updates "
                       "existed): delete and deploy it again to update it")
    return DeployedGeneration.model_validate(endpoint.deployed)


def pending_configuration(endpoint: EndpointRow) -> dict | None:
    """The configuration a PUT /config stored that the replicas do not run yet (None when they run it)."""
    if not endpoint.deployed:
        return None
    serving = DeployedGeneration.model_validate(endpoint.deployed)
    stored = {"runtime": endpoint.runtime, "config": endpoint.config, "resources": endpoint.resources,
              "replicas": endpoint.replicas}
    running = {"runtime": serving.runtime, "config": serving.config, "resources": serving.resources,
               "replicas": serving.replicas}
    return None if stored == running else stored


def check_rollout_gpus(old: DeployedGeneration, new: Resources, replicas: int, available_gpus: int) -> RolloutPlan:
    """The batches from the serving generation to `replicas` of `new` resources within the GPUs this endpoint may
    hold (Conflict if none keeps a replica serving)."""
    if new.gpu_type != old.spec.resources.gpu_type:
        raise Conflict(f"a rolling update keeps the GPU type ({old.spec.resources.gpu_type}); to move to "
                       f"{new.gpu_type}, deploy a new endpoint and shift its traffic", "resources.gpu_type")
    return plan_rollout(old.replicas, old.spec.resources.gpu_count, replicas, new.gpu_count, available_gpus)


async def check_rollout(conn: asyncpg.Connection, endpoint: EndpointRow) -> RolloutPlan | None:
    """POST /deploy on a RUNNING endpoint: a configuration is pending, and a plan keeps a replica serving (the
    plan; None while the optimizer still chooses the configuration, planned when it has)."""
    serving = serving_generation(endpoint)
    if endpoint.config is None or endpoint.resources is None:
        if endpoint.optimization_status == "RUNNING":
            return None
        raise Conflict("the endpoint has no configuration: PUT /api/endpoints/{id}/config first")
    if pending_configuration(endpoint) is None:
        raise Conflict("nothing to deploy: the replicas already run this configuration (PUT "
                       "/api/endpoints/{id}/config to change it)")
    resources = Resources.model_validate(endpoint.resources)
    available, _ = await endpoints.free_gpus(conn, endpoint.cluster_id, resources.gpu_type, excluding=endpoint.id)
    return check_rollout_gpus(serving, resources, endpoint.replicas, available)


async def check_scale(conn: asyncpg.Connection, endpoint: EndpointRow, replicas: int) -> None:
    """Manual scaling: RUNNING, not owned by the autoscaler, and GPUs free for every replica."""
    require_running(endpoint, "scale")
    if (endpoint.autoscaling or {}).get("enabled"):
        raise Conflict("the autoscaler owns this endpoint's replica count: "
                       "PUT /api/endpoints/{id}/autoscaling with enabled false first", "replicas")
    resources = Resources.model_validate(endpoint.resources)
    free, total = await endpoints.free_gpus(conn, endpoint.cluster_id, resources.gpu_type, excluding=endpoint.id)
    needed = resources.gpu_count * replicas
    if needed > free:
        raise Conflict(f"not enough GPUs: {replicas} replicas need {needed} {resources.gpu_type}, "
                       f"{free} free of {total}", "replicas")


async def check_autoscaling(conn: asyncpg.Connection, endpoint: EndpointRow, cluster: ClusterRow,
                            spec: AutoscalingSpec) -> None:
    """Autoscaling: RUNNING, and room for max_replicas. Kubernetes holds the HPA's ceiling up front (it adds pods
    without asking), so it must be free now; the local autoscaler reserves as it scales, within the cluster."""
    require_running(endpoint, "autoscale")
    if not spec.enabled:
        return
    resources = Resources.model_validate(endpoint.resources)
    free, total = await endpoints.free_gpus(conn, endpoint.cluster_id, resources.gpu_type, excluding=endpoint.id)
    available, where = (total, "in the cluster") if cluster.kind == "local" else (free, "free")
    needed = resources.gpu_count * spec.max_replicas
    if needed > available:
        raise Conflict(f"max_replicas {spec.max_replicas} would need {needed} {resources.gpu_type}; "
                       f"{available} {where}", "max_replicas")


async def _check_provider(conn: asyncpg.Connection, backend: BackendTarget, project_id: UUID, where: str) -> None:
    provider = await providers.get_provider(conn, backend.provider_id, project_id)
    if provider is None:
        raise invalid_field(f"{where}.provider_id", f"provider {backend.provider_id} does not exist")
    if backend.model not in provider.models:
        raise invalid_field(f"{where}.model", f"provider {provider.name} has no model {backend.model!r} "
                                              f"(it lists {', '.join(provider.models)})")


async def check_route_backends(conn: asyncpg.Connection, backends: list[RouteBackendIn], project_id: UUID,
                               fallbacks: list[RouteFallbackIn] | None = None) -> None:
    """A route's endpoints and providers exist in the project (a provider lists the model), and endpoints given
    traffic are RUNNING; fallback endpoints exist in the project."""
    for index, backend in enumerate(backends):
        if backend.provider_id is not None:
            await _check_provider(conn, backend, project_id, f"backends.{index}")
            continue
        endpoint = await endpoints.get_endpoint(conn, backend.endpoint_id, project_id)
        if endpoint is None or endpoint.status == EndpointStatus.DELETED:
            raise invalid_field(f"backends.{index}.endpoint_id", f"endpoint {backend.endpoint_id} does not exist")
        if backend.weight > 0 and endpoint.status != EndpointStatus.RUNNING:
            raise Conflict(f"endpoint {endpoint.name} is {endpoint.status}: only RUNNING endpoints take traffic",
                           f"backends.{index}.weight")
    for index, fallback in enumerate(fallbacks or []):
        if fallback.provider_id is not None:
            await _check_provider(conn, fallback, project_id, f"fallbacks.{index}")
            continue
        endpoint = await endpoints.get_endpoint(conn, fallback.endpoint_id, project_id)
        if endpoint is None or endpoint.status in (EndpointStatus.DELETED, EndpointStatus.DELETING):
            raise invalid_field(f"fallbacks.{index}.endpoint_id", f"endpoint {fallback.endpoint_id} does not exist")


async def check_shift_target(conn: asyncpg.Connection, endpoint_id: UUID, project_id: UUID) -> None:
    """A shift moves traffic only to a RUNNING endpoint of the project."""
    endpoint = await endpoints.get_endpoint(conn, endpoint_id, project_id)
    if endpoint is None or endpoint.status == EndpointStatus.DELETED:
        raise invalid_field("to_endpoint_id", f"endpoint {endpoint_id} does not exist")
    if endpoint.status != EndpointStatus.RUNNING:
        raise Conflict(f"endpoint {endpoint.name} is {endpoint.status}, not RUNNING", "to_endpoint_id")
