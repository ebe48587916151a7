"""Monitoring's judgement: the alert thresholds (p99 latency 2 s, TTFT 500 ms, GPU 95 %, queue 100), measured vs
predicted, and when to search again."""

from control.monitoring import alerts, drift, reasons_to_reoptimize
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
    assert drift(LiveMetrics(ttft_p50_ms=50), Expectation()) == {}


def test_drift_beyond_a_quarter_is_a_reason_to_search_again():
    ratios = drift(LiveMetrics(ttft_p50_ms=150, tpot_p50_ms=11), Expectation(predicted_ttft_ms=100, predicted_tpot_ms=10))
    assert ratios == {"ttft": 1.5, "tpot": 1.1}
    assert reasons_to_reoptimize([], ratios) == ["ttft measured 1.50x the prediction"]
    assert reasons_to_reoptimize(["queue_depth 150 > 100"], {}) == ["alert: queue_depth 150 > 100"]
