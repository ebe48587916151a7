"""Starting workflows from the API and the bootstrap: one place that knows ids, queues and idempotency, and the
signals and queries the API sends to running workflows. A start that would run the same work twice concurrently is
a Conflict (control/errors.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from control.errors import Conflict
from control.payloads.autoscaling import AutoscaleInput, AutoscalingSpec
from control.payloads.benchmarks import BenchmarkInput
from control.payloads.clusters import ClusterSpec, RegisterClusterInput
from control.payloads.deployments import DeployEndpointInput, EndpointRef, RollingUpdateInput, ScaleEndpointInput
from control.payloads.models import RegisterModelInput
from control.payloads.monitoring import ReoptimizeInput
from control.payloads.optimization import OptimizeDeploymentInput
from control.payloads.traffic import TrafficShiftInput
from core.settings import Settings
from workflows.autoscale_endpoint import AutoscaleEndpoint
from workflows.benchmark_endpoint import BenchmarkEndpoint
from workflows.deploy_endpoint import DeployEndpoint
from workflows.rolling_update import RollingUpdate
from workflows.ids import (
    autoscale_endpoint_workflow_id,
    benchmark_endpoint_workflow_id,
    delete_endpoint_workflow_id,
    deploy_endpoint_workflow_id,
    optimize_workflow_id,
    register_cluster_workflow_id,
    register_model_workflow_id,
    reoptimize_endpoint_workflow_id,
    scale_endpoint_workflow_id,
    traffic_shift_workflow_id,
)
from workflows.manage_endpoint import DeleteEndpoint, ScaleEndpoint
from workflows.optimize_deployment import OptimizeDeployment
from workflows.register_cluster import RegisterCluster
from workflows.register_model import RegisterModel
from workflows.reoptimize import Reoptimize
from workflows.traffic_shift import TrafficShift

REOPTIMIZE_SCHEDULE_ID = "reoptimize-endpoints"


async def start_register_cluster(client: Client, settings: Settings, cluster_id: UUID, spec: ClusterSpec) -> WorkflowHandle:
    return await client.start_workflow(
        RegisterCluster.run,
        RegisterClusterInput(cluster_id=cluster_id, spec=spec),
        id=register_cluster_workflow_id(cluster_id),
        task_queue=settings.control_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )


async def start_register_model(client: Client, settings: Settings, request: RegisterModelInput) -> WorkflowHandle:
    return await client.start_workflow(
        RegisterModel.run,
        request,
        id=register_model_workflow_id(request.model_id),
        task_queue=settings.control_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )


async def register_model_progress(client: Client, workflow_id: str) -> dict | None:
    """The running scan's step and counts, from the workflow's query; None if it cannot answer right now."""
    try:
        async with asyncio.timeout(1):
            return await client.get_workflow_handle(workflow_id).query(RegisterModel.progress)
    except (TimeoutError, RPCError, WorkflowQueryFailedError):
        return None


async def ensure_reoptimize_schedule(client: Client, settings: Settings) -> None:
    """The continuous-optimization schedule: Reoptimize over every RUNNING endpoint each `reoptimize_interval_s` (a run still going
    when the next is due is not doubled). Created once; a changed interval updates it."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            Reoptimize.run,
            ReoptimizeInput(window_s=min(max(60, int(settings.reoptimize_interval_s)), 86_400),
                            optimizer_queue=settings.optimizer_queue),
            id=REOPTIMIZE_SCHEDULE_ID, task_queue=settings.control_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.reoptimize_interval_s))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(REOPTIMIZE_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        await client.get_schedule_handle(REOPTIMIZE_SCHEDULE_ID).update(lambda _: ScheduleUpdate(schedule=schedule))


# ------------------------------------------------------------------------------------------------ optimization
def optimization_workflow_id(optimization_id: UUID, endpoint_id: UUID | None) -> str:
    """Known before the start, so the optimization (and its endpoint) can record it in the same transaction."""
    return optimize_workflow_id(endpoint_id or optimization_id, str(optimization_id)[:8])


async def start_optimize_deployment(client: Client, settings: Settings, run: OptimizeDeploymentInput) -> WorkflowHandle:
    return await client.start_workflow(
        OptimizeDeployment.run, run, id=optimization_workflow_id(run.optimization_id, run.endpoint_id),
        task_queue=settings.optimizer_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )


# ------------------------------------------------------------------------------------------------ endpoints
async def start_deploy_endpoint(client: Client, settings: Settings, run: DeployEndpointInput) -> WorkflowHandle:
    """One deploy of an endpoint at a time; a finished one may be run again (redeploy after FAILED)."""
    try:
        return await client.start_workflow(
            DeployEndpoint.run, run, id=deploy_endpoint_workflow_id(run.endpoint_id), task_queue=settings.control_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
    except WorkflowAlreadyStartedError:
        raise Conflict("a deployment of this endpoint is already running") from None


async def start_rolling_update(client: Client, settings: Settings, run: RollingUpdateInput) -> WorkflowHandle:
    """Under the deploy's id: one deploy or rolling update of an endpoint at a time, and a DELETE cancels either."""
    try:
        return await client.start_workflow(
            RollingUpdate.run, run, id=deploy_endpoint_workflow_id(run.endpoint_id), task_queue=settings.control_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
    except WorkflowAlreadyStartedError:
        raise Conflict("a deployment or rolling update of this endpoint is already running") from None


async def revert_rolling_update(client: Client, endpoint_id: UUID, reason: str) -> bool:
    """The running rolling update's `revert` signal; False when none runs (it finished, or a deploy runs)."""
    handle = client.get_workflow_handle(deploy_endpoint_workflow_id(endpoint_id))
    try:
        description = await handle.describe()
        if description.status != WorkflowExecutionStatus.RUNNING or description.workflow_type != "RollingUpdate":
            return False
        await handle.signal(RollingUpdate.revert, reason)
    except RPCError:  # none ran, or it finished between the check and the signal
        return False
    return True


async def start_scale_endpoint(client: Client, settings: Settings, run: ScaleEndpointInput) -> WorkflowHandle:
    try:
        return await client.start_workflow(
            ScaleEndpoint.run, run, id=scale_endpoint_workflow_id(run.endpoint_id), task_queue=settings.control_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
    except WorkflowAlreadyStartedError:
        raise Conflict("a scale of this endpoint is already running", "replicas") from None


async def start_delete_endpoint(client: Client, settings: Settings, endpoint_id: UUID) -> WorkflowHandle:
    """A second DELETE joins the first."""
    return await client.start_workflow(
        DeleteEndpoint.run, EndpointRef(endpoint_id=endpoint_id), id=delete_endpoint_workflow_id(endpoint_id),
        task_queue=settings.control_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)


async def start_autoscaler(client: Client, settings: Settings, endpoint_id: UUID, spec: AutoscalingSpec) -> WorkflowHandle:
    """Start the endpoint's autoscaler with `spec`, or hand `spec` to the one already running (its `update` signal)."""
    return await client.start_workflow(
        AutoscaleEndpoint.run, AutoscaleInput(endpoint_id=endpoint_id, sync_period_s=settings.autoscale_sync_s),
        id=autoscale_endpoint_workflow_id(endpoint_id), task_queue=settings.control_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal="update", start_signal_args=[spec])


async def start_endpoint_reoptimize(client: Client, settings: Settings, endpoint_id: UUID, window_s: int) -> WorkflowHandle:
    """Reoptimize for one endpoint now; a refresh already running is joined."""
    return await client.start_workflow(
        Reoptimize.run, ReoptimizeInput(endpoint_id=endpoint_id, window_s=window_s,
                                        optimizer_queue=settings.optimizer_queue),
        id=reoptimize_endpoint_workflow_id(endpoint_id), task_queue=settings.control_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)


async def start_benchmark_endpoint(client: Client, settings: Settings, run: BenchmarkInput) -> WorkflowHandle:
    """One workflow per benchmark run (its id derives from the run's); starting it again finds the first."""
    return await client.start_workflow(
        BenchmarkEndpoint.run, run, id=benchmark_endpoint_workflow_id(run.run_id), task_queue=settings.control_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)


# ------------------------------------------------------------------------------------------------ traffic shifts
async def traffic_shift_running(client: Client, route_name: str) -> bool:
    try:
        description = await client.get_workflow_handle(traffic_shift_workflow_id(route_name)).describe()
    except RPCError:  # never started
        return False
    return description.status == WorkflowExecutionStatus.RUNNING


async def start_traffic_shift(client: Client, settings: Settings, run: TrafficShiftInput) -> WorkflowHandle:
    """One shift per route at a time."""
    try:
        return await client.start_workflow(
            TrafficShift.run, run, id=traffic_shift_workflow_id(run.route_name), task_queue=settings.control_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
    except WorkflowAlreadyStartedError:
        raise Conflict(f"a traffic shift is already moving route {run.route_name}") from None


async def abort_traffic_shift(client: Client, route_name: str, reason: str) -> None:
    """The shift's `abort` signal; Conflict when no shift is running on the route."""
    if not await traffic_shift_running(client, route_name):
        raise Conflict(f"no traffic shift is running on route {route_name}")
    try:
        await client.get_workflow_handle(traffic_shift_workflow_id(route_name)).signal(TrafficShift.abort, reason)
    except RPCError:  # it finished between the check and the signal
        raise Conflict(f"no traffic shift is running on route {route_name}") from None
