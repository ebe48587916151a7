"""Optimizer activities (bud-optimizer queue): whole NSGA-II generations per call, and recording the outcome."""

from __future__ import annotations

import asyncio

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from budsim.errors import InvalidRequest
from budsim.schemas import OptimizationRequest, OptimizationResult, SearchState
from budsim.search import advance_search, finish_search, start_search
from control import translate
from control.measurements import group_calibration
from control.payloads.optimization import CalibrateSearch, OptimizationOutcome, SearchStep
from control.store import endpoints, models, optimizations


def _invalid(error: InvalidRequest) -> ApplicationError:
    return ApplicationError(str(error), type="InvalidRequest", non_retryable=True)


class OptimizerActivities:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @activity.defn
    async def calibrate_search(self, step: CalibrateSearch) -> OptimizationRequest:
        """The request with its group's calibration: fitted on the project's measurements of the model on that GPU
        type and runtime (the same rows give the same coefficients); unchanged when there are none."""
        request, source = step.request, step.source
        async with self.pool.acquire() as conn:
            model = await models.get_model(conn, source.model_id, source.project_id)
            if model is None:
                raise _invalid(InvalidRequest("model_id", f"model {source.model_id} no longer exists"))
            try:
                calibration = await group_calibration(conn, source.project_id, source.model_id, model.name,
                                                      request.model, request.gpu_type, request.runtime)
            except InvalidRequest as error:
                raise _invalid(error) from error
        return request.model_copy(update={"group_calibration": calibration})

    @activity.defn
    async def start_search(self, request: OptimizationRequest) -> SearchState:
        try:
            return await asyncio.to_thread(start_search, request)
        except InvalidRequest as error:
            raise _invalid(error) from error

    @activity.defn
    async def advance_search(self, step: SearchStep) -> SearchState:
        return await asyncio.to_thread(advance_search, step.state, step.generations)

    @activity.defn
    async def finish_search(self, state: SearchState) -> OptimizationResult:
        try:
            return await asyncio.to_thread(finish_search, state)
        except InvalidRequest as error:
            raise _invalid(error) from error

    @activity.defn
    async def record_optimization(self, outcome: OptimizationOutcome) -> None:
        """Store the result; when it is for an endpoint, the recommended config becomes the endpoint's config."""
        result = outcome.result.model_dump(mode="json") if outcome.result else None
        async with self.pool.acquire() as conn, conn.transaction():
            await optimizations.record_result(conn, outcome.optimization_id, outcome.status, result, outcome.error)
            if outcome.endpoint_id is None:
                return
            recommendation = outcome.result.recommendation if outcome.result else None
            if recommendation is None:
                await endpoints.record_recommendation(conn, outcome.endpoint_id, outcome.status, result, None, None, None)
                return
            chosen = recommendation.config
            await endpoints.record_recommendation(
                conn, outcome.endpoint_id, outcome.status, result, translate.runtime_config(chosen).model_dump(),
                chosen.replicas, translate.replica_resources(chosen, outcome.result.gpu_type).model_dump())
