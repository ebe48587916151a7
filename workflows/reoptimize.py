"""Reoptimize (continuous optimization): for each RUNNING endpoint, compare what Prometheus measured (means from the
histograms' sums and counts) with the predicted P10-P90 and the user's targets, raise the alerts, and when the window
saw enough requests keep it as a production measurement; when alerts fire or the measurements leave the interval,
search again under the measured load with the predictor calibrated on the group's measurements. The advice says what
it rests on (requests, window, calibration) and is stored on the endpoint (and the search as an optimization);
nothing is redeployed without the user (PUT /config, then deploy). A window with too few requests gives no advice.

Started every `BUD_REOPTIMIZE_INTERVAL_S` by a Temporal Schedule, or for one endpoint by
`POST /api/endpoints/{id}/metrics/refresh`.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.monitoring import MonitoringActivities
    from control.payloads.monitoring import MonitoringRecord, NewOptimization, Observation, ObserveRequest, ReoptimizeInput
    from control.payloads.optimization import CalibrationSource, OptimizationOutcome, OptimizeDeploymentInput
    from workflows.optimize_deployment import OptimizeDeployment
    from workflows.policies import failure_reason, run_db_activity

# Prometheus down must not hold the whole pass (the schedule skips runs while one is going): a few tries, then the
# endpoint's snapshot records the error and the pass moves on.
OBSERVE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2, maximum_attempts=3)


@workflow.defn
class Reoptimize:
    @workflow.run
    async def run(self, request: ReoptimizeInput) -> dict:
        endpoint_ids = [request.endpoint_id] if request.endpoint_id else await run_db_activity(
            MonitoringActivities.running_endpoints, request)
        summary = {}
        for endpoint_id in endpoint_ids:
            snapshot = await self._one(endpoint_id, request)
            summary[str(endpoint_id)] = {"alerts": len(snapshot.get("alerts", [])),
                                         "recommendation": bool(snapshot.get("recommendation")),
                                         "error": snapshot.get("error")}
        return summary

    async def _one(self, endpoint_id, request: ReoptimizeInput) -> dict:
        snapshot: dict = {"at": workflow.now().isoformat(), "window_s": request.window_s}
        try:
            observation: Observation = await workflow.execute_activity_method(
                MonitoringActivities.observe, ObserveRequest(endpoint_id=endpoint_id, window_s=request.window_s),
                start_to_close_timeout=timedelta(minutes=2), retry_policy=OBSERVE_RETRY)
            snapshot.update(observation.model_dump(mode="json", include={
                "metrics", "expectation", "alerts", "drift", "reoptimize_because", "no_advice", "measurement_id"}))
            if observation.reoptimization is not None:
                snapshot["recommendation"] = await self._search(observation, request.optimizer_queue)
        except (ActivityError, ChildWorkflowError) as error:
            snapshot["error"] = failure_reason(error)
        await run_db_activity(MonitoringActivities.record_monitoring,
                              MonitoringRecord(endpoint_id=endpoint_id, snapshot=snapshot))
        return snapshot

    async def _search(self, observation: Observation, optimizer_queue: str) -> dict:
        """The optimizer's search under the measured load, calibrated on the group's measurements."""
        assert observation.reoptimization is not None and observation.project_id and observation.model_id
        optimization_id = await run_db_activity(
            MonitoringActivities.create_optimization,
            NewOptimization(project_id=observation.project_id, model_id=observation.model_id,
                            cluster_id=observation.cluster_id, request=observation.reoptimization))
        outcome: OptimizationOutcome = await workflow.execute_child_workflow(
            OptimizeDeployment.run,
            OptimizeDeploymentInput(optimization_id=optimization_id, request=observation.reoptimization,
                                    calibrate_from=CalibrationSource(project_id=observation.project_id,
                                                                     model_id=observation.model_id)),
            id=f"reoptimize-{observation.endpoint_id}-{str(optimization_id)[:8]}", task_queue=optimizer_queue)
        metrics = observation.metrics
        advice = {"optimization_id": str(optimization_id), "status": outcome.status, "error": outcome.error,
                  "workload": observation.reoptimization.workload.model_dump(),
                  "based_on": {"requests": round(metrics.requests or 0), "window_s": observation.window_s,
                               "measurement_id": str(observation.measurement_id) if observation.measurement_id
                               else None, "calibration": None}}
        if outcome.result is not None and outcome.result.recommendation is not None:
            chosen, calibration = outcome.result.recommendation, outcome.result.calibration
            if calibration is not None:
                advice["based_on"]["calibration"] = {
                    "n": calibration.n, "measurements": calibration.measurements,
                    "consistent": calibration.consistent, "message": calibration.message}
            # targets are claimed only where the measurements support the predictions they rest on
            supported = calibration is None or calibration.consistent
            advice.update(meets_targets=outcome.result.meets_targets and supported, message=outcome.result.message,
                          config=chosen.config.model_dump(mode="json"),
                          prediction=chosen.prediction.model_dump(mode="json"))
        return advice
