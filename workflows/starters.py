"""Starting workflows from the API and the bootstrap: one place that knows ids, queues and idempotency."""

from __future__ import annotations

from uuid import UUID

from datetime import timedelta

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
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from control.payloads.clusters import ClusterSpec, RegisterClusterInput
from core.settings import Settings
from control.payloads.models import RegisterModelInput
from control.payloads.monitoring import ReoptimizeInput
from workflows.ids import register_cluster_workflow_id, register_model_workflow_id
from workflows.register_cluster import RegisterCluster
from workflows.register_model import RegisterModel
from workflows.reoptimize import Reoptimize

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


async def ensure_reoptimize_schedule(client: Client, settings: Settings) -> None:
    """The Stage 5 schedule: Reoptimize over every RUNNING endpoint each `reoptimize_interval_s` (a run still going
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
