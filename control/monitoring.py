"""Monitoring's judgement, as pure functions: the alert thresholds, measured vs predicted, and whether to look for
a better configuration (the Reoptimize workflow runs them on what Prometheus measured)."""

from __future__ import annotations

from control.payloads.monitoring import Expectation, LiveMetrics

# The serving metrics monitoring collects, with their alert thresholds.
LATENCY_P99_ALERT_MS = 2000.0
TTFT_P99_ALERT_MS = 500.0
GPU_UTILIZATION_ALERT = 95.0
QUEUE_DEPTH_ALERT = 100.0
# Where a prediction has no interval (one stored before intervals existed): measured / predicted beyond this.
DRIFT_TOLERANCE = 0.25
# A window is a measurement, and a basis for advice, only with at least this many finished requests: fewer say
# more about the few prompts sent than about the config (the means' noise is then well above the interval's width).
MIN_WINDOW_REQUESTS = 20


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


def enough_requests(metrics: LiveMetrics) -> bool:
    return (metrics.requests or 0) >= MIN_WINDOW_REQUESTS


def too_few_requests(metrics: LiveMetrics, window_s: int) -> str | None:
    """Why the window gives no advice and no measurement, or None when it has enough requests."""
    if enough_requests(metrics):
        return None
    return (f"{metrics.requests or 0:.0f} requests finished in the {window_s} s window; measurements, drift and "
            f"advice need at least {MIN_WINDOW_REQUESTS}")


def drift(metrics: LiveMetrics, expectation: Expectation) -> dict[str, float]:
    """Measured / predicted mean TTFT and TPOT, where both exist (means from the histograms' sums and counts: a
    bucket bound says nothing of values far below the finest bucket)."""
    ratios = {}
    for name in ("ttft", "tpot"):
        measured, predicted = getattr(metrics, f"{name}_mean_ms"), getattr(expectation, f"predicted_{name}_ms")
        if measured and predicted:
            ratios[name] = measured / predicted
    return ratios


def drifting(metrics: LiveMetrics, expectation: Expectation) -> list[str]:
    """Each mean the prediction's P10-P90 interval does not hold (without an interval: off by more than
    DRIFT_TOLERANCE). Nothing from a window with too few requests."""
    if not enough_requests(metrics):
        return []
    reasons = []
    for name, ratio in drift(metrics, expectation).items():
        measured = getattr(metrics, f"{name}_mean_ms")
        low, high = getattr(expectation, f"{name}_p10_ms"), getattr(expectation, f"{name}_p90_ms")
        where = f"{name} measured {measured:.3g} ms (mean of {metrics.requests:.0f} requests)"
        if low is not None and high is not None:
            if not low <= measured <= high:
                reasons.append(f"{where}, outside the predicted P10-P90 {low:.3g}-{high:.3g} ms")
        elif abs(ratio - 1.0) > DRIFT_TOLERANCE:
            reasons.append(f"{where}, {ratio:.2f}x the prediction")
    return reasons


def reasons_to_reoptimize(firing: list[str], drifts: list[str]) -> list[str]:
    """Why a new search is worth running: alerts fire, or the config was chosen on predictions that do not hold."""
    return [f"alert: {alert}" for alert in firing] + drifts
