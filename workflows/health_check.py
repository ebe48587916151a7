"""HealthCheck (child of DeployEndpoint): every replica ready with the model loaded, then a test inference."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.health import HealthActivities
    from control.payloads.deployments import HealthCheckInput, HealthProbeInput, HealthReport

# A replica that just turned ready may need a moment to list its model: a few quick tries, then the reason.
READINESS_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=1.5,
                              maximum_interval=timedelta(seconds=5), maximum_attempts=6)
INFERENCE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


@workflow.defn
class HealthCheck:
    @workflow.run
    async def run(self, request: HealthCheckInput) -> HealthReport:
        probes = [HealthProbeInput(url=url, served_model_name=request.served_model_name) for url in request.replica_urls]
        await asyncio.gather(*(
            workflow.execute_activity_method(HealthActivities.check_ready, probe,
                                             start_to_close_timeout=timedelta(seconds=10), retry_policy=READINESS_RETRY)
            for probe in probes
        ))
        report = await workflow.execute_activity_method(
            HealthActivities.test_inference, probes[0],
            start_to_close_timeout=timedelta(seconds=30), retry_policy=INFERENCE_RETRY,
        )
        return report.model_copy(update={"replicas_ready": len(probes)})
