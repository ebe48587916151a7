"""RollingUpdate: replace a RUNNING endpoint's replicas with a new generation without dropping a request.

POST /deploy on a RUNNING endpoint whose configuration changed runs this (under the deploy's workflow id, so a
DELETE cancels it like a deploy). [wait for the optimizer] -> plan -> TransferModel (child) -> the planned batches:
new-generation replicas start under a release of their own, pass the warm-up gate (streamed requests answered with
TTFT under the target, not merely /health) and join the route beside the old ones; then old replicas drain (out of
the route, in-flight requests finished) and stop. The plan is made from the GPUs the endpoint may hold: a surge on
spare GPUs, else replace in place one replica at a time (maxSurge 0), said in the plan before the first step.

A failure at any step, or the `revert` signal, rolls back: the old generation is brought back to its replica count
(warmed up and routed) before the new one drains and stops; the old one is never stopped before the new one serves
in its place. The endpoint shows UPDATING with the step while it runs and RUNNING afterwards (with the failure's step
and reason after a rollback); `rollout` on the endpoint keeps the plan and each step's outcome.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.endpoints import EndpointActivities
    from activities.releases import ReleaseActivities
    from control.planning import WARMUP_TTFT_MS_DEFAULT, plan_rollout
    from control.payloads.deployments import (
        DeployEndpointInput,
        DeployedGeneration,
        DeploymentState,
        EndpointProgress,
        EndpointStatus,
        GpuReservationRequest,
        PublishInput,
        ReleaseRequest,
        RollingUpdateInput,
        RolloutPrepared,
        RolloutRecord,
        RolloutStep,
        TransferModelInput,
        WarmUpInput,
    )
    from workflows.deploy_endpoint import OPTIMIZER_WAIT
    from workflows.ids import transfer_workflow_id
    from workflows.policies import RELEASE_CHANGE, failure_reason, release_wait, run_db_activity
    from workflows.transfer_model import TransferModel

# A replica that just turned ready may take a moment to answer completions: a few tries; a slow TTFT fails at once.
WARMUP = dict(start_to_close_timeout=timedelta(minutes=5), heartbeat_timeout=timedelta(seconds=70),
              retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3))


class Reverted(Exception):
    """The revert signal arrived: stop at this safe point and roll back."""


@workflow.defn
class RollingUpdate:
    def __init__(self) -> None:
        self._step = "starting"
        self._revert: str | None = None
        self._prepared: RolloutPrepared | None = None
        self._counts = {"old": 0, "new": 0}
        self._states: dict[str, DeploymentState] = {}
        self._warmed: set[str] = set()
        self._done: list[dict] = []

    @workflow.signal
    def revert(self, reason: str) -> None:
        """Go back to the serving generation: the update stops at the next safe point (between batches)."""
        self._revert = reason or "revert requested"

    @workflow.query
    def progress(self) -> dict:
        return {"step": self._step, "replicas": dict(self._counts), "reverting": self._revert}

    # ------------------------------------------------------------------------------------------------ records
    async def _enter(self, request: RollingUpdateInput, step: str) -> None:
        self._step = step
        await run_db_activity(EndpointActivities.set_endpoint_progress, EndpointProgress(
            endpoint_id=request.endpoint_id, status=EndpointStatus.UPDATING, step=step))

    async def _record(self, status: str, **extra) -> None:
        prepared = self._prepared
        assert prepared is not None
        await run_db_activity(EndpointActivities.record_rollout, RolloutRecord(
            endpoint_id=prepared.new.spec.endpoint_id, rollout={
                "status": status, "from_generation": prepared.old.generation,
                "to_generation": prepared.new.generation, "max_surge": prepared.plan.max_surge,
                "plan": prepared.plan.summary, "steps": [s.model_dump() for s in prepared.plan.steps],
                "warmup_ttft_ms": prepared.warmup_ttft_ms, "done": list(self._done), "step": self._step, **extra}))

    async def _settle(self, request: RollingUpdateInput, error_step: str | None = None,
                      reason: str | None = None) -> EndpointProgress:
        outcome = EndpointProgress(endpoint_id=request.endpoint_id, status=EndpointStatus.RUNNING, step="running",
                                   error_step=error_step, error_reason=reason)
        await run_db_activity(EndpointActivities.set_endpoint_progress, outcome)
        self._step = "running"
        return outcome

    # ------------------------------------------------------------------------------------------------ run
    @workflow.run
    async def run(self, request: RollingUpdateInput) -> EndpointProgress:
        try:
            if request.optimization_workflow_id is not None:
                await self._enter(request, "rolling update: waiting for the optimizer")
                await workflow.execute_activity_method(
                    EndpointActivities.wait_for_recommendation,
                    DeployEndpointInput(endpoint_id=request.endpoint_id,
                                        optimization_workflow_id=request.optimization_workflow_id), **OPTIMIZER_WAIT)
            await self._enter(request, "rolling update: planning")
            prepared = await run_db_activity(EndpointActivities.prepare_rollout, request)
        except (ActivityError, ChildWorkflowError) as error:
            if is_cancelled_exception(error):
                raise
            return await self._settle(request, self._step, failure_reason(error))  # nothing was started
        self._prepared = prepared
        self._counts = {"old": prepared.old.replicas, "new": 0}
        self._states["old"] = await workflow.execute_activity_method(
            ReleaseActivities.release_state, self._release("old", prepared.old.replicas), **RELEASE_CHANGE)
        self._step = f"rolling update to generation {prepared.new.generation}: {prepared.plan.summary}"
        await self._record("RUNNING")
        try:
            await self._enter(request, f"rolling update to generation {prepared.new.generation}: transferring model")
            transfer = await workflow.execute_child_workflow(
                TransferModel.run,
                TransferModelInput(model_id=prepared.new.spec.model_id, bucket=prepared.model_bucket,
                                   prefix=prepared.model_prefix, files=prepared.model_files,
                                   cluster_kind=prepared.cluster_kind),
                id=f"{transfer_workflow_id(request.endpoint_id)}-g{prepared.new.generation}")
            spec = prepared.new.spec.model_copy(update={"model_uri": transfer.model_uri})
            prepared = prepared.model_copy(update={"new": prepared.new.model_copy(update={"spec": spec})})
            self._prepared = prepared
            steps = prepared.plan.steps
            for number, step in enumerate(steps, 1):
                if self._revert is not None:
                    raise Reverted(self._revert)
                await self._enter(request, f"rolling update to generation {prepared.new.generation}: step "
                                           f"{number}/{len(steps)}: {describe(step, prepared.plan.max_surge)}")
                await self._move(new=step.new_replicas, old=step.old_replicas)
                self._done.append({**step.model_dump(), "outcome": "done"})
                await self._record("RUNNING")
        except asyncio.CancelledError:
            await self._cancelled()
            raise
        except (ActivityError, ChildWorkflowError, Reverted) as error:
            if isinstance(error, (ActivityError, ChildWorkflowError)) and is_cancelled_exception(error):
                await self._cancelled()
                raise
            reverted = isinstance(error, Reverted)
            failed_step = self._step
            reason = str(error) if reverted else failure_reason(error)
            try:
                await self._roll_back(request)
            except (ActivityError, ChildWorkflowError) as rollback_error:
                if is_cancelled_exception(rollback_error):
                    raise
                await self._record("FAILED", error={"step": failed_step, "reason": reason})
                return await self._settle(request, self._step, f"{reason}; the rollback stopped too: "
                                                               f"{failure_reason(rollback_error)}")
            await self._record("REVERTED" if reverted else "ROLLED_BACK", error={"step": failed_step,
                                                                                "reason": reason})
            if reverted:
                return await self._settle(request)
            return await self._settle(request, failed_step, f"{reason} (rolled back to generation "
                                                            f"{prepared.old.generation})")
        await run_db_activity(EndpointActivities.finish_rollout, prepared)
        self._step = "running"
        await self._record("COMPLETED")
        return await self._settle(request)

    # ------------------------------------------------------------------------------------------------ moves
    def _generation(self, which: str) -> DeployedGeneration:
        assert self._prepared is not None
        return self._prepared.old if which == "old" else self._prepared.new

    def _gpus(self, counts: dict[str, int]) -> int:
        return sum(counts[w] * self._generation(w).spec.resources.gpu_count for w in ("old", "new"))

    async def _hold(self, counts: dict[str, int]) -> None:
        prepared = self._prepared
        assert prepared is not None
        await run_db_activity(EndpointActivities.reserve_gpus, GpuReservationRequest(
            endpoint_id=prepared.new.spec.endpoint_id, cluster_id=prepared.cluster_id,
            gpu_type=prepared.new.spec.resources.gpu_type, count=self._gpus(counts)))

    async def _move(self, new: int, old: int, gate_ms: dict[str, float] | None = None) -> None:
        """Both generations to these counts: starts first (held GPUs, ready, warmed up, routed), then stops (each
        drained out of the route before its process stops), the GPUs held following."""
        assert self._prepared is not None
        target = {"new": new, "old": old}
        gate_ms = gate_ms or {"new": self._prepared.warmup_ttft_ms, "old": WARMUP_TTFT_MS_DEFAULT}
        for which in ("new", "old"):
            if target[which] > self._counts[which]:
                await self._hold({**self._counts, which: target[which]})
                await self._start(which, target[which], gate_ms[which])
        for which in ("old", "new"):
            if target[which] < self._counts[which]:
                await self._stop(which, target[which])
                await self._hold(self._counts)

    def _release(self, which: str, replicas: int) -> ReleaseRequest:
        assert self._prepared is not None
        spec = self._generation(which).spec.model_copy(update={"replicas": replicas})
        return ReleaseRequest(cluster_id=self._prepared.cluster_id, spec=spec, timeout_s=spec.startup_timeout_s)

    async def _start(self, which: str, replicas: int, max_ttft_ms: float) -> None:
        release = self._release(which, replicas)
        await workflow.execute_activity_method(ReleaseActivities.apply_release, release, **RELEASE_CHANGE)
        self._counts[which] = replicas  # they hold GPUs from here on; only warmed-up ones are routed
        state = await workflow.execute_activity_method(ReleaseActivities.wait_release_ready, release,
                                                       **release_wait(release.timeout_s))
        fresh = [r.url for r in state.routable() if r.ready and r.url and r.url not in self._warmed]
        if fresh and not state.simulated_nodes:  # kwok nodes run no server: nothing could answer
            await workflow.execute_activity_method(ReleaseActivities.warm_up, WarmUpInput(
                served_model_name=release.spec.served_model_name, urls=fresh, max_ttft_ms=max_ttft_ms), **WARMUP)
            self._warmed.update(fresh)
        self._states[which] = state
        await self._route()

    async def _stop(self, which: str, replicas: int) -> None:
        release = self._release(which, replicas)
        if replicas == 0:
            await workflow.execute_activity_method(ReleaseActivities.delete_release, release, **RELEASE_CHANGE)
            self._states.pop(which, None)
        else:
            self._states[which] = await workflow.execute_activity_method(ReleaseActivities.apply_release, release,
                                                                         **RELEASE_CHANGE)
        self._counts[which] = replicas
        await self._route()

    async def _route(self) -> None:
        """The route carries the warmed-up replicas of both generations."""
        assert self._prepared is not None
        replicas = [r for which in ("old", "new") if which in self._states
                    for r in self._states[which].routable()
                    if which == "old" or r.url in self._warmed or self._states[which].simulated_nodes]
        await run_db_activity(EndpointActivities.route_generations, PublishInput(
            endpoint_id=self._prepared.new.spec.endpoint_id, route_name=self._prepared.new.spec.served_model_name,
            replicas=replicas))

    async def _roll_back(self, request: RollingUpdateInput) -> None:
        """Back to the old generation at its full count, in batches that keep a replica serving: old replicas
        return (warmed up, routed) before new ones drain and stop."""
        prepared = self._prepared
        assert prepared is not None
        old, new = prepared.old, prepared.new
        back = plan_rollout(self._counts["new"], new.spec.resources.gpu_count, old.replicas,
                            old.spec.resources.gpu_count, prepared.available_gpus, new_running=self._counts["old"])
        steps = [RolloutStep(action=s.action, new_replicas=s.old_replicas, old_replicas=s.new_replicas)
                 for s in back.steps]
        for number, step in enumerate(steps, 1):
            await self._enter(request, f"rolling back to generation {old.generation}: step {number}/{len(steps)}: "
                                       f"{describe(step, 0, rollback=True)}")
            await self._move(new=step.new_replicas, old=step.old_replicas,
                             gate_ms={"new": WARMUP_TTFT_MS_DEFAULT, "old": WARMUP_TTFT_MS_DEFAULT})
            self._done.append({**step.model_dump(), "outcome": "rolled back"})
        await self._stop("new", 0)  # also what a failed start left behind before it was counted
        await self._hold(self._counts)

    async def _cancelled(self) -> None:
        """DELETE during the update: the new generation goes (the delete removes the serving one)."""
        self._step = "cancelled: removing the new generation"
        if self._prepared is not None:
            release = self._release("new", 0)
            await workflow.execute_activity_method(ReleaseActivities.delete_release, release, **RELEASE_CHANGE)


def describe(step: RolloutStep, max_surge: int, rollback: bool = False) -> str:
    if step.action == "start":
        which = "old-generation" if rollback else "new"
        how = "" if rollback else (" on spare GPUs (surge)" if max_surge else " in place of the stopped one")
        count = step.old_replicas if rollback else step.new_replicas
        return f"starting {which} replicas up to {count}{how}, warm-up gate, then joining the route"
    which, count = ("new", step.new_replicas) if rollback else ("old", step.old_replicas)
    return f"draining and stopping {which}-generation replicas down to {count}"
