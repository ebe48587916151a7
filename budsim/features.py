"""Feature vector for the learned correction: numeric physics and hardware facts, never names.

Names of GPUs or models would let the model memorise groups; numbers (bandwidth, FLOPS at the precision used,
KV bytes read, all-reduce time, expert share touched, queueing) carry over to GPUs and models it has not seen.
Only the runtime is categorical (three one-hot columns): its overheads are real and differ.
"""

from __future__ import annotations

import math

from budsim.roofline import BACKENDS, Roofline, ServingPoint, kv_bytes_per_value, model_sizes


def _log(value: float) -> float:
    return math.log(max(value, 1e-9))


FEATURE_NAMES: list[str] = [
    "log_roof_ttft_ms",
    "log_roof_tpot_ms",
    "log_prefill_ms",
    "log_decode_step_ms",
    "log_burst_prefill_ms",
    "log_kv_wait_over_ttft",
    "log_kv_queue_ratio",
    "log_kv_demand_ratio",
    "log_isl",
    "log_osl",
    "log_clients_per_rank",
    "log_running_per_rank",
    "tp",
    "dp",
    "pp",
    "moe_ep",
    "log_gpus",
    "log_hbm_bandwidth",
    "log_tflops_at_precision",
    "log_bf16_tflops",
    "log_memory",
    "log_interconnect",
    "rack_scale",
    "log_active_params",
    "log_total_params",
    "is_moe",
    "expert_share_per_token",
    "expert_touched_fraction",
    "log_kv_bytes_per_token",
    "is_mla",
    "full_attention_share",
    "log_hidden",
    "num_layers",
    "heads_per_gpu",
    "kv_heads_per_gpu",
    "weight_bytes_per_param",
    "precision_compute_speedup",
    "kv_share_of_decode_bytes",
    "comm_share_of_step",
    "interference_share_of_step",
    "decode_compute_to_memory",
    "weights_share_of_memory",
    *[f"backend_{name}" for name in BACKENDS],
]


def feature_vector(point: ServingPoint, roof: Roofline) -> list[float]:
    model, gpu = point.model, point.gpu
    sizes = model_sizes(model, point.precision, kv_bytes_per_value(point.precision, point.backend))
    decode_bytes = roof.decode_weight_read_bytes + roof.decode_kv_read_bytes
    memory_s = decode_bytes / gpu.hbm_bandwidth
    compute_s = roof.decode_flops / (gpu.tflops(point.precision) * 1e12)
    full_layers = model.full_attention_layers if model.full_attention_layers is not None else model.num_layers
    values = [
        _log(roof.ttft_ms),
        _log(roof.tpot_ms),
        _log(roof.prefill_ms),
        _log(roof.decode_step_ms),
        _log(roof.running_per_rank * roof.prefill_ms),
        math.log1p(roof.kv_wait_ms / max(roof.ttft_ms, 1e-6)),
        _log(roof.kv_queue_ratio),
        _log(roof.kv_demand_ratio),
        _log(point.isl),
        _log(point.osl),
        _log(point.batch_per_rank / roof.admission_ratio),
        _log(roof.running_per_rank),
        float(point.tp),
        float(point.dp),
        float(point.pp),
        float(point.moe_ep),
        _log(point.gpus),
        _log(gpu.hbm_bandwidth),
        _log(gpu.tflops(point.precision)),
        _log(gpu.bf16_tflops),
        _log(gpu.memory_bytes),
        _log(gpu.interconnect_bandwidth),
        float(gpu.gpus_per_node > 8),
        _log(sizes.active_params),
        _log(model.parameter_count),
        float(model.num_experts > 0),
        (model.experts_per_token / model.num_experts) if model.num_experts else 1.0,
        roof.expert_touched_fraction,
        _log(sizes.kv_bytes_per_token),
        float(model.kv_lora_rank > 0),
        full_layers / model.num_layers,
        _log(model.hidden_size),
        float(model.num_layers),
        model.num_attention_heads / point.tp,
        max(1.0, model.num_kv_heads / point.tp),
        sizes.weight_bytes_per_param,
        gpu.tflops(point.precision) / gpu.bf16_tflops,
        roof.decode_kv_read_bytes / max(decode_bytes, 1.0),
        roof.comm_ms / max(roof.decode_step_ms, 1e-6),
        roof.prefill_interference_ms / max(roof.decode_step_ms, 1e-6),
        compute_s / max(memory_s, 1e-12),
        roof.weight_bytes_per_gpu / gpu.memory_bytes,
        *[float(point.backend == name) for name in BACKENDS],
    ]
    assert len(values) == len(FEATURE_NAMES)
    return values
