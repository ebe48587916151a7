"""DeployEndpoint: validate, reserve, transfer, apply, health-check and publish, as one durable workflow.

[wait for the optimizer] -> validate -> reserve GPUs -> TransferModel (child) -> render + apply the release -> wait
for replicas -> HealthCheck (child) -> publish the route -> RUNNING. A deploy accepted while the optimizer was still
choosing the config first waits for that run (an activity that polls and heartbeats, so a restarted worker picks the
wait up); an optimization that fails or finds no config meeting the targets fails the deploy with its reason.
A failure at any step leaves the endpoint FAILED with that step and the reason and removes what was created
(release, GPU reservation) unless the request asked to keep it.
Cancelling the workflow (DELETE while deploying) removes what was created and leaves the endpoint DELETED.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.endpoints import EndpointActivities
    from activities.releases import ReleaseActivities
    from control.payloads.deployments import (
        DeployEndpointInput,
        DeploymentPlan,
        EndpointProgress,
        EndpointRef,
        EndpointStatus,
        GpuReservationRequest,
        HealthCheckInput,
        HealthReport,
        PublishInput,
        ReleaseRequest,
        TransferModelInput,
    )
    from workflows.health_check import HealthCheck
    from workflows.ids import health_check_workflow_id, transfer_workflow_id
    from workflows.policies import INFRA_RETRY, RELEASE_CHANGE, failure_reason, release_wait, run_db_activity
    from workflows.transfer_model import TransferModel

# Waiting for a search that runs for minutes; the heartbeat is what notices a lost worker (and delivers a DELETE's
# cancellation).
OPTIMIZER_WAIT = dict(start_to_close_timeout=timedelta(hours=2), heartbeat_timeout=timedelta(seconds=30),
                      retry_policy=INFRA_RETRY)
STEPS = ("waiting for the optimizer", "validating", "reserving GPUs", "transferring model", "deploying runtime",
         "waiting for replicas", "health checks", "publishing route")


@workflow.defn
class DeployEndpoint:
    def __init__(self) -> None:
        self._step = "starting"
        self._plan: DeploymentPlan | None = None
        self._created: list[str] = []

    @workflow.query
    def progress(self) -> dict:
        return {"step": self._step, "created": list(self._created)}

    async def _progress(self, request: DeployEndpointInput, status: EndpointStatus, **fields) -> None:
        await run_db_activity(EndpointActivities.set_endpoint_progress,
                              EndpointProgress(endpoint_id=request.endpoint_id, status=status, **fields))

    async def _enter(self, request: DeployEndpointInput, step: str) -> None:
        self._step = step
        await self._progress(request, EndpointStatus.DEPLOYING, step=step)

    @workflow.run
    async def run(self, request: DeployEndpointInput) -> EndpointProgress:
        try:
            return await self._deploy(request)
        except (ActivityError, ChildWorkflowError) as error:
            if is_cancelled_exception(error):
                await self._cancelled(request)
                raise
            failed_step, reason = self._step, failure_reason(error)
            self._step = "cleaning up"
            if not request.keep_on_failure:
                await self._clean_up(request)
            outcome = EndpointProgress(endpoint_id=request.endpoint_id, status=EndpointStatus.FAILED,
                                       step=failed_step, error_step=failed_step, error_reason=reason)
            await run_db_activity(EndpointActivities.set_endpoint_progress, outcome)
            self._step = "failed"
            return outcome
        except asyncio.CancelledError:
            await self._cancelled(request)
            raise

    async def _cancelled(self, request: DeployEndpointInput) -> None:
        """DELETE while deploying: undo what exists, whatever the step; the run then ends as cancelled."""
        self._step = "cancelled: cleaning up"
        await self._clean_up(request)
        await self._progress(request, EndpointStatus.DELETED, step="deleted while deploying")

    async def _deploy(self, request: DeployEndpointInput) -> EndpointProgress:
        if request.optimization_workflow_id is not None:
            await self._enter(request, "waiting for the optimizer")
            await workflow.execute_activity_method(EndpointActivities.wait_for_recommendation, request,
                                                   **OPTIMIZER_WAIT)

        await self._enter(request, "validating")
        plan = await run_db_activity(EndpointActivities.load_deployment_plan, request)
        self._created.append("validated")
        self._plan = plan
        spec = plan.spec

        await self._enter(request, "reserving GPUs")
        self._created.append("gpus")
        await run_db_activity(EndpointActivities.reserve_gpus, GpuReservationRequest(
            endpoint_id=request.endpoint_id, cluster_id=plan.cluster_id, gpu_type=spec.resources.gpu_type,
            count=plan.gpus_needed))

        await self._enter(request, "transferring model")
        transfer = await workflow.execute_child_workflow(
            TransferModel.run,
            TransferModelInput(model_id=spec.model_id, bucket=plan.model_bucket, prefix=plan.model_prefix,
                               files=plan.model_files, cluster_kind=plan.cluster_kind),
            id=transfer_workflow_id(request.endpoint_id),
        )
        spec = spec.model_copy(update={"model_uri": transfer.model_uri})
        self._plan = plan.model_copy(update={"spec": spec})
        release = ReleaseRequest(cluster_id=plan.cluster_id, spec=spec, timeout_s=spec.startup_timeout_s)

        await self._enter(request, "deploying runtime")
        self._created.append("release")
        await workflow.execute_activity_method(ReleaseActivities.apply_release, release, **RELEASE_CHANGE)

        await self._enter(request, "waiting for replicas")
        state = await workflow.execute_activity_method(
            ReleaseActivities.wait_release_ready, release, **release_wait(release.timeout_s))

        await self._enter(request, "health checks")
        replicas = state.routable()  # a Kubernetes Service (reachable in-cluster), or each local replica
        if state.simulated_nodes:
            health = HealthReport(replicas_ready=state.ready_replicas,
                                  note="replicas run on simulated (kwok) nodes: Kubernetes reports them Ready, but no "
                                       "container runs there, so no test inference was sent")
        else:
            health = await workflow.execute_child_workflow(
                HealthCheck.run,
                HealthCheckInput(endpoint_id=request.endpoint_id, served_model_name=spec.served_model_name,
                                 replica_urls=[r.url for r in replicas if r.ready and r.url]),
                id=health_check_workflow_id(request.endpoint_id),
            )

        await self._enter(request, "publishing route")
        await run_db_activity(EndpointActivities.publish_endpoint, PublishInput(
            endpoint_id=request.endpoint_id, route_name=spec.served_model_name, replicas=replicas,
            replica_count=spec.replicas, ready_replicas=state.ready_replicas, health=health, first_generation=spec))
        outcome = EndpointProgress(endpoint_id=request.endpoint_id, status=EndpointStatus.RUNNING, step="running",
                                   ready_replicas=state.ready_replicas)
        await run_db_activity(EndpointActivities.set_endpoint_progress, outcome)
        self._step = "running"
        return outcome

    async def _clean_up(self, request: DeployEndpointInput) -> None:
        """Idempotent removal of everything this run may have created."""
        ref = EndpointRef(endpoint_id=request.endpoint_id)
        await run_db_activity(EndpointActivities.unpublish_endpoint, ref)
        if self._plan is not None and "release" in self._created:
            await workflow.execute_activity_method(
                ReleaseActivities.delete_release, ReleaseRequest(cluster_id=self._plan.cluster_id, spec=self._plan.spec),
                **RELEASE_CHANGE)
        await run_db_activity(EndpointActivities.release_gpus, ref)
