"""AutoscaleEndpoint: the autoscaler of one endpoint, one workflow per endpoint.

On Kubernetes the spec becomes a HorizontalPodAutoscaler (the release is re-applied with it) and the workflow ends:
the HPA owns the replica count. On the local cluster this workflow is the HPA: every sync period it samples the
replicas' load, runs the same algorithm (`control.autoscaling`) and scales through a ScaleEndpoint child, until the
spec is disabled or the endpoint stops running. A new spec arrives as the `update` signal (the API signals-with-
start), and the loop continues-as-new to keep its history short.

With `min_replicas: 0` it also scales the endpoint to zero once no request arrived for `scale_to_zero_after_s`
(through the same ScaleEndpoint: drained, stopped, GPUs released; the endpoint stays RUNNING with 0 replicas and its
state shows `idle_since`), and back to one replica at the first sync after the gateway noted a request for it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.autoscaling import AutoscalingActivities
    from activities.endpoints import EndpointActivities
    from activities.releases import ReleaseActivities
    from control.autoscaling import idle_override, last_active, recommend, stabilize
    from control.payloads.autoscaling import (
        AutoscaleInput,
        AutoscalingRecord,
        AutoscalingSpec,
        LoadSample,
        Recommendation,
    )
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
        self._active_at: float | None = None  # the last time the endpoint had a request (seconds since the epoch)
        self._finished: float | None = None  # the replicas' finished-request count at the previous sample

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
        self._active_at = request.last_active_at
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
                                                sync_period_s=request.sync_period_s, history=history,
                                                last_active_at=self._active_at))

    def _newer_spec_or(self, request: AutoscaleInput, history: list, outcome: str) -> str:
        """A spec that arrived while this run was finishing must not be lost: continue with it."""
        if self._pending is not None:
            workflow.continue_as_new(AutoscaleInput(endpoint_id=request.endpoint_id, spec=self._pending,
                                                    sync_period_s=request.sync_period_s, history=history,
                                                    last_active_at=self._active_at))
        return outcome

    async def _sync(self, request: AutoscaleInput, spec: AutoscalingSpec, sample: LoadSample, history: list) -> dict:
        """One HPA sync: recommend, stabilize (updating `history` in place), scale when the count changes. An
        endpoint that may scale to zero goes to 0 when idle and back to 1 on demand, without the windows."""
        now = workflow.now().timestamp()
        self._active_at = last_active(self._active_at, sample, self._finished, now)
        self._finished = sample.requests_finished  # None without readings: the next reading is a new baseline
        recommended, reasons = recommend(spec, sample)
        override, why = idle_override(spec, sample, now, self._active_at)
        if override is None:
            decision, kept = stabilize(spec, history, now, sample.replicas, recommended)
        else:
            recommended, decision = override, override
            reasons.append(why)
            kept = [r for r in history if r.at >= now - max(spec.stabilization_window_s("scaleDown"),
                                                            spec.stabilization_window_s("scaleUp"))]
            kept.append(Recommendation(at=now, replicas=override))
        history[:] = kept
        state = {"at": workflow.now().isoformat(), "current_replicas": sample.replicas,
                 "recommended_replicas": recommended, "desired_replicas": decision,
                 "queue_depth": sample.queue_depth, "cpu_utilization": sample.cpu_utilization, "reasons": reasons}
        if spec.min_replicas == 0:
            state["idle_since"] = datetime.fromtimestamp(self._active_at, UTC).isoformat()
            state["scale_to_zero_after_s"] = spec.scale_to_zero_after_s
            if sample.last_request_at is not None:
                state["last_request_at"] = datetime.fromtimestamp(sample.last_request_at, UTC).isoformat()
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
