"""TrafficShift: move a route's traffic to a new endpoint (blue-green, or an A/B rollout in steps).

blue-green: validate the new endpoint, then swap all traffic in one transaction. gradual: raise the new endpoint's
weight step by step (the old endpoints share the rest as before); after each step's interval a canary analysis
compares the new endpoint with the old ones over the step, from the gateway's per-request timings
(control.canary). A step with too few requests on the new endpoint waits for traffic, up to the SLO's
traffic_wait_s, then the shift FAILS; a step the canary loses rolls every weight back to where it was and the shift
ends ROLLED_BACK. Each step's decision and numbers go on the route's shift record. An `abort` signal rolls back at
any point before the end. Finally the old endpoints leave the route after a drain period and, on request, are
deleted. The workflow's result is the final shift record (status COMPLETED, ROLLED_BACK or FAILED, and the steps).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID

from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.traffic import TrafficActivities
    from control.payloads.deployments import EndpointRef
    from control.payloads.traffic import (
        ShiftPlan,
        ShiftRecord,
        ShiftRequest,
        ShiftStatus,
        StepProbe,
        TrafficShiftInput,
        Weights,
    )
    from workflows.ids import delete_endpoint_workflow_id
    from workflows.manage_endpoint import DeleteEndpoint
    from workflows.policies import INFRA_RETRY, failure_reason, run_db_activity

# Asking the new endpoint's replicas over HTTP (does it serve), and a step's analysis (usage rows, queue gauges).
REPLICA_READ = dict(start_to_close_timeout=timedelta(seconds=60), retry_policy=INFRA_RETRY)
# While a step waits for enough canary requests, it is analysed again this often.
TRAFFIC_POLL_S = 5.0


def split(original: dict[UUID, int], new: UUID, weight: int) -> dict[UUID, int]:
    """The new endpoint at `weight`; the others share 100 - weight in their original proportions (whole numbers
    adding up to 100; with no other weight left, the first old endpoint takes the rest)."""
    others = {endpoint: w for endpoint, w in original.items() if endpoint != new}
    rest, total = 100 - weight, sum(others.values())
    shares = {endpoint: (rest * w // total if total else 0) for endpoint, w in others.items()}
    if others and sum(shares.values()) < rest:
        largest = max(others, key=lambda endpoint: (others[endpoint], str(endpoint)))
        shares[largest] += rest - sum(shares.values())
    return {**shares, new: weight}


@workflow.defn
class TrafficShift:
    def __init__(self) -> None:
        self._abort_reason: str | None = None
        self._state: dict = {}

    @workflow.signal
    def abort(self, reason: str) -> None:
        self._abort_reason = reason or "aborted"

    @workflow.query
    def progress(self) -> dict:
        return self._state

    async def _record(self, plan_route: str, **changes) -> None:
        self._state = {**self._state, **changes}
        await run_db_activity(TrafficActivities.record_shift, ShiftRecord(route_name=plan_route, state=self._state))

    async def _weights(self, route: str, weights: dict[UUID, int]) -> None:
        await run_db_activity(TrafficActivities.set_route_weights, Weights(route_name=route, weights=weights))

    async def _analyze(self, probe: StepProbe) -> dict:
        return await workflow.execute_activity_method(TrafficActivities.analyze_step, probe, **REPLICA_READ)

    async def _end(self, plan: ShiftPlan, status: ShiftStatus, reason: str) -> dict:
        """Every weight back to where it was; the shift ends `status` (ROLLED_BACK or FAILED) with the reason."""
        await self._weights(plan.route_name, plan.original)
        await self._record(plan.route_name, status=status.value, step=status.value.lower().replace("_", " "),
                           reason=reason, weights={str(k): v for k, v in plan.original.items()})
        return self._state

    async def _roll_back(self, plan: ShiftPlan, reason: str) -> dict:
        return await self._end(plan, ShiftStatus.ROLLED_BACK, reason)

    @workflow.run
    async def run(self, request: TrafficShiftInput) -> dict:
        shift = request.request
        self._state = {"status": ShiftStatus.RUNNING.value, "strategy": shift.strategy, "workflow_id": workflow.info().workflow_id,
                       "to_endpoint_id": str(shift.to_endpoint_id), "step": "validating", "steps": [], "reason": None}
        try:
            plan: ShiftPlan = await run_db_activity(TrafficActivities.load_shift_plan, request)
            await self._record(request.route_name, to_endpoint=plan.to_endpoint_name,
                               original={str(k): v for k, v in plan.original.items()})
            await workflow.execute_activity_method(
                TrafficActivities.check_endpoint_serves, EndpointRef(endpoint_id=plan.to_endpoint_id), **REPLICA_READ)
        except ActivityError as error:
            await self._record(request.route_name, status=ShiftStatus.FAILED.value, step="validating",
                               reason=failure_reason(error))
            return self._state

        try:
            return await self._shift(plan, request)
        except ActivityError as error:  # e.g. the route or every endpoint vanished mid-shift
            reason = failure_reason(error)
            try:
                await self._weights(plan.route_name, plan.original)
            except ActivityError:
                pass  # nothing left to restore
            await self._record(plan.route_name, status=ShiftStatus.FAILED.value, step="failed", reason=reason)
            return self._state

    async def _shift(self, plan: ShiftPlan, request: TrafficShiftInput) -> dict:
        shift = request.request
        steps = [100] if shift.strategy == "blue-green" else shift.steps
        stable_ids = [endpoint for endpoint, weight in plan.original.items()
                      if endpoint != plan.to_endpoint_id and weight > 0]
        for weight in steps:
            if self._abort_reason:
                return await self._roll_back(plan, self._abort_reason)
            weights = split(plan.original, plan.to_endpoint_id, weight)
            await self._weights(plan.route_name, weights)
            await self._record(plan.route_name, step=f"{weight} % to {plan.to_endpoint_name}",
                               weights={str(k): v for k, v in weights.items()})
            if shift.strategy == "blue-green":
                continue
            window_from = workflow.now()
            if await self._aborted_within(shift.step_interval_s):
                return await self._roll_back(plan, self._abort_reason or "aborted")
            waited_from = workflow.now()
            while True:
                analysis = await self._analyze(StepProbe(
                    project_id=request.project_id, route_name=plan.route_name, weight=weight,
                    canary_id=plan.to_endpoint_id, stable_ids=stable_ids, window_from=window_from,
                    window_to=workflow.now(), slo=shift.slo))
                waited = (workflow.now() - waited_from).total_seconds()
                if analysis["verdict"] != "insufficient" or waited >= shift.slo.traffic_wait_s:
                    break
                await self._record(plan.route_name, step=f"{weight} % to {plan.to_endpoint_name}: waiting for "
                                   f"traffic ({analysis['requests']}/{shift.slo.min_requests} requests)")
                if await self._aborted_within(min(TRAFFIC_POLL_S, shift.slo.traffic_wait_s - waited)):
                    return await self._roll_back(plan, self._abort_reason or "aborted")
            self._state["steps"] = [*self._state["steps"], analysis]
            reasons = "; ".join(analysis["reasons"])
            if analysis["verdict"] == "insufficient":
                return await self._end(plan, ShiftStatus.FAILED, f"at {weight} %: {reasons} within "
                                       f"{shift.step_interval_s + shift.slo.traffic_wait_s:g} s")
            if analysis["verdict"] == "failed":
                return await self._roll_back(plan, f"at {weight} %: {reasons}")
            await self._record(plan.route_name)

        await self._record(plan.route_name, step=f"draining the old endpoints for {shift.drain_s:g} s")
        await workflow.sleep(timedelta(seconds=shift.drain_s))
        await self._weights(plan.route_name, {plan.to_endpoint_id: 100})
        old = [endpoint for endpoint in plan.original if endpoint != plan.to_endpoint_id]
        if shift.remove_old:
            for endpoint in old:
                await workflow.start_child_workflow(
                    DeleteEndpoint.run, EndpointRef(endpoint_id=endpoint), id=delete_endpoint_workflow_id(endpoint),
                    parent_close_policy=ParentClosePolicy.ABANDON)
        await self._record(plan.route_name, status=ShiftStatus.COMPLETED.value, step="done",
                           weights={str(plan.to_endpoint_id): 100}, removed=[str(e) for e in old] if shift.remove_old else [])
        return self._state

    async def _aborted_within(self, seconds: float) -> bool:
        """Wait `seconds`; True as soon as an abort arrives."""
        try:
            await workflow.wait_condition(lambda: self._abort_reason is not None, timeout=timedelta(seconds=seconds))
            return True
        except asyncio.TimeoutError:
            return False
