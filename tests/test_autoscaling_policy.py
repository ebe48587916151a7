"""The autoscaler's rules (the HPA's algorithm) and the autoscaling block as the API validates it."""

import pytest
from pydantic import ValidationError

from control.autoscaling import idle_override, last_active, recommend, stabilize
from control.payloads.autoscaling import AutoscalingSpec, LoadSample, Recommendation


def queue_spec(value: float = 10, kind: str = "Value", **spec) -> AutoscalingSpec:
    target = {"type": kind, ("value" if kind == "Value" else "averageValue"): value}
    return AutoscalingSpec.model_validate({
        "min_replicas": 1, "max_replicas": 10,
        "metrics": [{"type": "External", "external": {"metric": {"name": "inference_queue_depth"}, "target": target}}],
        **spec,
    })  # fmt: skip


def load(replicas: int, queue: float | None = None, cpu: float | None = None) -> LoadSample:
    return LoadSample(endpoint_status="RUNNING", replicas=replicas, ready_replicas=replicas, queue_depth=queue,
                      cpu_utilization=cpu)


def test_the_seed_block_is_the_default_and_parses():
    spec = AutoscalingSpec.model_validate({"enabled": True, "min_replicas": 2, "max_replicas": 10})
    assert [m.type for m in spec.metrics] == ["Resource", "External"]
    assert spec.metrics[0].resource.target.averageUtilization == 80
    assert spec.metrics[1].external.target.value == 100


def test_queue_depth_scales_in_proportion_and_is_clamped():
    spec = queue_spec(10)
    assert recommend(spec, load(2, queue=60))[0] == 10  # ceil(2 x 60/10) = 12, clamped to max_replicas
    assert recommend(spec, load(2, queue=30))[0] == 6
    assert recommend(spec, load(4, queue=0))[0] == 1  # idle: down to min_replicas
    assert recommend(queue_spec(10, min_replicas=3), load(4, queue=0))[0] == 3


def test_ratios_within_ten_percent_leave_the_count_alone():
    assert recommend(queue_spec(10), load(3, queue=10.9))[0] == 3
    assert recommend(queue_spec(10), load(3, queue=12))[0] == 4  # ceil(3 x 1.2)


def test_average_value_divides_by_the_per_replica_target():
    assert recommend(queue_spec(8, kind="AverageValue"), load(1, queue=30))[0] == 4


def test_the_largest_desire_of_all_metrics_wins_and_missing_readings_are_skipped():
    spec = AutoscalingSpec(min_replicas=1, max_replicas=10)  # seed: cpu 80 %, queue 100
    replicas, reasons = recommend(spec, load(2, queue=50, cpu=200))
    assert replicas == 5  # cpu: ceil(2 x 200/80) = 5; queue: ceil(2 x 50/100) = 1
    assert any(r.startswith("cpu 200 %") for r in reasons)
    replicas, reasons = recommend(spec, load(2, queue=None, cpu=None))
    assert replicas == 2 and "cpu: no reading" in reasons  # no data: no change


def test_scale_down_waits_for_the_window_and_scale_up_is_immediate():
    spec = queue_spec(10, behavior={"scaleDown": {"stabilizationWindowSeconds": 60}})
    history: list[Recommendation] = []
    decision, history = stabilize(spec, history, now=0, current=2, recommended=5)
    assert decision == 5  # scale up at once
    decision, history = stabilize(spec, history, now=30, current=5, recommended=1)
    assert decision == 5  # the window still holds the recommendation of 5
    decision, history = stabilize(spec, history, now=61, current=5, recommended=1)
    assert decision == 1  # the high recommendation left the window
    assert all(r.at >= 1 for r in history)  # pruned to the window


def test_scale_up_window_takes_the_lowest_recent_recommendation():
    spec = queue_spec(10, behavior={"scaleUp": {"stabilizationWindowSeconds": 30}, "scaleDown": {"stabilizationWindowSeconds": 0}})
    decision, history = stabilize(spec, [], now=0, current=2, recommended=2)
    decision, history = stabilize(spec, history, now=10, current=2, recommended=6)
    assert decision == 2  # a burst of 10 s does not add replicas yet
    decision, history = stabilize(spec, history, now=40, current=2, recommended=6)
    assert decision == 6


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"min_replicas": 5, "max_replicas": 2}, "max_replicas must be at least min_replicas"),
        ({"min_replicas": -1}, "min_replicas"),
        ({"min_replicas": 0, "scale_to_zero_after_s": 0}, "scale_to_zero_after_s"),
        ({"min_replicas": 0, "scale_to_zero_after_s": 86_401}, "scale_to_zero_after_s"),
        ({"min_replicas": 0, "scale_to_zero_after_s": "later"}, "scale_to_zero_after_s"),
        ({"metrics": [{"type": "External", "external": {"metric": {"name": "gpu_temperature"},
                                                        "target": {"type": "Value", "value": 1}}}]}, "name"),
        ({"metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                        "target": {"type": "Value", "value": 1}}}]}, "Utilization"),
        ({"metrics": [{"type": "External", "external": {"metric": {"name": "inference_queue_depth"},
                                                        "target": {"type": "Value", "value": -5}}}]}, "value"),
        ({"metrics": [{"type": "Resource", "external": {"metric": {"name": "inference_queue_depth"},
                                                        "target": {"type": "Value", "value": 5}}}]}, "resource"),
        ({"metrics": []}, "at least one metric"),
        ({"max_replicas": 3, "surprise": 1}, "surprise"),
        ({"behavior": {"scaleDown": 5}}, "scaleDown"),
        ({"behavior": {"scaleDown": {"stabilizationWindowSeconds": "soon"}}}, "stabilizationWindowSeconds"),
        ({"behavior": {"scaleUp": {"stabilizationWindowSeconds": 7200}}}, "stabilizationWindowSeconds"),
    ],
)
def test_bad_blocks_are_rejected_with_the_reason(body, field):
    with pytest.raises(ValidationError, match=field):
        AutoscalingSpec.model_validate(body)


def test_a_lowered_maximum_applies_at_once_despite_the_window():
    history = [Recommendation(at=0, replicas=8)]
    spec = queue_spec(10, max_replicas=3)  # was higher when the 8 was recommended
    decision, _ = stabilize(spec, history, now=10, current=8, recommended=3)
    assert decision == 3


def test_an_endpoint_allowed_zero_sleeps_only_after_its_idle_period():
    spec = queue_spec(10, min_replicas=0, scale_to_zero_after_s=120)
    assert spec.scale_to_zero_after_s == 120 and queue_spec(10, min_replicas=0).scale_to_zero_after_s == 300
    idle = load(1, queue=0)
    assert idle_override(spec, idle, now=1000, active_at=900) == (None, "")  # idle 100 s of 120: metrics decide
    replicas, reason = idle_override(spec, idle, now=1020, active_at=900)
    assert replicas == 0 and "no request for 120 s" in reason
    # The metrics alone never ask for zero: an idle queue recommends one replica.
    assert recommend(spec, idle)[0] == 1
    # A floor of one never sleeps, however long the silence.
    assert idle_override(queue_spec(10, min_replicas=1), idle, now=10**6, active_at=0) == (None, "")


def test_a_request_at_zero_replicas_wakes_one_at_once():
    spec = queue_spec(10, min_replicas=0, scale_to_zero_after_s=60)
    asleep = LoadSample(endpoint_status="RUNNING", replicas=0, ready_replicas=0, last_request_at=None)
    active = last_active(500.0, asleep, None, now=1000)
    assert idle_override(spec, asleep, now=1000, active_at=active)[0] == 0  # no demand: stays at zero
    stale = asleep.model_copy(update={"last_request_at": 900.0})  # the request that preceded the idle period
    assert idle_override(spec, stale, now=1000, active_at=last_active(900.0, stale, None, now=1000))[0] == 0
    noted = asleep.model_copy(update={"last_request_at": 999.5})
    active = last_active(500.0, noted, None, now=1000)
    assert active == 999.5
    replicas, reason = idle_override(spec, noted, now=1000, active_at=active)
    assert replicas == 1 and "zero replicas" in reason


def test_requests_in_the_replicas_keep_the_endpoint_awake():
    assert last_active(100.0, load(1, queue=3), None, now=500) == 500  # requests running now
    finished = load(1, queue=0).model_copy(update={"requests_finished": 12})
    assert last_active(100.0, finished, 10, now=500) == 500  # two finished since the previous sample
    assert last_active(100.0, finished, 12, now=500) == 100  # none since
    fewer = load(1, queue=0).model_copy(update={"requests_finished": 4})
    assert last_active(100.0, fewer, 12, now=500) == 100  # a replica left: not a request
    assert last_active(None, load(1, queue=0), None, now=500) == 500  # just started: the idle clock starts now
    future = load(1, queue=0).model_copy(update={"last_request_at": 900.0})
    assert last_active(100.0, future, None, now=500) == 500  # a clock ahead of ours counts as now, no later
