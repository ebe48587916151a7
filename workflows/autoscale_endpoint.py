"""AutoscaleEndpoint: the autoscaler of one endpoint, one workflow per endpoint.

On Kubernetes the spec becomes a HorizontalPodAutoscaler (the release is re-applied with it) and the workflow ends:
the HPA owns the replica count. On the local cluster this workflow is the HPA: every sync period it samples the
replicas' load, runs the same algorithm (`control.autoscaling`) and scales through a ScaleEndpoint child, until the
spec is disabled or the endpoint stops running. A new spec arrives as the `update` signal (the API signals-with-
start), and the loop continues-as-new to keep its history short.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.autoscaling import AutoscalingActivities
    from activities.endpoints import EndpointActivities
    from activities.releases import ReleaseActivities
    from control.autoscaling import recommend, stabilize
    from control.payloads.autoscaling import AutoscaleInput, AutoscalingRecord, AutoscalingSpec, LoadSample
    from control.payloads.deployments import (
        DeployEndpointInput,
        EndpointRef,
        GpuReservationRequest,
        ReleaseRequest,
        ScaleEndpointInput,
    )
    from workflows.ids import scale_endpoint_workflow_id
    from workflows.manage_endpoint import ScaleEndpoint
    from workflows.policies import INFRA_RETRY, RELEASE_CHANGE, failure_reason, run_db_activity

SYNCS_PER_RUN = 200  # then continue-as-new
GONE_OR_FAILED = ("DELETING", "DELETED", "FAILED")


@workflow.defn
class AutoscaleEndpoint:
    def __init__(self) -> None:
        self._pending: AutoscalingSpec | None = None
        self._state: dict = {}

    @workflow.signal
    def update(self, spec: AutoscalingSpec) -> None:
        self._pending = spec

    @workflow.query
    def state(self) -> dict:
        return self._state

    async def _record(self, endpoint_id, spec: AutoscalingSpec, state: dict) -> str:
        return await run_db_activity(AutoscalingActivities.record_autoscaling,
                                     AutoscalingRecord(endpoint_id=endpoint_id, spec=spec, state=state))

    async def _apply_to_kubernetes(self, request: AutoscaleInput, spec: AutoscalingSpec) -> None:
        """Hold GPUs for the HPA's ceiling (it adds pods without asking us), then re-apply the release: its values
        now carry the HPA (or, disabled, drop it and set replicas again, holding GPUs for those)."""
        plan = await run_db_activity(EndpointActivities.load_deployment_plan,
                                     DeployEndpointInput(endpoint_id=request.endpoint_id))
        replicas = spec.max_replicas if spec.enabled else plan.spec.replicas
        await run_db_activity(
            EndpointActivities.reserve_gpus,
            GpuReservationRequest(endpoint_id=request.endpoint_id, cluster_id=plan.cluster_id,
                                  gpu_type=plan.spec.resources.gpu_type,
                                  count=plan.spec.resources.gpu_count * replicas))
        await workflow.execute_activity_method(
            ReleaseActivities.apply_release, ReleaseRequest(cluster_id=plan.cluster_id, spec=plan.spec),
            **RELEASE_CHANGE)

    @workflow.run
    async def run(self, request: AutoscaleInput) -> str:
        spec = self._pending or request.spec
        self._pending = None
        history = list(request.history)
        if spec is None:
            return "no autoscaling spec"
        kind = await self._record(request.endpoint_id, spec, {"message": "applying"})
        if kind != "local":
            try:
                await self._apply_to_kubernetes(request, spec)
            except ActivityError as error:  # e.g. the GPUs for max_replicas were taken meanwhile
                message = f"not applied: {failure_reason(error)}"
                await self._record(request.endpoint_id, spec.model_copy(update={"enabled": False}), {"message": message})
                return self._newer_spec_or(request, history, message)
            message = "HorizontalPodAutoscaler applied" if spec.enabled else "HorizontalPodAutoscaler removed"
            await self._record(request.endpoint_id, spec, {"message": message})
            return self._newer_spec_or(request, history, message)
        if not spec.enabled:
            await self._record(request.endpoint_id, spec, {"message": "disabled"})
            return self._newer_spec_or(request, history, "disabled")

        for _ in range(SYNCS_PER_RUN):
            sample: LoadSample = await workflow.execute_activity_method(
                AutoscalingActivities.sample_load, EndpointRef(endpoint_id=request.endpoint_id),
                start_to_close_timeout=timedelta(seconds=60), heartbeat_timeout=timedelta(seconds=30),
                retry_policy=INFRA_RETRY)
            if sample.endpoint_status in GONE_OR_FAILED:
                # Stopped for good: the spec is kept but disabled, so the user owns the count again.
                message = f"endpoint is {sample.endpoint_status}: autoscaler stopped"
                await self._record(request.endpoint_id, spec.model_copy(update={"enabled": False}), {"message": message})
                return self._newer_spec_or(request, history, message)
            if sample.endpoint_status != "RUNNING":  # being (re)deployed: look again next period
                state = {"at": workflow.now().isoformat(), "message": f"waiting: endpoint is {sample.endpoint_status}"}
            else:
                state = await self._sync(request, spec, sample, history)
            self._state = state
            await self._save_state(request, spec, state)
            try:
                await workflow.wait_condition(lambda: self._pending is not None,
                                              timeout=timedelta(seconds=request.sync_period_s))
                break  # a new spec: continue-as-new applies it
            except asyncio.TimeoutError:
                continue  # the next sync period
        workflow.continue_as_new(AutoscaleInput(endpoint_id=request.endpoint_id, spec=self._pending or spec,
                                                sync_period_s=request.sync_period_s, history=history))

    def _newer_spec_or(self, request: AutoscaleInput, history: list, outcome: str) -> str:
        """A spec that arrived while this run was finishing must not be lost: continue with it."""
        if self._pending is not None:
            workflow.continue_as_new(AutoscaleInput(endpoint_id=request.endpoint_id, spec=self._pending,
                                                    sync_period_s=request.sync_period_s, history=history))
        return outcome

    async def _sync(self, request: AutoscaleInput, spec: AutoscalingSpec, sample: LoadSample, history: list) -> dict:
        """One HPA sync: recommend, stabilize (updating `history` in place), scale when the count changes."""
        recommended, reasons = recommend(spec, sample)
        decision, kept = stabilize(spec, history, workflow.now().timestamp(), sample.replicas, recommended)
        history[:] = kept
        state = {"at": workflow.now().isoformat(), "current_replicas": sample.replicas,
                 "recommended_replicas": recommended, "desired_replicas": decision,
                 "queue_depth": sample.queue_depth, "cpu_utilization": sample.cpu_utilization, "reasons": reasons}
        if decision != sample.replicas:
            await self._save_state(request, spec, {**state, "outcome": f"scaling {sample.replicas} -> {decision}"})
            state["outcome"] = await self._scale(request, sample.replicas, decision)
        return state

    async def _save_state(self, request: AutoscaleInput, spec: AutoscalingSpec, state: dict) -> None:
        await run_db_activity(AutoscalingActivities.record_autoscaling_state,
                              AutoscalingRecord(endpoint_id=request.endpoint_id, spec=spec, state=state))

    async def _scale(self, request: AutoscaleInput, current: int, replicas: int) -> str:
        """Scale through the same workflow as a user's POST /scale (GPU reservation, routes, rollback on failure)."""
        try:
            result = await workflow.execute_child_workflow(
                ScaleEndpoint.run,
                ScaleEndpointInput(endpoint_id=request.endpoint_id, replicas=replicas, previous_replicas=current),
                id=scale_endpoint_workflow_id(request.endpoint_id), parent_close_policy=ParentClosePolicy.ABANDON)
        except WorkflowAlreadyStartedError:
            return "a scale is already in flight; retried next period"
        except (ActivityError, ChildWorkflowError) as error:
            return f"scaling {current} -> {replicas} failed: {failure_reason(error)}"
        if result.error_reason:
            return f"scaling {current} -> {replicas} failed: {result.error_reason}"
        return f"scaled {current} -> {replicas}"
