"""RegisterCluster: probe a cluster's inventory and mark it READY, or FAILED with the reason."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.clusters import ClusterActivities
    from control.payloads.clusters import (
        ClusterStatus,
        ClusterStatusUpdate,
        ProbeClusterInput,
        RegisterClusterInput,
        RegisterClusterResult,
    )
    from workflows.policies import PROBE_RETRY, failure_reason, run_db_activity


@workflow.defn
class RegisterCluster:
    def __init__(self) -> None:
        self._step = "starting"

    @workflow.query
    def progress(self) -> str:
        return self._step

    @workflow.run
    async def run(self, request: RegisterClusterInput) -> RegisterClusterResult:
        self._step = "probing"
        try:
            facts = await workflow.execute_activity_method(
                ClusterActivities.probe_cluster,
                ProbeClusterInput(cluster_id=request.cluster_id, spec=request.spec),
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=PROBE_RETRY,
            )
        except ActivityError as error:
            reason = failure_reason(error)
            self._step = "failed"
            await run_db_activity(
                ClusterActivities.set_cluster_status,
                ClusterStatusUpdate(cluster_id=request.cluster_id, status=ClusterStatus.FAILED, error=reason),
            )
            raise ApplicationError(f"cluster registration failed: {reason}", non_retryable=True) from error

        self._step = "recording"
        await run_db_activity(
            ClusterActivities.set_cluster_status,
            ClusterStatusUpdate(cluster_id=request.cluster_id, status=ClusterStatus.READY, facts=facts),
        )
        self._step = "done"
        return RegisterClusterResult(cluster_id=request.cluster_id, status=ClusterStatus.READY, facts=facts)
