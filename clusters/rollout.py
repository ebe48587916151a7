"""Reading a release's rollout from its Deployment and pods: is it done, and if it cannot finish, why.

Pure functions over the Kubernetes client's objects; clusters/kubernetes.py fetches them and decides when to give up.
The reasons are the ones a user can act on: not enough GPUs or no matching node for Pending pods, and for a
model that fails to load: path not accessible, format not supported, not enough GPU memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from kubernetes.client import CoreV1Event, V1Deployment, V1Pod

from control.payloads.deployments import DeploymentState, ReplicaState

# Waiting reasons that will not clear up by themselves. ErrImagePull is left out: the kubelet retries it, and it
# turns into ImagePullBackOff when the retry fails too.
STUCK_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)

# Fragments of a runtime's last log lines, and what they mean for the user (seed: "Model Load Failure").
LOAD_FAILURE_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("out of memory", "outofmemoryerror", "not enough memory", "insufficient memory",
         "no available memory for the cache"),
        "not enough GPU memory for the model with this configuration",
    ),
    (
        ("does not match the registry's sha256 sums",),
        "the model copy failed checksum verification",
    ),
    (
        ("no such file or directory", "does not appear to have a file", "nosuchkey", "nosuchbucket", "accessdenied",
         "could not connect to the endpoint url", "is not a local folder and is not a valid model identifier"),
        "the model path is not accessible",
    ),
    (
        ("not supported", "unsupported", "unrecognized model", "unrecognized configuration class"),
        "the model format is not supported by the runtime",
    ),
)


# Events about placing a pod: the scheduler's refusals, and cluster-autoscaler adding a node for the pod.
SCHEDULING_EVENT_REASONS = ("FailedScheduling", "TriggeredScaleUp")


def explain_load_failure(log_tail: str) -> str | None:
    text = log_tail.lower()
    for fragments, meaning in LOAD_FAILURE_HINTS:
        if any(fragment in text for fragment in fragments):
            return meaning
    return None


@dataclass
class Observation:
    """One look at a release: its Deployment (None when absent), its pods, and scheduling events of its pods."""

    deployment: V1Deployment | None
    pods: list[V1Pod] = field(default_factory=list)
    scheduling_events: list[CoreV1Event] = field(default_factory=list)

    @property
    def live_pods(self) -> list[V1Pod]:
        """Pods not being deleted (an old ReplicaSet's terminating pods say nothing about the new rollout)."""
        return [pod for pod in self.pods if pod.metadata.deletion_timestamp is None]


def desired_replicas(deployment: V1Deployment) -> int:
    return deployment.spec.replicas if deployment.spec.replicas is not None else 1


def rolled_out(deployment: V1Deployment) -> bool:
    """`kubectl rollout status` semantics: the controller saw the latest spec, every replica is updated and
    available, and no old replica is left."""
    status = deployment.status
    if status is None or (status.observed_generation or 0) < (deployment.metadata.generation or 0):
        return False
    desired = desired_replicas(deployment)
    return (
        (status.updated_replicas or 0) >= desired
        and (status.available_replicas or 0) >= desired
        and (status.replicas or 0) <= desired
    )


def _is_ready(pod: V1Pod) -> bool:
    conditions = pod.status.conditions if pod.status else None
    return any(c.type == "Ready" and c.status == "True" for c in conditions or [])


def _event_time(event: CoreV1Event) -> datetime:
    when = event.last_timestamp or event.event_time or (event.metadata.creation_timestamp if event.metadata else None)
    return when or datetime.min.replace(tzinfo=timezone.utc)


def unschedulable_message(pod: V1Pod, events: list[CoreV1Event]) -> str | None:
    """The scheduler's reason when it could not place the pod, e.g. '0/3 nodes are available: 2 Insufficient
    nvidia.com/gpu, 1 node(s) didn't match Pod's node affinity/selector. ...'."""
    if pod.spec.node_name or (pod.status and pod.status.phase != "Pending"):
        return None
    for condition in (pod.status.conditions if pod.status else None) or []:
        if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
            if condition.message:
                return condition.message
            break
    else:
        return None
    # The condition carries no message (older schedulers): the newest FailedScheduling event does.
    mine = [e for e in events if e.reason == "FailedScheduling" and e.involved_object
            and e.involved_object.uid == pod.metadata.uid and e.message]
    mine.sort(key=_event_time)
    return mine[-1].message if mine else "the scheduler cannot place the pod"


def scale_up_triggered(pod: V1Pod, events: list[CoreV1Event]) -> bool:
    """Whether a node autoscaler announced a new node for this pod (then Pending is expected for minutes)."""
    return any(
        e.reason == "TriggeredScaleUp" and e.involved_object and e.involved_object.uid == pod.metadata.uid
        for e in events
    )


def waiting_for_volume(message: str) -> bool:
    """The scheduler waits for the pod's claim to be bound (dynamic provisioning takes a while)."""
    return "unbound immediate PersistentVolumeClaims" in message or "persistentvolumeclaim" in message.lower()


def _container_problem(pod: V1Pod) -> tuple[str, str] | None:
    """(container, reason) for the first container stuck in a state that needs a fix, else None."""
    status = pod.status
    if status is None:
        return None
    statuses = [("init container", s) for s in status.init_container_statuses or []]
    statuses += [("container", s) for s in status.container_statuses or []]
    for kind, container in statuses:
        waiting = container.state.waiting if container.state else None
        if waiting is None or waiting.reason not in STUCK_WAITING_REASONS:
            continue
        detail = waiting.message or ""
        last = container.last_state.terminated if container.last_state else None
        if last is not None:
            detail = f"last exit code {last.exit_code}" + (f" ({last.reason})" if last.reason else "")
            if last.message:
                detail += f": {last.message.strip()[-600:]}"
            meaning = explain_load_failure(last.message or "")
            if last.reason == "OOMKilled":
                meaning = "the replica ran out of host memory (raise memory_gb)"
            if meaning:
                detail = f"{meaning}; {detail}"
        text = f"{kind} {container.name} of pod {pod.metadata.name}: {waiting.reason}"
        return container.name, f"{text}: {detail}" if detail else text
    return None


def pod_failure(pod: V1Pod) -> str | None:
    """Why this pod cannot become ready without someone changing something (None while it still might)."""
    if pod.status and pod.status.phase == "Failed":
        return f"pod {pod.metadata.name} failed: {pod.status.reason or ''} {pod.status.message or ''}".strip()
    problem = _container_problem(pod)
    if problem is None:
        return None
    container, reason = problem
    if container == "model-transfer":
        return f"model transfer failed: {reason}"
    return reason


def deployment_failure(deployment: V1Deployment) -> str | None:
    """The Deployment controller's own verdicts: pods cannot be created (quota, admission) or progress stalled."""
    for condition in (deployment.status.conditions if deployment.status else None) or []:
        if condition.type == "ReplicaFailure" and condition.status == "True":
            return f"replicas cannot be created: {condition.message}"
        if condition.type == "Progressing" and condition.status == "False":
            return f"rollout stalled ({condition.reason}): {condition.message}"
    return None


def replica_state(pod: V1Pod, port: int) -> ReplicaState:
    status = pod.status
    reason = None
    problem = _container_problem(pod)
    if problem:
        reason = problem[1]
    elif status and status.phase == "Pending" and not pod.spec.node_name:
        reason = unschedulable_message(pod, []) or "waiting for the scheduler"
    elif status and status.reason:
        reason = status.reason
    return ReplicaState(
        name=pod.metadata.name,
        ready=_is_ready(pod),
        url=f"http://{status.pod_ip}:{port}" if status and status.pod_ip else None,
        node=pod.spec.node_name,
        phase=(status.phase if status else "") or "",
        reason=reason,
    )


def pending_reasons(observation: Observation) -> list[str]:
    """Every distinct reason the release is not fully ready now (empty when nothing stands in the way)."""
    reasons: list[str] = []
    if observation.deployment is not None:
        failure = deployment_failure(observation.deployment)
        if failure:
            reasons.append(failure)
    for pod in observation.live_pods:
        for reason in (unschedulable_message(pod, observation.scheduling_events), pod_failure(pod)):
            if reason and reason not in reasons:
                reasons.append(reason)
    return reasons


def deployment_state(release: str, observation: Observation, port: int, fallback_replicas: int) -> DeploymentState:
    deployment = observation.deployment
    if deployment is None:
        return DeploymentState(release=release, desired_replicas=fallback_replicas, ready_replicas=0, exists=False)
    return DeploymentState(
        release=release,
        desired_replicas=desired_replicas(deployment),
        ready_replicas=(deployment.status.ready_replicas or 0) if deployment.status else 0,
        replicas=[replica_state(pod, port) for pod in sorted(observation.pods, key=lambda p: p.metadata.name)],
        pending_reasons=pending_reasons(observation),
        exists=True,
    )
