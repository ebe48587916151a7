"""From an endpoint's configuration to what the optimizer checks and the simulated runtime needs.

One place that translates the API's RuntimeConfig (the seed's names) into budsim's ServingConfig, so the API's
synchronous fit check, the optimizer and the deploy validation judge the same config the same way.
"""

from __future__ import annotations

from budsim.constraints import check_config
from budsim.predictor import predict
from budsim.schemas import ServingConfig, Workload
from core.model_facts import ModelArchitecture
from control.payloads.deployments import RuntimeConfig, SimulatedTiming

PROBE_WORKLOAD = Workload(input_tokens=512, output_tokens=64, concurrency=1)


def serving_config(config: RuntimeConfig, replicas: int, runtime: str, context_length: int) -> ServingConfig:
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


def fit_problems(facts: ModelArchitecture, gpu_type: str, config: ServingConfig, free_gpus: int) -> list[str]:
    """Every reason the config cannot run (memory, head divisibility, GPUs free, runtime support)."""
    return check_config(facts, gpu_type, config, free_gpus)


def simulated_timing(facts: ModelArchitecture, gpu_type: str, config: ServingConfig, load_delay_s: float) -> SimulatedTiming:
    """The optimizer's single-request prediction: how the simulated runtime times its tokens."""
    prediction = predict(facts, gpu_type, config.model_copy(update={"replicas": 1}), PROBE_WORKLOAD)
    return SimulatedTiming(ttft_ms=prediction.ttft_ms, tpot_ms=prediction.tpot_ms, load_delay_s=load_delay_s)
