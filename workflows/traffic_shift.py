"""TrafficShift: move a route's traffic to a new endpoint (blue-green, or an A/B rollout in steps).

blue-green: validate the new endpoint, then swap all traffic in one transaction. gradual: raise the new endpoint's
weight step by step (the old endpoints share the rest as before); after each step's interval its live p99 TTFT and
latency (from its replicas' vLLM histograms) must hold the SLO, or every weight goes back to where it was. An
`abort` signal rolls back at any point before the end. Finally the old endpoints leave the route after a drain
period and, on request, are deleted.
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
        Slo,
        SloProbe,
        SloReading,
        TrafficShiftInput,
        Weights,
    )
    from workflows.ids import delete_endpoint_workflow_id
    from workflows.manage_endpoint import DeleteEndpoint
    from workflows.policies import INFRA_RETRY, failure_reason, run_db_activity

# Asking the new endpoint's replicas over HTTP (does it serve, what do its histograms say).
REPLICA_READ = dict(start_to_close_timeout=timedelta(seconds=60), retry_policy=INFRA_RETRY)


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

    async def _slo(self, endpoint_id: UUID, baseline: dict[str, float]) -> SloReading:
        return await workflow.execute_activity_method(
            TrafficActivities.read_slo, SloProbe(endpoint_id=endpoint_id, baseline=baseline), **REPLICA_READ)

    async def _roll_back(self, plan: ShiftPlan, reason: str) -> str:
        await self._weights(plan.route_name, plan.original)
        await self._record(plan.route_name, status=ShiftStatus.ROLLED_BACK.value, step="rolled back", reason=reason,
                           weights={str(k): v for k, v in plan.original.items()})
        return f"rolled back: {reason}"

    @workflow.run
    async def run(self, request: TrafficShiftInput) -> str:
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
            return f"failed: {failure_reason(error)}"

        try:
            return await self._shift(plan, shift)
        except ActivityError as error:  # e.g. the route or every endpoint vanished mid-shift
            reason = failure_reason(error)
            try:
                await self._weights(plan.route_name, plan.original)
            except ActivityError:
                pass  # nothing left to restore
            await self._record(plan.route_name, status=ShiftStatus.FAILED.value, step="failed", reason=reason)
            return f"failed: {reason}"

    async def _shift(self, plan: ShiftPlan, shift: ShiftRequest) -> str:
        steps = [100] if shift.strategy == "blue-green" else shift.steps
        for weight in steps:
            if self._abort_reason:
                return await self._roll_back(plan, self._abort_reason)
            baseline = await self._slo(plan.to_endpoint_id, {})
            weights = split(plan.original, plan.to_endpoint_id, weight)
            await self._weights(plan.route_name, weights)
            await self._record(plan.route_name, step=f"{weight} % to {plan.to_endpoint_name}",
                               weights={str(k): v for k, v in weights.items()})
            if shift.strategy == "blue-green":
                continue
            try:
                await workflow.wait_condition(lambda: self._abort_reason is not None,
                                              timeout=timedelta(seconds=shift.step_interval_s))
                return await self._roll_back(plan, self._abort_reason or "aborted")
            except asyncio.TimeoutError:
                pass
            reading = await self._slo(plan.to_endpoint_id, baseline.counters)
            verdict = self._judge(reading, shift.slo)
            self._state["steps"] = [*self._state["steps"], {"weight": weight, "requests": reading.requests,
                                                            "ttft_p99_ms": reading.ttft_p99_ms,
                                                            "latency_p99_ms": reading.latency_p99_ms,
                                                            "verdict": verdict or "held"}]
            if verdict:
                return await self._roll_back(plan, f"at {weight} %: {verdict}")

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
        return "completed"

    @staticmethod
    def _judge(reading: SloReading, slo: Slo) -> str | None:
        """Why the step fails its SLO, or None when it holds."""
        if reading.replicas_read == 0:
            return "no replica of the new endpoint answered /metrics"
        if reading.requests < slo.min_requests:
            return f"only {reading.requests} requests reached the new endpoint (at least {slo.min_requests} needed)"
        if reading.ttft_p99_ms is not None and reading.ttft_p99_ms > slo.max_ttft_p99_ms:
            return f"TTFT p99 {reading.ttft_p99_ms:.0f} ms > {slo.max_ttft_p99_ms:.0f} ms"
        if reading.latency_p99_ms is not None and reading.latency_p99_ms > slo.max_latency_p99_ms:
            return f"latency p99 {reading.latency_p99_ms:.0f} ms > {slo.max_latency_p99_ms:.0f} ms"
        return None
