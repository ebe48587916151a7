"""Monitoring's judgement, as pure functions: the alert thresholds, measured vs predicted, and whether to look for
a better configuration (the Reoptimize workflow runs them on what Prometheus measured)."""

from __future__ import annotations

from control.payloads.monitoring import Expectation, LiveMetrics

# The serving metrics monitoring collects, with their alert thresholds.
LATENCY_P99_ALERT_MS = 2000.0
TTFT_P99_ALERT_MS = 500.0
GPU_UTILIZATION_ALERT = 95.0
QUEUE_DEPTH_ALERT = 100.0
# Measured / predicted beyond this either way: the predictions the config was chosen on no longer hold.
DRIFT_TOLERANCE = 0.25


def alerts(metrics: LiveMetrics, expectation: Expectation) -> list[str]:
    """The alerts that fire on these metrics (and `throughput < target` against the user's target)."""
    firing = []
    if metrics.inference_latency_p99_ms is not None and metrics.inference_latency_p99_ms > LATENCY_P99_ALERT_MS:
        firing.append(f"inference_latency_p99 {metrics.inference_latency_p99_ms:.0f} ms > {LATENCY_P99_ALERT_MS:.0f} ms")
    if metrics.ttft_p99_ms is not None and metrics.ttft_p99_ms > TTFT_P99_ALERT_MS:
        firing.append(f"ttft_p99 {metrics.ttft_p99_ms:.0f} ms > {TTFT_P99_ALERT_MS:.0f} ms")
    target = expectation.targets.get("min_throughput_tps")
    if target and metrics.throughput_tps is not None and metrics.throughput_tps < target:
        firing.append(f"throughput {metrics.throughput_tps:.0f} tokens/s < target {target:.0f}")
    if metrics.gpu_utilization is not None and metrics.gpu_utilization > GPU_UTILIZATION_ALERT:
        firing.append(f"gpu_utilization {metrics.gpu_utilization:.0f} % > {GPU_UTILIZATION_ALERT:.0f} %")
    if metrics.queue_depth is not None and metrics.queue_depth > QUEUE_DEPTH_ALERT:
        firing.append(f"queue_depth {metrics.queue_depth:.0f} > {QUEUE_DEPTH_ALERT:.0f}")
    return firing


def drift(metrics: LiveMetrics, expectation: Expectation) -> dict[str, float]:
    """Measured / predicted median TTFT and TPOT, where both exist."""
    ratios = {}
    if metrics.ttft_p50_ms and expectation.predicted_ttft_ms:
        ratios["ttft"] = metrics.ttft_p50_ms / expectation.predicted_ttft_ms
    if metrics.tpot_p50_ms and expectation.predicted_tpot_ms:
        ratios["tpot"] = metrics.tpot_p50_ms / expectation.predicted_tpot_ms
    return ratios


def reasons_to_reoptimize(firing: list[str], ratios: dict[str, float]) -> list[str]:
    """Why a new search is worth running: alerts fire, or the config was chosen on predictions that are off."""
    reasons = [f"alert: {alert}" for alert in firing]
    for name, ratio in ratios.items():
        if abs(ratio - 1.0) > DRIFT_TOLERANCE:
            reasons.append(f"{name} measured {ratio:.2f}x the prediction")
    return reasons
