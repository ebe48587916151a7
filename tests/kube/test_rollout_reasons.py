"""How clusters/rollout.py explains pods that cannot become ready, on pod objects shaped as the kubelet reports them.

kwok never runs containers, so CrashLoopBackOff and friends cannot happen on the local cluster; these pods carry
the statuses a real kubelet writes (field for field, as `kubectl get pod -o yaml` shows them).
"""

from __future__ import annotations

from kubernetes import client as k8s

from clusters import rollout


def pod(name: str = "ep-1-abc", *, init: list | None = None, containers: list | None = None, phase: str = "Pending",
        node: str | None = "h100-0", conditions: list | None = None) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, uid=f"uid-{name}"),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="server")], node_name=node),
        status=k8s.V1PodStatus(phase=phase, init_container_statuses=init, container_statuses=containers,
                               conditions=conditions),
    )


def crashing(name: str, exit_code: int, log_tail: str, reason: str = "Error") -> k8s.V1ContainerStatus:
    return k8s.V1ContainerStatus(
        name=name, image="x", image_id="", ready=False, restart_count=4,
        state=k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(
            reason="CrashLoopBackOff", message=f"back-off 1m20s restarting failed container={name}")),
        last_state=k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(
            exit_code=exit_code, reason=reason, message=log_tail)),
    )


def test_a_runtime_out_of_gpu_memory_is_explained_the_seeds_way() -> None:
    log = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    reason = rollout.pod_failure(pod(containers=[crashing("server", 1, log)], phase="Running"))
    assert reason is not None
    assert "CrashLoopBackOff" in reason and "not enough GPU memory" in reason and "CUDA out of memory" in reason
    assert "last exit code 1" in reason


def test_a_failed_model_copy_names_the_transfer() -> None:
    log = "model copy does not match the registry's sha256 sums; discarding it"
    failed = pod(init=[crashing("model-transfer", 1, log)])
    reason = rollout.pod_failure(failed)
    assert reason is not None and reason.startswith("model transfer failed: ")
    assert "checksum verification" in reason


def test_a_path_the_runtime_cannot_read_and_an_unsupported_format() -> None:
    log = "OSError: /models/x does not appear to have a file named config.json"
    missing = rollout.pod_failure(pod(containers=[crashing("server", 1, log)]))
    assert missing is not None and "the model path is not accessible" in missing
    log = "ValueError: Model architectures ['Foo'] are not supported for now"
    unsupported = rollout.pod_failure(pod(containers=[crashing("server", 1, log)]))
    assert unsupported is not None and "the model format is not supported by the runtime" in unsupported


def test_host_memory_kill_and_image_pull_failures() -> None:
    oom = rollout.pod_failure(pod(containers=[crashing("server", 137, "", reason="OOMKilled")]))
    assert oom is not None and "raise memory_gb" in oom
    pulling = k8s.V1ContainerStatus(
        name="server", image="vllm/vllm-openai:nope", image_id="", ready=False, restart_count=0,
        state=k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(
            reason="ImagePullBackOff", message='Back-off pulling image "vllm/vllm-openai:nope"')),
    )
    reason = rollout.pod_failure(pod(containers=[pulling]))
    assert reason == ('container server of pod ep-1-abc: ImagePullBackOff: Back-off pulling image '
                      '"vllm/vllm-openai:nope"')


def test_a_container_still_starting_is_not_a_failure() -> None:
    starting = k8s.V1ContainerStatus(
        name="server", image="x", image_id="", ready=False, restart_count=0,
        state=k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason="ContainerCreating")),
    )
    assert rollout.pod_failure(pod(containers=[starting])) is None
    pulling_once = k8s.V1ContainerStatus(
        name="server", image="x", image_id="", ready=False, restart_count=0,
        state=k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason="ErrImagePull")),
    )
    assert rollout.pod_failure(pod(containers=[pulling_once])) is None  # the kubelet retries before backing off


def test_unschedulable_message_comes_from_the_condition_or_the_event() -> None:
    message = ("0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
               "2 Insufficient nvidia.com/gpu.")
    with_condition = pod(node=None, conditions=[k8s.V1PodCondition(
        type="PodScheduled", status="False", reason="Unschedulable", message=message)])
    assert rollout.unschedulable_message(with_condition, []) == message

    bare = pod(node=None, conditions=[k8s.V1PodCondition(type="PodScheduled", status="False", reason="Unschedulable")])
    event = k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(name="e1"), involved_object=k8s.V1ObjectReference(uid="uid-ep-1-abc"),
        reason="FailedScheduling", message=message,
    )
    assert rollout.unschedulable_message(bare, [event]) == message
    scheduled = pod(node="h100-0", phase="Running")
    assert rollout.unschedulable_message(scheduled, [event]) is None


def test_autoscaler_and_volume_waits_are_recognised() -> None:
    pending = pod(node=None)
    scale_up = k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(name="e2"), involved_object=k8s.V1ObjectReference(uid="uid-ep-1-abc"),
        reason="TriggeredScaleUp", message="pod triggered scale-up: [{gpu-pool 1->2 (max: 4)}]",
    )
    assert rollout.scale_up_triggered(pending, [scale_up])
    assert not rollout.scale_up_triggered(pod(name="other", node=None), [scale_up])
    assert rollout.waiting_for_volume("0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.")
    assert not rollout.waiting_for_volume("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
