"""OptimizeDeployment (bud-optimizer queue): budsim's search as a durable workflow, whole generations per activity.

First the group's measurements (the model on that GPU type and runtime) calibrate the request; the calibrated
request travels in the search state, so every later chunk and the result use the same coefficients, and the result
says which measurements and coefficients they were.

A crash between activities loses at most one chunk of generations; the search resumes from the stored state
(population, archive and the random generator's words), so the result is the one an uninterrupted run gives.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.optimizer import OptimizerActivities
    from budsim.schemas import Method
    from control.payloads.optimization import CalibrateSearch, OptimizationOutcome, OptimizeDeploymentInput, SearchStep
    from workflows.policies import failure_reason, run_db_activity

# One chunk of the search: pure CPU work, so a failure is a bug or a lost worker, worth only a few tries.
SEARCH_STEP = dict(start_to_close_timeout=timedelta(minutes=5),
                   retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3))


@workflow.defn
class OptimizeDeployment:
    def __init__(self) -> None:
        self._generation = 0
        self._total = 0

    @workflow.query
    def progress(self) -> dict:
        return {"generation": self._generation, "generations": self._total}

    @workflow.run
    async def run(self, request: OptimizeDeploymentInput) -> OptimizationOutcome:
        search = request.request
        self._total = search.generations if search.method == Method.REGRESSOR else 0
        try:
            if request.calibrate_from is not None:  # runs started before calibration existed carry no source
                search = await workflow.execute_activity_method(
                    OptimizerActivities.calibrate_search,
                    CalibrateSearch(request=search, source=request.calibrate_from),
                    **SEARCH_STEP)
            state = await workflow.execute_activity_method(OptimizerActivities.start_search, search, **SEARCH_STEP)
            self._generation = state.generation
            while not state.done:
                state = await workflow.execute_activity_method(
                    OptimizerActivities.advance_search,
                    SearchStep(state=state, generations=request.generations_per_activity), **SEARCH_STEP)
                self._generation = state.generation
            result = await workflow.execute_activity_method(OptimizerActivities.finish_search, state, **SEARCH_STEP)
            outcome = OptimizationOutcome(optimization_id=request.optimization_id, endpoint_id=request.endpoint_id,
                                          status="SUCCEEDED", result=result)
        except ActivityError as error:
            outcome = OptimizationOutcome(optimization_id=request.optimization_id, endpoint_id=request.endpoint_id,
                                          status="FAILED", error=failure_reason(error))
        await run_db_activity(OptimizerActivities.record_optimization, outcome)
        return outcome
