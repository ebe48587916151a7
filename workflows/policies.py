"""Named retry policies and timeouts shared by the workflows."""

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

# Databases, object stores, daemons: transient failures, retry for a long while with backoff.
INFRA_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=30), maximum_attempts=0)
# Probing something the user gave us (a cluster's API server): a few tries, then report why.
PROBE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=10), maximum_attempts=5)


def failure_reason(error: BaseException) -> str:
    """The innermost message of an activity failure: what a user needs to read."""
    while isinstance(error, (ActivityError, ChildWorkflowError)) and error.cause is not None:
        error = error.cause
    if isinstance(error, ApplicationError):
        return error.message
    return str(error) or type(error).__name__
