"""Benchmarks of a running endpoint, as pure functions: what sweep an endpoint accepts, what the optimizer's
predictor expects of each level, and the percentiles of what the client measured."""

from __future__ import annotations

import math
from collections.abc import Sequence

from budsim.calibration import Calibration
from budsim.errors import InvalidRequest
from budsim.predictor import predict
from budsim.schemas import Workload
from control.errors import invalid_field
from control.payloads.benchmarks import BenchmarkRequest, MeasuredConfig, Predicted
from control.payloads.deployments import Resources, RuntimeConfig
from control.store.endpoints import EndpointRow
from control.store.models import ModelRow
from control.translate import serving_config
from core.model_facts import ModelArchitecture
from core.precision import precision_of


def context_of(endpoint: EndpointRow, model: ModelRow) -> int:
    config = RuntimeConfig.model_validate(endpoint.config or {})
    return config.max_model_len or model.context_length or 0


def check_request(endpoint: EndpointRow, model: ModelRow, request: BenchmarkRequest) -> None:
    """Invalid naming the field when the sweep asks more than the deployment can serve."""
    config = RuntimeConfig.model_validate(endpoint.config or {})
    slots = config.max_num_seqs * max(endpoint.replicas, 1)
    too_many = [level for level in request.concurrency if level > slots]
    if too_many:
        raise invalid_field("concurrency", f"{too_many[0]} concurrent requests is more than the deployment runs at "
                            f"once (max_num_seqs {config.max_num_seqs} x {max(endpoint.replicas, 1)} replica(s) = "
                            f"{slots})")
    context = context_of(endpoint, model)
    if request.input_tokens >= context:
        raise invalid_field("input_tokens", f"{request.input_tokens} prompt tokens do not fit the endpoint's "
                            f"context of {context} tokens")
    if request.input_tokens + request.output_tokens > context:
        raise invalid_field("output_tokens", f"{request.input_tokens} + {request.output_tokens} tokens are more "
                            f"than the endpoint's context of {context} tokens")


def measured_config(endpoint: EndpointRow, model: ModelRow) -> MeasuredConfig:
    config = RuntimeConfig.model_validate(endpoint.config or {})
    resources = Resources.model_validate(endpoint.resources)
    facts = model.facts or {}
    return MeasuredConfig(
        model_id=model.id, model_name=model.name, architecture=facts.get("model_type"),
        parameter_count=model.effective_parameter_count, gpu_type=resources.gpu_type, runtime=endpoint.runtime,
        precision=precision_of(facts.get("dtype") or "bf16"), tp=config.tensor_parallel_size,
        pp=config.pipeline_parallel_size, replicas=max(endpoint.replicas, 1), max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens)


def predicted(endpoint: EndpointRow, model: ModelRow, input_tokens: int, output_tokens: int,
              concurrency: int, calibration: Calibration | None = None) -> Predicted | None:
    """The optimizer's prediction for the endpoint's config under this workload, calibrated as the optimizer would
    be on what was measured before; None if the model's facts or the config cannot be read (a benchmark still
    measures)."""
    try:
        facts = ModelArchitecture.model_validate(model.facts)
        config = RuntimeConfig.model_validate(endpoint.config)
        gpu_type = Resources.model_validate(endpoint.resources).gpu_type
        serving = serving_config(config, endpoint.replicas, endpoint.runtime, model.context_length)
        prediction = predict(facts, gpu_type, serving, Workload(input_tokens=input_tokens, output_tokens=output_tokens,
                                                               concurrency=concurrency), calibration=calibration)
    except (ValueError, TypeError, KeyError, InvalidRequest):
        return None
    return Predicted(ttft_ms=prediction.ttft_ms, tpot_ms=prediction.tpot_ms,
                     throughput_tps=prediction.output_throughput_tps,
                     calibrated_on=calibration.n if calibration is not None else 0)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between the closest ranks; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
