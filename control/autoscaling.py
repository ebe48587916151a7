"""The HorizontalPodAutoscaler's algorithm (autoscaling/v2), as pure functions the AutoscaleEndpoint workflow runs.

For each metric: desired = ceil(current x current_value / target) (Value and Utilization targets), or
ceil(value / target) (AverageValue); ratios within 10 % of 1 leave the count alone. The largest desire wins,
clamped to [min_replicas, max_replicas]. Stabilization: a scale-down takes the highest recommendation of the
scale-down window (default 5 min) so a brief lull does not drop capacity; a scale-up takes the lowest of the
scale-up window (default 0: at once). Same rules as Kubernetes, so an endpoint behaves alike on both backends.
"""

from __future__ import annotations

import math

from control.payloads.autoscaling import AutoscalingSpec, LoadSample, Recommendation

TOLERANCE = 0.1


def recommend(spec: AutoscalingSpec, sample: LoadSample) -> tuple[int, list[str]]:
    """(replicas the metrics ask for, clamped to the spec's bounds; one line per metric saying why)."""
    current = max(sample.replicas, 1)
    desires, reasons = [], []
    for metric in spec.metrics:
        if metric.type == "Resource" and metric.resource is not None:
            if sample.cpu_utilization is None:
                reasons.append("cpu: no reading")
                continue
            target = float(metric.resource.target.averageUtilization or 0)
            desired = _proportional(current, sample.cpu_utilization / target)
            reasons.append(f"cpu {sample.cpu_utilization:.0f} % vs {target:.0f} % -> {desired}")
        elif metric.external is not None:
            if sample.queue_depth is None:
                reasons.append("inference_queue_depth: no reading")
                continue
            target = metric.external.target
            if target.type == "AverageValue":
                desired = max(1, math.ceil(sample.queue_depth / float(target.averageValue or 1)))
                shown = f"average {target.averageValue:g}"
            else:
                desired = _proportional(current, sample.queue_depth / float(target.value or 1))
                shown = f"{target.value:g}"
            reasons.append(f"inference_queue_depth {sample.queue_depth:g} vs {shown} -> {desired}")
        else:
            continue
        desires.append(desired)
    wanted = max(desires) if desires else current
    return min(max(wanted, spec.min_replicas), spec.max_replicas), reasons


def _proportional(current: int, ratio: float) -> int:
    if abs(ratio - 1.0) <= TOLERANCE:
        return current
    return max(1, math.ceil(current * ratio))


def stabilize(
    spec: AutoscalingSpec, history: list[Recommendation], now: float, current: int, recommended: int
) -> tuple[int, list[Recommendation]]:
    """The replica count to set now, and the recommendation history to keep (pruned to the longest window)."""
    history = [*history, Recommendation(at=now, replicas=recommended)]
    down_window, up_window = spec.stabilization_window_s("scaleDown"), spec.stabilization_window_s("scaleUp")
    decision = recommended
    if recommended < current:
        decision = max(r.replicas for r in history if r.at >= now - down_window)
        decision = min(decision, current)
    elif recommended > current:
        decision = min(r.replicas for r in history if r.at >= now - up_window)
        decision = max(decision, current)
    keep = max(down_window, up_window)
    # The bounds win over the window (a lowered max_replicas applies at once, as in Kubernetes).
    decision = min(max(decision, spec.min_replicas), spec.max_replicas)
    return decision, [r for r in history if r.at >= now - keep]
