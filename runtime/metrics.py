"""vLLM's Prometheus metrics, same names, types and `model_name` label, fed by the simulated engine; and the
simulated GPUs' metrics under DCGM exporter's names, so GPU panels and alerts read the same series as on real GPUs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime.engine import EngineStats, RequestTiming
from runtime.settings import RuntimeSettings

# Bucket boundaries as vLLM defines them, so dashboards and recording rules work unchanged.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)  # fmt: skip

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _EngineGauges(Collector):
    """Queue and cache gauges read from the engine at scrape time: nothing to update on the request path."""

    def __init__(self, model_name: str, stats: Callable[[], EngineStats]) -> None:
        self._model_name = model_name
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        stats = self._stats()
        for name, doc, value in (
            ("vllm:num_requests_running", "Number of requests in model execution batches.", stats.running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", stats.waiting),
            ("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", stats.kv_usage),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", stats.kv_usage),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["model_name"])
            gauge.add_metric([self._model_name], float(value))
            yield gauge


MIB = 2**20
# Shortest window a utilization sample covers: a second scrape right after one reuses its figure instead of a
# fraction of a few milliseconds.
MIN_UTIL_WINDOW_S = 0.25


@dataclass(frozen=True)
class SimulatedGpus:
    """The GPUs one replica holds: tensor x pipeline parallel of them, each of `memory_mib` (None: not told, so no
    framebuffer metrics rather than invented ones), of which vLLM reserves `reserved_fraction` at start."""

    count: int
    memory_mib: float | None
    reserved_fraction: float

    @classmethod
    def of(cls, settings: RuntimeSettings) -> SimulatedGpus:
        memory = settings.gpu_memory_gb * 1e9 / MIB if settings.gpu_memory_gb else None
        return cls(settings.tensor_parallel_size * settings.pipeline_parallel_size, memory,
                   settings.gpu_memory_utilization)


class _DcgmGauges(Collector):
    """DCGM exporter's per-GPU gauges. Utilization is the share of wall time since the previous sample during which
    a batch was running (DCGM: the share of the sample period a kernel ran); every GPU of a tensor/pipeline group
    computes together. Framebuffer use is vLLM's reservation (weights plus the preallocated KV cache), which stays
    put whatever the load; power is not simulated, so it is not exported."""

    def __init__(self, gpus: SimulatedGpus, stats: Callable[[], EngineStats]) -> None:
        self._gpus = gpus
        self._stats = stats
        self._lock = threading.Lock()  # scrapes may come from several threads
        self._last_sample = (time.perf_counter(), 0.0)  # (when, busy seconds then)
        self._last_util = 0.0

    def utilization_percent(self) -> float:
        with self._lock:
            now, busy = time.perf_counter(), self._stats().busy_s
            then, busy_then = self._last_sample
            if now - then >= MIN_UTIL_WINDOW_S:
                self._last_util = min(100.0, max(0.0, 100.0 * (busy - busy_then) / (now - then)))
                self._last_sample = (now, busy)
            return self._last_util

    def collect(self) -> Iterable[Metric]:
        labels = ["gpu", "UUID", "device", "modelName"]
        per_gpu = [[str(i), f"GPU-simulated-{i}", f"nvidia{i}", "simulated"] for i in range(self._gpus.count)]
        utilization = self.utilization_percent()
        util = GaugeMetricFamily("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels=labels)
        for gpu in per_gpu:
            util.add_metric(gpu, round(utilization))  # DCGM reports whole percents
        yield util
        if self._gpus.memory_mib is None:
            return
        used_mib = round(self._gpus.memory_mib * self._gpus.reserved_fraction)
        free_mib = round(self._gpus.memory_mib) - used_mib
        for name, doc, value in (("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", used_mib),
                                 ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", free_mib)):
            gauge = GaugeMetricFamily(name, doc, labels=labels)
            for gpu in per_gpu:
                gauge.add_metric(gpu, float(value))
            yield gauge


class VllmMetrics:
    """One registry per runtime; `observe_*` methods are the engine's callbacks."""

    def __init__(self, model_name: str, stats: Callable[[], EngineStats], gpus: SimulatedGpus | None = None) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        reg = self.registry
        self._prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=reg
        ).labels(model_name)
        self._generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels, registry=reg
        ).labels(model_name)
        self._success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*labels, "finished_reason"],
            registry=reg,
        )
        self._success_length = self._success.labels(model_name, "length")
        self._ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=reg,
        ).labels(model_name)
        self._tpot = Histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            labels,
            buckets=TPOT_BUCKETS,
            registry=reg,
        ).labels(model_name)
        self._e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            labels,
            buckets=E2E_BUCKETS,
            registry=reg,
        ).labels(model_name)
        self._queue = Histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            labels,
            buckets=E2E_BUCKETS,
            registry=reg,
        ).labels(model_name)
        reg.register(_EngineGauges(model_name, stats))
        if gpus is not None:
            reg.register(_DcgmGauges(gpus, stats))

    def observe_first_token(self, timing: RequestTiming) -> None:
        self._prompt_tokens.inc(timing.prompt_tokens)
        self._queue.observe(timing.queued_s)
        if timing.ttft_s is not None:
            self._ttft.observe(timing.ttft_s)

    def observe_token(self) -> None:
        self._generation_tokens.inc()

    def observe_finish(self, timing: RequestTiming) -> None:
        if not timing.finished:
            return  # aborted requests count tokens already generated, but no latency or success
        self._success_length.inc()
        self._e2e.observe(timing.e2e_s)
        if timing.generated_tokens > 1 and timing.ttft_s is not None:
            self._tpot.observe((timing.e2e_s - timing.ttft_s) / (timing.generated_tokens - 1))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
