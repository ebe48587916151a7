"""Named retry policies and activity options shared by the workflows: how long each kind of activity may run, how
often it must heartbeat and how it retries, said once.

    await run_db_activity(EndpointActivities.release_gpus, ref)
    await workflow.execute_activity_method(ReleaseActivities.apply_release, release, **RELEASE_CHANGE)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

# Databases, object stores, daemons: transient failures, retry for a long while with backoff.
INFRA_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=30), maximum_attempts=0)
# Probing something the user gave us (a cluster's API server): a few tries, then report why.
PROBE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=10), maximum_attempts=5)

# One PostgreSQL read or write.
DB_ACTIVITY: dict[str, Any] = dict(start_to_close_timeout=timedelta(seconds=30), retry_policy=INFRA_RETRY)
# Applying or deleting a release on a cluster backend (helm, local processes), heartbeating while it works; the
# replicas it stops drain first (up to 600 s), so it may take that much longer than the backend's work.
RELEASE_CHANGE: dict[str, Any] = dict(start_to_close_timeout=timedelta(minutes=20),
                                      heartbeat_timeout=timedelta(minutes=2), retry_policy=INFRA_RETRY)

PayloadT = TypeVar("PayloadT")
ResultT = TypeVar("ResultT")


def release_wait(timeout_s: float) -> dict[str, Any]:
    """Reading a release's state after waiting up to `timeout_s` for its replicas: two minutes more than the wait
    itself, so the backend's own timeout (with its reason) fires before Temporal's."""
    return dict(start_to_close_timeout=timedelta(seconds=timeout_s + 120), heartbeat_timeout=timedelta(seconds=30),
                retry_policy=INFRA_RETRY)


async def run_db_activity(method: Callable[[Any, PayloadT], Awaitable[ResultT]], payload: PayloadT) -> ResultT:
    """Run a database activity method (from inside a workflow) with DB_ACTIVITY's timeout and retries."""
    return await workflow.execute_activity_method(method, payload, **DB_ACTIVITY)


def failure_reason(error: BaseException) -> str:
    """The innermost message of an activity failure: what a user needs to read."""
    while isinstance(error, (ActivityError, ChildWorkflowError)) and error.cause is not None:
        error = error.cause
    if isinstance(error, ApplicationError):
        return error.message
    return str(error) or type(error).__name__
