"""Analytic (roofline) model of one LLM serving instance: the physics the learned correction starts from.

Everything here is closed-form and cheap (the optimizer calls it thousands of times per search):

* a decode step reads the weights it touches plus every running sequence's KV cache, and does ~2 FLOPs per
  active parameter per token; its time is the larger of memory time and compute time, plus tensor-parallel
  all-reduces and MoE all-to-all traffic;
* a prefill of n tokens is compute-bound (weights read once), chunked by max_num_batched_tokens and sharing its
  steps with the decode batch;
* pipeline parallelism runs ``pp`` micro-batches through ``pp`` stages (a bubble when there are fewer sequences
  than stages);
* queueing: once the clients outnumber the scheduler's slots (max_num_seqs), the extra requests wait for a slot
  (closed-loop clients, Little's law); when the KV cache cannot hold every admitted sequence the analytic wait
  is only a feature for the learned correction (runtimes preempt and evict in ways the physics cannot pin down).

Units: bytes, seconds inside, milliseconds in the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from budsim.catalog import GpuSpec
from budsim.kernels import profile_for
from core.model_facts import ModelArchitecture
from core.precision import DEFAULT_PRECISION, find_precision, precision_of  # noqa: F401  (re-exported for budsim.dataset)

# How close kernels get to each GPU's data-sheet peaks comes from `budsim.kernel_fit` (fitted on measured kernel
# tables); only the all-to-all hop latency of MoE dispatch has no table and stays a constant.
COLLECTIVE_LATENCY_S = 8e-6
# GEMMs per layer (QKV, O, up/gate, down) whose fixed floor a decode step pays even when tiny.
GEMMS_PER_LAYER = 4
P2P_LATENCY_S = 10e-6
# Share of expert weights that cannot exceed the total (catalog MoE layouts with a few dense layers).
_MAX_EXPERT_SHARE = 0.97
# Memory a runtime keeps outside weights and KV cache: CUDA context, graphs, NCCL buffers, sampler.
RUNTIME_OVERHEAD_BYTES = 3.5 * 2**30

BACKENDS = ("vllm", "sglang", "trtllm")


def normalize_backend(runtime: str) -> str:
    """'tensorrt-llm' and 'trtllm' are the same runtime; the others keep their names."""
    name = (runtime or "").strip().lower()
    return {"tensorrt-llm": "trtllm", "tensorrt_llm": "trtllm", "trt-llm": "trtllm"}.get(name, name)


@dataclass(frozen=True)
class ServingPoint:
    """One instance of a model served on identical GPUs, under a steady closed-loop load.

    ``batch_per_rank`` is the number of concurrent clients per attention rank (the perf data's batch_size;
    with attention data-parallelism each of the ``dp`` ranks serves that many).
    """

    model: ModelArchitecture
    gpu: GpuSpec
    backend: str
    precision: str
    tp: int
    pp: int
    dp: int
    moe_tp: int
    moe_ep: int
    batch_per_rank: int
    isl: int
    osl: int
    max_num_seqs: int = 1 << 20  # the perf data does not record it: runtime defaults never bound the clients
    max_num_batched_tokens: int = 8192
    gpu_memory_utilization: float = 0.9

    @property
    def gpus(self) -> int:
        return self.tp * self.dp * self.pp


@dataclass(frozen=True)
class ModelSizes:
    """Parameter and KV-cache sizes derived from architecture facts (per whole model, not per GPU)."""

    weight_bytes_per_param: float
    dense_params: float  # always active: attention, embeddings, dense MLPs, shared experts
    expert_params: float  # routed experts, all layers together
    kv_bytes_per_token: float  # all layers, whole model
    kv_sharded_by_tp: bool  # MLA keeps one latent per token that every TP rank holds
    active_params: float  # per token


def model_sizes(model: ModelArchitecture, precision: str, kv_bytes_per_value: float) -> ModelSizes:
    total = float(model.parameter_count)
    experts = 0.0
    if model.num_experts > 0:
        per_expert = 3.0 * model.hidden_size * model.intermediate_size  # gate, up, down projections
        experts = min(model.num_layers * model.num_experts * per_expert, _MAX_EXPERT_SHARE * total)
    dense = total - experts
    kv_layers = model.full_attention_layers if model.full_attention_layers is not None else model.num_layers
    kv_per_token = kv_layers * kv_values_per_token_per_layer(model) * kv_bytes_per_value
    sharded = model.kv_lora_rank == 0
    active = dense + (experts * model.experts_per_token / model.num_experts if model.num_experts else 0.0)
    weight_bytes = (find_precision(precision) or DEFAULT_PRECISION).weight_bytes
    return ModelSizes(weight_bytes, dense, experts, kv_per_token, sharded, active)


def kv_values_per_token_per_layer(model: ModelArchitecture) -> int:
    """Values one layer caches per token: MLA's compressed latent plus its rotary key, else a key and a value per
    KV head."""
    if model.kv_lora_rank > 0:
        return model.kv_lora_rank + model.qk_rope_head_dim
    return 2 * model.num_kv_heads * model.head_dim


def kv_bytes_per_value(precision: str, backend: str) -> float:
    """KV-cache element size: quantised checkpoints are normally served with an fp8 KV cache."""
    return (find_precision(precision) or DEFAULT_PRECISION).kv_cache_bytes


@dataclass(frozen=True)
class Calibration:
    """Per-runtime constants the physics cannot know, fitted on measured data (`budsim.fitting`).

    TPOT = pp x (decode_scale x decode step + interference x arriving prompts' prefill work per step)
    TTFT = prefill_scale x chunked prefill + contention x (the other running requests' prefills) + half a step,
           plus the wait for a scheduler slot when clients outnumber max_num_seqs.

    interference: share of the arriving prompts' prefill work that lands in decode steps (chunked prefill hides
    some; a runtime that stalls decoding for prefills shows all). contention: share of the other running
    requests' prefills a new request waits behind (arrival bursts). Fixed per-step/per-request overheads are
    left to the learned correction: fitted as constants they did not carry over between software versions.
    """

    decode_scale: float = 1.0
    interference: float = 0.3
    prefill_scale: float = 1.0
    contention: float = 0.0


DEFAULT_CALIBRATION = Calibration()


@dataclass(frozen=True)
class Physics:
    """Calibration-free terms of one serving point, computed once; `finalize` applies a runtime calibration cheaply."""

    stage_s: float  # one pipeline stage-step: decode micro-batch plus its share of arriving prompts
    decode_step_s: float  # the same step without prompt interference
    prefill_alone_s: float  # one prompt alone, whole model
    chunk_s: float  # one prefill chunk riding along with the decode batch (one stage)
    chunks: int
    pp: int
    pp_latency_s: float
    osl: int
    running_per_rank: float
    micro_batch: float  # sequences in one stage-step (running / pp)
    kv_capacity_tokens: float
    kv_demand_ratio: float
    admission_ratio: float  # clients / scheduler slots (max_num_seqs): > 1 means requests wait for a slot
    kv_queue_ratio: float  # admitted / running: > 1 means the KV cache cannot hold every admitted sequence
    weight_bytes_per_gpu: float
    decode_weight_read_bytes: float
    decode_kv_read_bytes: float
    decode_flops: float
    comm_s: float
    expert_touched_fraction: float
    free_memory_bytes: float


@dataclass(frozen=True)
class Roofline:
    """Analytic estimates plus the physical terms the learned correction uses as features."""

    ttft_ms: float  # without queueing
    tpot_ms: float
    prefill_ms: float  # one request's prefill alone
    decode_step_ms: float  # one decode step at the running batch
    kv_wait_ms: float  # analytic wait when the KV cache cannot hold every admitted sequence
    running_per_rank: float  # sequences actually running per attention rank
    kv_capacity_tokens: float  # per attention rank
    kv_demand_ratio: float  # admitted sequences' KV demand / capacity
    admission_ratio: float  # clients / max_num_seqs slots (> 1: requests wait for a slot)
    kv_queue_ratio: float  # admitted / running (> 1: the KV cache is the bottleneck)
    micro_batch: float
    weight_bytes_per_gpu: float
    decode_weight_read_bytes: float
    decode_kv_read_bytes: float
    decode_flops: float
    comm_ms: float
    expert_touched_fraction: float
    prefill_interference_ms: float
    memory_fits: bool
    free_memory_bytes: float


def _collective_bandwidth(gpu: GpuSpec, group: int) -> float:
    return gpu.interconnect_bandwidth if group <= gpu.gpus_per_node else gpu.inter_node_bandwidth


def _allreduce_s(gpu: GpuSpec, tp: int, message_bytes: float, count: float) -> float:
    if tp <= 1:
        return 0.0
    if tp > gpu.gpus_per_node:  # across nodes: the network, not the measured NVLink curve
        ring = 2.0 * (tp - 1) / tp * message_bytes / gpu.inter_node_bandwidth
        return count * (ring + COLLECTIVE_LATENCY_S * (1 + math.log2(tp) / 3))
    return count * profile_for(gpu).allreduce_s(tp, message_bytes, gpu.interconnect_bandwidth)


def _all_to_all_s(gpu: GpuSpec, group: int, message_bytes: float, count: float) -> float:
    if group <= 1:
        return 0.0
    return count * ((group - 1) / group * message_bytes / _collective_bandwidth(gpu, group) + COLLECTIVE_LATENCY_S)


def weight_bytes_per_gpu(point: ServingPoint, sizes: ModelSizes) -> float:
    dense = sizes.dense_params * sizes.weight_bytes_per_param / (point.tp * point.pp)
    experts = sizes.expert_params * sizes.weight_bytes_per_param / (point.tp * point.dp * point.pp)
    return dense + experts


def kv_bytes_per_token_per_gpu(point: ServingPoint, sizes: ModelSizes) -> float:
    per_gpu = sizes.kv_bytes_per_token / point.pp
    if sizes.kv_sharded_by_tp:
        # vLLM replicates KV heads when TP exceeds them, so a rank never holds less than one head.
        heads = point.model.num_kv_heads
        per_gpu *= max(1.0, heads / point.tp) / heads
    return per_gpu


def _step_seconds(
    point: ServingPoint,
    sizes: ModelSizes,
    decode_seqs: float,
    context: float,
    prefill_tokens: float,
    prefill_context: float,
) -> tuple[float, float, float, float, float, float]:
    """One stage-step on one GPU: (seconds, weight bytes read, kv bytes read, flops, comm seconds, touched fraction).

    ``decode_seqs`` sequences decode one token each at average context ``context``; ``prefill_tokens`` prompt
    tokens are processed in the same step with average causal context ``prefill_context``.
    """
    model, gpu = point.model, point.gpu
    tp, pp, dp = point.tp, point.pp, point.dp
    tokens = decode_seqs + prefill_tokens
    layers = model.num_layers / pp
    wbytes = sizes.weight_bytes_per_param

    # Weights read once per step: dense part always, experts only those some token was routed to.
    dense_read = (sizes.dense_params - model.vocab_size * model.hidden_size) * wbytes / (tp * pp)
    touched = 1.0
    if model.num_experts:
        routed = tokens * dp  # every rank's tokens meet in the expert layers
        touched = 1.0 - (1.0 - model.experts_per_token / model.num_experts) ** max(routed, 1.0)
    expert_read = sizes.expert_params * touched * wbytes / (tp * dp * pp)
    weight_read = max(dense_read, 0.0) + expert_read

    kv_per_token = kv_bytes_per_token_per_gpu(point, sizes)
    kv_read = decode_seqs * context * kv_per_token  # prefill attention is compute-bound: counted in FLOPs
    kernels = profile_for(gpu)
    memory_s = weight_read / (gpu.hbm_bandwidth * kernels.memory_efficiency) + kv_read / (
        gpu.hbm_bandwidth * kernels.decode_attention_efficiency
    )

    # FLOPs: 2 per active parameter per token (experts spread over the tp*dp GPUs), plus attention scores.
    dense_flops = 2.0 * tokens * sizes.dense_params / (tp * pp)
    expert_active = sizes.expert_params * (model.experts_per_token / model.num_experts) if model.num_experts else 0.0
    expert_flops = 2.0 * tokens * dp * expert_active / (tp * dp * pp)
    qk_dim = (model.kv_lora_rank + model.qk_rope_head_dim) if model.kv_lora_rank else model.head_dim
    heads_per_gpu = max(1.0, model.num_attention_heads / tp)
    attn_layers = model.full_attention_layers if model.full_attention_layers is not None else model.num_layers
    attn_flops = (
        4.0 * heads_per_gpu * qk_dim * (attn_layers / pp) * (decode_seqs * context + prefill_tokens * prefill_context)
    )
    gemm_s = (dense_flops + expert_flops) / (gpu.tflops(point.precision) * 1e12 * kernels.gemm(point.precision))
    attn_s = attn_flops / (gpu.bf16_tflops * 1e12 * kernels.prefill_attention_efficiency)
    compute_s = gemm_s + attn_s
    # Every layer launches its GEMMs and attention however small the batch: a floor per step.
    floors_s = layers * (GEMMS_PER_LAYER * kernels.gemm_floor_s + kernels.attention_floor_s)

    # Tensor-parallel all-reduce after attention and after the MLP in every layer; MoE dispatch + combine.
    activation = tokens * model.hidden_size * 2.0
    comm_s = _allreduce_s(gpu, tp, activation, 2 * layers)
    if model.num_experts and point.moe_ep > 1:
        comm_s += _all_to_all_s(gpu, tp * dp, activation * model.experts_per_token, 2 * layers)
    seconds = max(memory_s, compute_s, floors_s) + comm_s
    return seconds, weight_read, kv_read, dense_flops + expert_flops + attn_flops, comm_s, touched


def physics(point: ServingPoint) -> Physics:
    """Calibration-free analytic terms for ``point`` (see the module docstring for the model)."""
    sizes = model_sizes(point.model, point.precision, kv_bytes_per_value(point.precision, point.backend))
    gpu = point.gpu
    isl, osl = point.isl, point.osl

    # KV capacity per attention rank, and how many sequences can therefore run at once.
    weights = weight_bytes_per_gpu(point, sizes)
    free = point.gpu_memory_utilization * gpu.memory_bytes - weights - RUNTIME_OVERHEAD_BYTES
    kv_per_token = kv_bytes_per_token_per_gpu(point, sizes)
    capacity_tokens = max(free, 0.0) / kv_per_token if kv_per_token > 0 else float("inf")
    footprint = isl + osl  # a running sequence ends up holding its prompt and its answer
    clients = float(point.batch_per_rank)
    admitted = max(1.0, min(clients, float(point.max_num_seqs)))  # the scheduler's slots
    running = max(1.0, min(admitted, capacity_tokens / footprint))  # ... as far as the KV cache holds them
    kv_demand_ratio = min(admitted * footprint / capacity_tokens, 100.0) if capacity_tokens > 0 else 100.0
    context = isl + osl / 2.0

    # Decode: pp stages, `running` sequences split into pp micro-batches; each token passes every stage.
    micro = max(1.0, running / point.pp)
    # Prompts arriving while the batch decodes: per step, micro*isl/osl prompt tokens on average.
    interference_tokens = micro * isl / max(osl, 1)
    step_s, w_read, kv_read, flops, comm_s, touched = _step_seconds(point, sizes, micro, context, 0.0, 0.0)
    mixed_s, *_ = _step_seconds(point, sizes, micro, context, interference_tokens, isl / 2.0)

    # Prefill of one prompt in chunks of max_num_batched_tokens, each chunk riding along with the decode batch.
    chunk = max(1, point.max_num_batched_tokens - int(micro))
    prefill_alone_s, *_ = _step_seconds(point, sizes, 0.0, 0.0, float(isl), isl / 2.0)
    chunk_s, *_ = _step_seconds(point, sizes, micro, context, float(min(isl, chunk)), isl / 2.0)
    return Physics(
        stage_s=mixed_s,
        decode_step_s=step_s,
        prefill_alone_s=prefill_alone_s,
        chunk_s=chunk_s,
        chunks=math.ceil(isl / chunk),
        pp=point.pp,
        pp_latency_s=(point.pp - 1) * P2P_LATENCY_S,
        osl=osl,
        running_per_rank=running,
        micro_batch=micro,
        kv_capacity_tokens=capacity_tokens,
        kv_demand_ratio=kv_demand_ratio,
        admission_ratio=clients / admitted,
        kv_queue_ratio=admitted / running,
        weight_bytes_per_gpu=weights,
        decode_weight_read_bytes=w_read,
        decode_kv_read_bytes=kv_read,
        decode_flops=flops,
        comm_s=comm_s,
        expert_touched_fraction=touched,
        free_memory_bytes=free,
    )


def finalize(phys: Physics, cal: Calibration = DEFAULT_CALIBRATION) -> tuple[float, float, float]:
    """(ttft_ms, tpot_ms, kv_wait_ms) once a runtime's calibration constants are applied.

    The TTFT excludes queueing. kv_wait_ms is the analytic wait when the KV cache cannot hold every admitted
    sequence; it is so uncertain (preemption, eviction policies, benchmark bursts) that the learned correction
    gets it as a feature instead of having it folded into the base.
    """
    stage_s = cal.decode_scale * phys.decode_step_s + cal.interference * (phys.stage_s - phys.decode_step_s)
    tpot_s = phys.pp * stage_s + phys.pp_latency_s
    prefill_s = phys.chunks * phys.pp * cal.prefill_scale * phys.chunk_s + phys.pp_latency_s
    contention_s = cal.contention * (phys.running_per_rank - 1.0) * phys.prefill_alone_s
    ttft_s = prefill_s + 0.5 * stage_s + contention_s
    kv_wait_s = (phys.kv_queue_ratio - 1.0) * (ttft_s + max(phys.osl - 1, 0) * tpot_s)
    return ttft_s * 1000.0, tpot_s * 1000.0, kv_wait_s * 1000.0


def admission_wait_ms(admission_ratio: float, ttft_ms: float, tpot_ms: float, osl: int) -> float:
    """Closed-loop wait for a scheduler slot: clients cycle through the slots, each busy for one request."""
    return max(admission_ratio - 1.0, 0.0) * (ttft_ms + max(osl - 1, 0) * tpot_ms)


def to_roofline(phys: Physics, cal: Calibration = DEFAULT_CALIBRATION) -> Roofline:
    ttft_ms, tpot_ms, kv_wait_ms = finalize(phys, cal)
    return Roofline(
        ttft_ms=ttft_ms,
        tpot_ms=tpot_ms,
        prefill_ms=phys.prefill_alone_s * 1000.0,
        decode_step_ms=phys.decode_step_s * 1000.0,
        kv_wait_ms=kv_wait_ms,
        running_per_rank=phys.running_per_rank,
        kv_capacity_tokens=phys.kv_capacity_tokens,
        kv_demand_ratio=phys.kv_demand_ratio,
        admission_ratio=phys.admission_ratio,
        kv_queue_ratio=phys.kv_queue_ratio,
        micro_batch=phys.micro_batch,
        weight_bytes_per_gpu=phys.weight_bytes_per_gpu,
        decode_weight_read_bytes=phys.decode_weight_read_bytes,
        decode_kv_read_bytes=phys.decode_kv_read_bytes,
        decode_flops=phys.decode_flops,
        comm_ms=phys.comm_s * 1000.0,
        expert_touched_fraction=phys.expert_touched_fraction,
        prefill_interference_ms=(phys.stage_s - phys.decode_step_s) * 1000.0,
        memory_fits=phys.free_memory_bytes > 0,
        free_memory_bytes=phys.free_memory_bytes,
    )


def estimate(point: ServingPoint, cal: Calibration = DEFAULT_CALIBRATION) -> Roofline:
    """Closed-form TTFT/TPOT for ``point`` under a runtime calibration."""
    return to_roofline(physics(point), cal)
