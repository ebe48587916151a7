"""Monitoring's judgement: the alert thresholds (p99 latency 2 s, TTFT 500 ms, GPU 95 %, queue 100), measured means
vs the predicted interval, the minimum window, and when to search again."""

from control.monitoring import (
    MIN_WINDOW_REQUESTS,
    alerts,
    drift,
    drifting,
    reasons_to_reoptimize,
    too_few_requests,
)
from control.payloads.monitoring import Expectation, LiveMetrics


def test_each_seed_threshold_fires_only_beyond_its_limit():
    calm = LiveMetrics(inference_latency_p99_ms=1900, ttft_p99_ms=450, throughput_tps=120, gpu_utilization=90,
                       queue_depth=20)
    assert alerts(calm, Expectation(targets={"min_throughput_tps": 100})) == []
    hot = LiveMetrics(inference_latency_p99_ms=2500, ttft_p99_ms=800, throughput_tps=80, gpu_utilization=99,
                      queue_depth=150)
    firing = alerts(hot, Expectation(targets={"min_throughput_tps": 100}))
    assert [a.split()[0] for a in firing] == ["inference_latency_p99", "ttft_p99", "throughput", "gpu_utilization",
                                             "queue_depth"]
    assert "throughput 80 tokens/s < target 100" in firing


def test_missing_measurements_raise_no_alert_and_no_drift():
    assert alerts(LiveMetrics(), Expectation(targets={"min_throughput_tps": 100})) == []
    assert drift(LiveMetrics(ttft_mean_ms=50), Expectation()) == {}


def test_drift_is_judged_on_means_against_the_predicted_interval():
    expectation = Expectation(predicted_ttft_ms=100, predicted_tpot_ms=10, ttft_p10_ms=70, ttft_p90_ms=140,
                              tpot_p10_ms=8, tpot_p90_ms=13)
    busy = LiveMetrics(requests=500, ttft_mean_ms=150, tpot_mean_ms=12, ttft_p50_ms=400, tpot_p50_ms=50)
    assert drift(busy, expectation) == {"ttft": 1.5, "tpot": 1.2}  # means, not the bucket-bound quantiles
    assert drifting(busy, expectation) == [
        "ttft measured 150 ms (mean of 500 requests), outside the predicted P10-P90 70-140 ms"]
    assert reasons_to_reoptimize(["queue_depth 150 > 100"], []) == ["alert: queue_depth 150 > 100"]
    # without an interval (a prediction stored before they existed): a quarter either way
    bare = Expectation(predicted_ttft_ms=100, predicted_tpot_ms=10)
    assert drifting(busy, bare) == ["ttft measured 150 ms (mean of 500 requests), 1.50x the prediction"]


def test_tokens_far_below_the_finest_bucket_are_not_drift():
    # 0.1 ms tokens: vLLM's lowest TPOT bucket is 10 ms, so its quantile says 5 ms; the mean says 0.1
    expectation = Expectation(predicted_tpot_ms=0.1, tpot_p10_ms=0.08, tpot_p90_ms=0.13)
    metrics = LiveMetrics(requests=1000, tpot_p50_ms=5.0, tpot_mean_ms=0.104)
    assert drifting(metrics, expectation) == []


def test_a_window_with_too_few_requests_gives_no_drift_and_says_why():
    expectation = Expectation(predicted_tpot_ms=10, tpot_p10_ms=8, tpot_p90_ms=13)
    few = LiveMetrics(requests=MIN_WINDOW_REQUESTS - 1, tpot_mean_ms=40)
    assert drifting(few, expectation) == []
    assert too_few_requests(few, 60) == (f"{MIN_WINDOW_REQUESTS - 1} requests finished in the 60 s window; "
                                         f"measurements, drift and advice need at least {MIN_WINDOW_REQUESTS}")
    enough = LiveMetrics(requests=MIN_WINDOW_REQUESTS, tpot_mean_ms=40)
    assert too_few_requests(enough, 60) is None and len(drifting(enough, expectation)) == 1
