"""ScaleEndpoint and DeleteEndpoint: change or remove a deployed endpoint, idempotently."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.endpoints import EndpointActivities
    from activities.releases import ReleaseActivities
    from activities.workflow_control import WorkflowControlActivities
    from control.payloads.deployments import (
        DeployEndpointInput,
        EndpointProgress,
        EndpointRef,
        EndpointStatus,
        GpuReservationRequest,
        PublishInput,
        ReleaseRequest,
        ScaleEndpointInput,
        StopWorkflowsInput,
        TransferModelInput,
    )
    from workflows.ids import (
        autoscale_endpoint_workflow_id,
        deploy_endpoint_workflow_id,
        scale_endpoint_workflow_id,
        transfer_workflow_id,
    )
    from workflows.policies import INFRA_RETRY, RELEASE_CHANGE, failure_reason, release_wait, run_db_activity
    from workflows.transfer_model import TransferModel


@workflow.defn
class ScaleEndpoint:
    """Change the replica count of a RUNNING endpoint (0 is allowed: scaled to zero, GPUs released)."""

    def __init__(self) -> None:
        self._step = "starting"

    @workflow.query
    def progress(self) -> str:
        return self._step

    async def _apply(self, request: ScaleEndpointInput, replicas: int, wait: bool):
        plan = await run_db_activity(EndpointActivities.load_deployment_plan,
                                     DeployEndpointInput(endpoint_id=request.endpoint_id, replicas=replicas,
                                                         drain_timeout_s=request.drain_timeout_s))
        await run_db_activity(EndpointActivities.reserve_gpus, GpuReservationRequest(
            endpoint_id=request.endpoint_id, cluster_id=plan.cluster_id, gpu_type=plan.spec.resources.gpu_type,
            count=plan.gpus_needed if replicas else 0))
        transfer = await workflow.execute_child_workflow(
            TransferModel.run, TransferModelInput(model_id=plan.spec.model_id, bucket=plan.model_bucket,
                                                  prefix=plan.model_prefix, files=plan.model_files,
                                                  cluster_kind=plan.cluster_kind),
            id=transfer_workflow_id(request.endpoint_id) + f"-scale-{replicas}")
        spec = plan.spec.model_copy(update={"model_uri": transfer.model_uri})
        release = ReleaseRequest(cluster_id=plan.cluster_id, spec=spec, timeout_s=spec.startup_timeout_s)
        await workflow.execute_activity_method(ReleaseActivities.apply_release, release, **RELEASE_CHANGE)
        state = await workflow.execute_activity_method(
            ReleaseActivities.wait_release_ready if wait else ReleaseActivities.release_state, release,
            **release_wait(release.timeout_s))
        await run_db_activity(EndpointActivities.publish_endpoint, PublishInput(
            endpoint_id=request.endpoint_id, route_name=plan.spec.served_model_name, replicas=state.routable(),
            replica_count=replicas, ready_replicas=state.ready_replicas))
        return state

    @workflow.run
    async def run(self, request: ScaleEndpointInput) -> EndpointProgress:
        self._step = f"scaling to {request.replicas}"
        try:
            state = await self._apply(request, request.replicas, wait=True)
        except (ActivityError, ChildWorkflowError) as error:
            reason = failure_reason(error)
            self._step = f"scale failed; restoring {request.previous_replicas}"
            await self._apply(request, request.previous_replicas, wait=False)
            outcome = EndpointProgress(endpoint_id=request.endpoint_id, status=EndpointStatus.RUNNING, step="running",
                                       error_step=f"scaling to {request.replicas}", error_reason=reason)
            await run_db_activity(EndpointActivities.record_scale_result, outcome)
            return outcome
        outcome = EndpointProgress(endpoint_id=request.endpoint_id, status=EndpointStatus.RUNNING, step="running",
                                   ready_replicas=state.ready_replicas)
        await run_db_activity(EndpointActivities.record_scale_result, outcome)
        self._step = "done"
        return outcome


@workflow.defn
class DeleteEndpoint:
    """Stop the autoscaler and any deploy or scale in flight, remove the release, the routes and the GPU
    reservation."""

    @workflow.run
    async def run(self, ref: EndpointRef) -> EndpointProgress:
        await run_db_activity(
            EndpointActivities.set_endpoint_progress,
            EndpointProgress(endpoint_id=ref.endpoint_id, status=EndpointStatus.DELETING, step="deleting"))
        await workflow.execute_activity_method(
            WorkflowControlActivities.stop_workflows,
            StopWorkflowsInput(workflow_ids=[autoscale_endpoint_workflow_id(ref.endpoint_id),
                                             deploy_endpoint_workflow_id(ref.endpoint_id),
                                             scale_endpoint_workflow_id(ref.endpoint_id)]),
            start_to_close_timeout=timedelta(minutes=15), heartbeat_timeout=timedelta(seconds=30),
            retry_policy=INFRA_RETRY)
        await run_db_activity(EndpointActivities.unpublish_endpoint, ref)
        target = await run_db_activity(EndpointActivities.release_target, ref)
        if target is not None:
            await workflow.execute_activity_method(ReleaseActivities.delete_release, target, **RELEASE_CHANGE)
        await run_db_activity(EndpointActivities.release_gpus, ref)
        outcome = EndpointProgress(endpoint_id=ref.endpoint_id, status=EndpointStatus.DELETED, step="deleted")
        await run_db_activity(EndpointActivities.set_endpoint_progress, outcome)
        return outcome
