"""Canary analysis of one step of a gradual traffic shift: the canary (the new endpoint) beside the stable version
(the endpoints it replaces) over the same window of the same route.

Each side's figures come from the gateway's exact per-request timings: TTFT p99, TPOT p50, whole-request latency
p99, the error rate (5xx answers and requests that ended early) and the request count; the queue depth is the mean
number of requests waiting per replica at the end of the step. The decision:

- fewer canary requests than `min_requests`: no evidence yet (the step waits for traffic);
- the absolute SLOs are a floor: TTFT p99, latency p99 and error rate over their maximum fail the step whatever
  the stable version does;
- against the stable version, when it served at least `min_requests` in the same window (at 100 % it serves
  nothing: that step has the floor only, the comparisons were made at the steps that split the traffic, under the
  same load on both sides): canary TTFT p99 <= stable x (1 + tolerance) + slack_ms, TPOT p50 <= stable x (1 + tolerance) +
  tpot_slack_ms, error rate <= stable + error_rate_slack, queue depth <= stable x (1 + tolerance) + queue_slack.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from control.payloads.traffic import Slo


class SideStats(BaseModel):
    """One side of the comparison over a step's window."""

    requests: int = 0
    errors: int = 0
    ttft_p99_ms: float | None = None
    tpot_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    queue_depth: float | None = Field(default=None, description="mean requests waiting per replica; None: unread")

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def figures(self) -> dict:
        """The numbers as a step record shows them."""
        return {"requests": self.requests, "errors": self.errors, "error_rate": round(self.error_rate, 4),
                "ttft_p99_ms": _round(self.ttft_p99_ms), "tpot_p50_ms": _round(self.tpot_p50_ms),
                "latency_p99_ms": _round(self.latency_p99_ms), "queue_depth": _round(self.queue_depth)}


Verdict = Literal["held", "failed", "insufficient"]


class Decision(BaseModel):
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list, description="why the step failed or waits; empty when held")
    baseline: SideStats | None = Field(default=None, description="the stable figures the canary was compared with")
    baseline_from: str | None = Field(default=None, description='"this step"; None: too little stable traffic to compare')


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _band(stable: float, tolerance: float, slack: float) -> float:
    return stable * (1 + tolerance) + slack


def decide(canary: SideStats, stable: SideStats, slo: Slo) -> Decision:
    """The step's decision."""
    if canary.requests < slo.min_requests:
        return Decision(verdict="insufficient", reasons=[
            f"only {canary.requests} requests reached the canary (at least {slo.min_requests} needed)"])
    reasons: list[str] = []
    if canary.ttft_p99_ms is not None and canary.ttft_p99_ms > slo.max_ttft_p99_ms:
        reasons.append(f"TTFT p99 {canary.ttft_p99_ms:.0f} ms > {slo.max_ttft_p99_ms:.0f} ms (absolute SLO)")
    if canary.latency_p99_ms is not None and canary.latency_p99_ms > slo.max_latency_p99_ms:
        reasons.append(f"latency p99 {canary.latency_p99_ms:.0f} ms > {slo.max_latency_p99_ms:.0f} ms (absolute SLO)")
    if canary.error_rate > slo.max_error_rate:
        reasons.append(f"error rate {canary.error_rate:.1%} > {slo.max_error_rate:.1%} (absolute SLO)")

    baseline, baseline_from = (stable, "this step") if stable.requests >= slo.min_requests else (None, None)
    if baseline is not None:
        compared = f"stable ({baseline_from})"
        if canary.ttft_p99_ms is not None and baseline.ttft_p99_ms is not None:
            limit = _band(baseline.ttft_p99_ms, slo.tolerance, slo.slack_ms)
            if canary.ttft_p99_ms > limit:
                reasons.append(f"TTFT p99 {canary.ttft_p99_ms:.0f} ms > {limit:.0f} ms ({compared} "
                               f"{baseline.ttft_p99_ms:.0f} ms x {1 + slo.tolerance:g} + {slo.slack_ms:g} ms)")
        if canary.tpot_p50_ms is not None and baseline.tpot_p50_ms is not None:
            limit = _band(baseline.tpot_p50_ms, slo.tolerance, slo.tpot_slack_ms)
            if canary.tpot_p50_ms > limit:
                reasons.append(f"TPOT p50 {canary.tpot_p50_ms:.1f} ms > {limit:.1f} ms ({compared} "
                               f"{baseline.tpot_p50_ms:.1f} ms x {1 + slo.tolerance:g} + {slo.tpot_slack_ms:g} ms)")
        if canary.error_rate > baseline.error_rate + slo.error_rate_slack:
            reasons.append(f"error rate {canary.error_rate:.1%} > {baseline.error_rate + slo.error_rate_slack:.1%} "
                           f"({compared} {baseline.error_rate:.1%} + {slo.error_rate_slack:.1%})")
        if canary.queue_depth is not None and baseline.queue_depth is not None:
            limit = _band(baseline.queue_depth, slo.tolerance, slo.queue_slack)
            if canary.queue_depth > limit:
                reasons.append(f"queue depth {canary.queue_depth:.1f} > {limit:.1f} ({compared} "
                               f"{baseline.queue_depth:.1f} x {1 + slo.tolerance:g} + {slo.queue_slack:g})")
    return Decision(verdict="failed" if reasons else "held", reasons=reasons, baseline=baseline,
                    baseline_from=baseline_from)
