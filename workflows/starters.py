"""Starting workflows from the API and the bootstrap: one place that knows ids, queues and idempotency."""

from __future__ import annotations

from uuid import UUID

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from core.payloads.clusters import ClusterSpec, RegisterClusterInput
from core.settings import Settings
from core.payloads.models import RegisterModelInput
from workflows.ids import register_cluster_workflow_id, register_model_workflow_id
from workflows.register_cluster import RegisterCluster
from workflows.register_model import RegisterModel


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
