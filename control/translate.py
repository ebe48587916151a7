"""The one translation between the API's payloads (control/payloads/) and budsim's types.

API -> budsim: RuntimeConfig + replicas -> ServingConfig, PerformanceTargets -> Targets, WorkloadSpec -> Workload.
budsim -> API: a recommended ServingConfig -> RuntimeConfig, replicas and per-replica Resources.
Everything that hands a config to the optimizer or takes one back goes through here, so a knob added on one side
is mapped (or knowingly dropped) in one place.
"""

from __future__ import annotations

from collections.abc import Mapping

from budsim.schemas import ServingConfig, Targets, Workload
from control.payloads.deployments import PerformanceTargets, Resources, RuntimeConfig, WorkloadSpec


# ------------------------------------------------------------------------------------------ API -> budsim
def serving_config(config: RuntimeConfig, replicas: int, runtime: str, context_length: int) -> ServingConfig:
    """What the optimizer judges for a config: the model's context when max_model_len is unset, budsim's batch
    budget when max_num_batched_tokens is unset."""
    fields = dict(
        tensor_parallel_size=config.tensor_parallel_size,
        pipeline_parallel_size=config.pipeline_parallel_size,
        max_num_seqs=config.max_num_seqs,
        max_model_len=config.max_model_len or context_length,
        gpu_memory_utilization=config.gpu_memory_utilization,
        replicas=max(replicas, 1),
        runtime=runtime,
    )
    if config.max_num_batched_tokens:
        fields["max_num_batched_tokens"] = config.max_num_batched_tokens
    return ServingConfig(**fields)


def targets(performance_targets: PerformanceTargets | Mapping | None) -> Targets:
    """The user's targets (a payload, or as stored on the endpoint) as the optimizer's."""
    if performance_targets is None:
        return Targets()
    if not isinstance(performance_targets, PerformanceTargets):
        performance_targets = PerformanceTargets.model_validate(dict(performance_targets))
    return Targets(**performance_targets.model_dump())


def workload(spec: WorkloadSpec) -> Workload:
    return Workload(input_tokens=spec.input_tokens, output_tokens=spec.output_tokens, concurrency=spec.concurrency)


# ------------------------------------------------------------------------------------------ budsim -> API
def runtime_config(chosen: ServingConfig) -> RuntimeConfig:
    """A recommended config as the endpoint stores and deploys it (replicas and runtime are kept apart)."""
    return RuntimeConfig(tensor_parallel_size=chosen.tensor_parallel_size,
                         pipeline_parallel_size=chosen.pipeline_parallel_size,
                         max_model_len=chosen.max_model_len, max_num_seqs=chosen.max_num_seqs,
                         gpu_memory_utilization=chosen.gpu_memory_utilization,
                         max_num_batched_tokens=chosen.max_num_batched_tokens)


def replica_resources(chosen: ServingConfig, gpu_type: str) -> Resources:
    """The GPUs one replica of a recommended config holds."""
    return Resources(gpu_type=gpu_type, gpu_count=chosen.gpus_per_replica)
