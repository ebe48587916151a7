"""The HorizontalPodAutoscaler's algorithm (autoscaling/v2), as pure functions the AutoscaleEndpoint workflow runs.

For each metric: desired = ceil(current x current_value / target) (Value and Utilization targets), or
ceil(value / target) (AverageValue); ratios within 10 % of 1 leave the count alone. The largest desire wins,
clamped to [min_replicas, max_replicas]. Stabilization: a scale-down takes the highest recommendation of the
scale-down window (default 5 min) so a brief lull does not drop capacity; a scale-up takes the lowest of the
scale-up window (default 0: at once). Same rules as Kubernetes, so an endpoint behaves alike on both backends.

Scale to zero (`min_replicas: 0`, local cluster): the metrics never ask for fewer than one replica; `idle_override`
decides instead, before the windows: 0 once the endpoint has had no request for `scale_to_zero_after_s`, and 1 at once
(no window) when a request arrived for an endpoint at zero replicas.
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


def last_active(previous: float | None, sample: LoadSample, previous_finished: float | None, now: float) -> float:
    """The last time the endpoint had a request: the gateway's last demand note, or now when requests are in its
    replicas or they finished more since the previous sample (a replica leaving lowers the sum: not a request).
    `previous` None: the autoscaler just started, so the idle clock starts now."""
    active = now if previous is None else previous
    if sample.last_request_at is not None:
        active = max(active, min(sample.last_request_at, now))
    busy = bool(sample.queue_depth)
    finished = (sample.requests_finished is not None and previous_finished is not None
                and sample.requests_finished > previous_finished)
    if busy or finished:
        active = now
    return active


def idle_override(spec: AutoscalingSpec, sample: LoadSample, now: float, active_at: float) -> tuple[int | None, str]:
    """For an endpoint that may scale to zero: at zero replicas, 1 when the gateway noted a request within the idle
    period and 0 otherwise; with replicas, 0 once idle for the period. None (and no reason) leaves the count to the
    metrics and windows."""
    if spec.min_replicas > 0:
        return None, ""
    period = spec.scale_to_zero_after_s
    if sample.replicas == 0:
        noted = sample.last_request_at
        if noted is not None and now - noted < period:
            return 1, f"a request arrived {max(0.0, now - noted):.0f} s ago at zero replicas -> 1"
        return 0, "at zero replicas, no request since -> 0"
    idle_s = max(0.0, now - active_at)
    if idle_s >= period:
        return 0, f"no request for {idle_s:.0f} s (scale to zero after {period} s) -> 0"
    return None, ""
