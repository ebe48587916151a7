"""BenchmarkEndpoint: a bounded load sweep against a RUNNING endpoint through the gateway.

Plan (the endpoint's config and the optimizer's prediction for each level), then one activity per concurrency
level, in order, within the run's `max_duration_s`. Each finished level is recorded at once (its result on the run,
its measurement with the run as source), so a worker that dies mid-sweep leaves the finished levels in the
history: the next worker replays them and goes on at the level that was running, whose activity resumes from its
last heartbeat. Every key the run's levels minted is revoked at the end, whatever happened.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.benchmark import KEY_VISIBLE_TIMEOUT_S, BenchmarkActivities
    from control.payloads.benchmarks import (
        BenchmarkInput,
        BenchmarkPlan,
        BenchmarkStatus,
        LevelInput,
        LevelRecord,
        LevelResult,
        RunProgress,
    )
    from workflows.policies import failure_reason, run_db_activity

# A level retries a few times (a worker died, the gateway blinked), resuming from its heartbeats.
LEVEL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=10), maximum_attempts=5)
LEVEL_HEARTBEAT_TIMEOUT = timedelta(seconds=5)


@workflow.defn
class BenchmarkEndpoint:
    def __init__(self) -> None:
        self._results: list[LevelResult] = []

    @workflow.query
    def progress(self) -> list[dict]:
        return [result.model_dump(mode="json") for result in self._results]

    async def _status(self, request: BenchmarkInput, status: BenchmarkStatus, step: str,
                      error: str | None = None) -> None:
        await run_db_activity(BenchmarkActivities.set_benchmark_status, RunProgress(
            run_id=request.run_id, project_id=request.project_id, status=status, step=step, error=error))

    @workflow.run
    async def run(self, request: BenchmarkInput) -> list[LevelResult]:
        started = workflow.now()
        try:
            plan: BenchmarkPlan = await run_db_activity(BenchmarkActivities.load_benchmark_plan, request)
        except ActivityError as error:
            await self._status(request, BenchmarkStatus.FAILED, "planning", failure_reason(error))
            return []
        ref = RunProgress(run_id=request.run_id, project_id=request.project_id, status=BenchmarkStatus.RUNNING)
        try:
            for level in plan.levels:
                budget = plan.max_duration_s - (workflow.now() - started).total_seconds()
                await self._status(request, BenchmarkStatus.RUNNING,
                                   f"level {level.index + 1} of {len(plan.levels)}: {level.concurrency} concurrent")
                if budget <= 0:
                    result = LevelResult(index=level.index, concurrency=level.concurrency, requests=level.requests,
                                         completed=0, errors=0, timed_out=True, duration_s=0,
                                         error_sample="max_duration_s ran out before this level")
                else:
                    result = await workflow.execute_activity_method(
                        BenchmarkActivities.run_benchmark_level,
                        LevelInput(run_id=plan.run_id, project_id=plan.project_id, endpoint_name=plan.endpoint_name,
                                   index=level.index, concurrency=level.concurrency, requests=level.requests,
                                   input_tokens=plan.input_tokens, output_tokens=plan.output_tokens,
                                   budget_s=budget),
                        start_to_close_timeout=timedelta(seconds=budget + KEY_VISIBLE_TIMEOUT_S + 60),
                        heartbeat_timeout=LEVEL_HEARTBEAT_TIMEOUT, retry_policy=LEVEL_RETRY)
                result = await run_db_activity(BenchmarkActivities.record_benchmark_level,
                                               LevelRecord(plan=plan, result=result))
                self._results.append(result)
        except ActivityError as error:
            await run_db_activity(BenchmarkActivities.revoke_benchmark_keys, ref)
            await self._status(request, BenchmarkStatus.FAILED, f"level {len(self._results) + 1}",
                               failure_reason(error))
            return self._results
        await run_db_activity(BenchmarkActivities.revoke_benchmark_keys, ref)
        await self._status(request, BenchmarkStatus.COMPLETED, "done")
        return self._results
