"""Can a config run at all? Memory fit and structural rules, each failure with a human-readable reason.

Memory follows vLLM's accounting: a replica's GPUs must hold, within gpu_memory_utilization x memory, the
weights (split by TP x PP), the KV cache for max_num_seqs sequences of max_model_len tokens, the activations of
one max_num_batched_tokens step, and a fixed runtime overhead (CUDA context, graphs, NCCL buffers).
"""

from __future__ import annotations

from dataclasses import dataclass

from budsim.catalog import GpuSpec
from budsim.roofline import (
    RUNTIME_OVERHEAD_BYTES,
    kv_bytes_per_value,
    kv_values_per_token_per_layer,
    model_sizes,
    normalize_backend,
)
from budsim.schemas import RUNTIMES, ServingConfig
from core.model_facts import ModelArchitecture

GIB = 2**30

# model_type values SGLang and TensorRT-LLM implement (config.json's model_type). vLLM runs any Hugging Face
# decoder (natively or through its Transformers backend), so it has no list.
RUNTIME_MODEL_TYPES: dict[str, set[str] | None] = {
    "vllm": None,
    "sglang": {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "qwen3_next",
        "qwen3_5_moe",
        "deepseek_v2",
        "deepseek_v3",
        "kimi_k2",
        "minimax_m2",
        "glm4",
        "glm4_moe",
        "glm_moe_dsa",
        "gpt_oss",
        "gemma",
        "gemma2",
        "gemma3",
        "phi3",
        "internlm2",
    },
    "tensorrt-llm": {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "deepseek_v3",
        "kimi_k2",
        "gpt_oss",
        "gemma",
        "gemma2",
        "gemma3",
        "phi3",
        "falcon",
    },
}


def runtime_supports(runtime: str, model_type: str) -> bool:
    supported = RUNTIME_MODEL_TYPES.get(runtime, set())
    return supported is None or model_type in supported


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per GPU of one replica."""

    weights: float
    kv_cache: float
    activations: float
    runtime_overhead: float
    budget: float  # gpu_memory_utilization x memory

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.activations + self.runtime_overhead

    @property
    def fits(self) -> bool:
        return self.total <= self.budget


def memory_breakdown(model: ModelArchitecture, gpu: GpuSpec, config: ServingConfig) -> MemoryBreakdown:
    tp, pp = config.tensor_parallel_size, config.pipeline_parallel_size
    precision = model.precision.name
    kv_value_bytes = kv_bytes_per_value(precision, normalize_backend(config.runtime))
    sizes = model_sizes(model, precision, kv_value_bytes)
    weights = (sizes.dense_params + sizes.expert_params) * sizes.weight_bytes_per_param / (tp * pp)
    kv_per_token = sizes.kv_bytes_per_token / pp
    tp_share = max(1.0, model.num_kv_heads / tp) / model.num_kv_heads if sizes.kv_sharded_by_tp else 1.0
    kv_per_token *= tp_share  # KV heads replicate past TP = heads
    kv = config.max_num_seqs * config.max_model_len * kv_per_token
    if model.sliding_window:  # sliding-window layers hold at most the window, whatever the context
        window_layers = model.num_layers - (model.full_attention_layers or 0)
        window_per_token = window_layers * kv_values_per_token_per_layer(model) * kv_value_bytes / pp * tp_share
        kv += config.max_num_seqs * min(model.sliding_window, config.max_model_len) * window_per_token
    # One step's activations: hidden states and the TP-split MLP/attention intermediates in bf16, plus fp32 logits.
    mlp_width = model.intermediate_size * (model.experts_per_token if model.num_experts else 1)
    per_token = (4 * model.hidden_size + 2 * mlp_width / tp) * 2.0
    activations = config.max_num_batched_tokens * per_token + config.max_num_seqs * model.vocab_size * 4.0 / tp
    return MemoryBreakdown(
        weights, kv, activations, RUNTIME_OVERHEAD_BYTES, config.gpu_memory_utilization * gpu.memory_bytes
    )


def structural_problems(model: ModelArchitecture, gpu: GpuSpec, config: ServingConfig) -> list[str]:
    """Rules no amount of free GPUs or memory can fix (the request itself is impossible)."""
    problems: list[str] = []
    tp, pp = config.tensor_parallel_size, config.pipeline_parallel_size
    if config.runtime not in RUNTIMES:
        problems.append(f"unknown runtime {config.runtime!r}; use one of {', '.join(RUNTIMES)}")
    elif not runtime_supports(config.runtime, model.model_type):
        problems.append(f"{config.runtime} does not implement model_type {model.model_type!r}")
    if model.num_attention_heads % tp:
        problems.append(f"tensor_parallel_size {tp} does not divide the {model.num_attention_heads} attention heads")
    if model.kv_lora_rank == 0 and model.num_kv_heads % tp and tp % model.num_kv_heads:
        problems.append(
            f"tensor_parallel_size {tp} neither divides the {model.num_kv_heads} KV heads nor is a multiple of them "
            "(vLLM can only replicate whole KV heads)"
        )
    if model.num_layers % pp:
        problems.append(f"pipeline_parallel_size {pp} does not divide the {model.num_layers} layers")
    if tp > gpu.gpus_per_node:
        problems.append(f"tensor_parallel_size {tp} exceeds the {gpu.gpus_per_node} GPUs of one {gpu.name} node")
    if config.max_model_len > model.max_position_embeddings:
        problems.append(
            f"max_model_len {config.max_model_len} exceeds the model's {model.max_position_embeddings} positions"
        )
    if config.max_num_batched_tokens < config.max_num_seqs:
        problems.append(
            f"max_num_batched_tokens {config.max_num_batched_tokens} is below max_num_seqs {config.max_num_seqs}"
        )
    return problems


def resource_problems(model: ModelArchitecture, gpu: GpuSpec, config: ServingConfig, free_gpus: int) -> list[str]:
    """Rules about this cluster: enough free GPUs, and the replica fits in GPU memory."""
    problems: list[str] = []
    if config.total_gpus > free_gpus:
        problems.append(
            f"needs {config.total_gpus} GPUs (TP {config.tensor_parallel_size} x PP {config.pipeline_parallel_size} x "
            f"{config.replicas} replicas) but only {free_gpus} {gpu.name} are free"
        )
    memory = memory_breakdown(model, gpu, config)
    if not memory.fits:
        problems.append(
            f"does not fit in GPU memory: {memory.total / GIB:.1f} GiB per GPU needed (weights {memory.weights / GIB:.1f}, "
            f"KV cache {memory.kv_cache / GIB:.1f} for {config.max_num_seqs} x {config.max_model_len} tokens, "
            f"activations {memory.activations / GIB:.1f}, runtime {memory.runtime_overhead / GIB:.1f}) > "
            f"{memory.budget / GIB:.1f} GiB ({config.gpu_memory_utilization:.0%} of {gpu.memory_gib:.0f} GiB)"
        )
    return problems


def check_config(model: ModelArchitecture, gpu: GpuSpec | str, config: ServingConfig, free_gpus: int) -> list[str]:
    """Every reason `config` cannot run `model` on `free_gpus` GPUs of type `gpu`; empty when it can."""
    from budsim.catalog import get_gpu

    spec = gpu if isinstance(gpu, GpuSpec) else get_gpu(gpu)
    return structural_problems(model, spec, config) + resource_problems(model, spec, config, free_gpus)


def max_seqs_that_fit(model: ModelArchitecture, gpu: GpuSpec, config: ServingConfig) -> int:
    """The largest max_num_seqs whose KV cache (at config.max_model_len) still fits; 0 if not even one."""
    lo, hi = 0, 1
    while hi <= 1 << 16 and memory_breakdown(model, gpu, config.model_copy(update={"max_num_seqs": hi})).fits:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if memory_breakdown(model, gpu, config.model_copy(update={"max_num_seqs": mid})).fits:
            lo = mid
        else:
            hi = mid
    return lo
