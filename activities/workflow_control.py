"""Activities that act on other workflows through the Temporal client (cancel and wait), for DeleteEndpoint."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from control.payloads.deployments import StopWorkflowsInput


class WorkflowControlActivities:
    def __init__(self, client: Client):
        self.client = client

    @activity.defn
    async def stop_workflows(self, request: StopWorkflowsInput) -> list[str]:
        """Request cancellation of each running workflow and wait until every one has closed; returns those stopped."""
        stopped = []
        for workflow_id in request.workflow_ids:
            handle = self.client.get_workflow_handle(workflow_id)
            try:
                if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                    continue
                await handle.cancel()
            except RPCError as error:
                if error.status == RPCStatusCode.NOT_FOUND:
                    continue
                raise
            while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                activity.heartbeat(workflow_id)
                await asyncio.sleep(0.5)
            stopped.append(workflow_id)
        return stopped
