import pytest

from budsim.errors import InvalidRequest
from budsim.schemas import Method, OptimizationRequest, SearchState, ServingConfig, Targets, Workload
from budsim.search import advance_search, finish_search, optimize, start_search


def _request(model, **overrides):
    values = dict(
        model=model,
        gpu_type="h100_sxm",
        available_gpus=8,
        workload=Workload(input_tokens=1024, output_tokens=256, concurrency=32),
        seed=3,
    )
    values.update(overrides)
    return OptimizationRequest(**values)


def test_finds_the_cheapest_config_that_meets_reachable_targets(llama70b):
    result = optimize(_request(llama70b, targets=Targets(max_ttft_ms=2000, max_latency_ms=20000)))
    assert result.meets_targets and result.recommendation.meets_targets
    rec = result.recommendation
    assert rec.prediction.ttft_ms <= 2000 and rec.prediction.e2e_latency_ms <= 20000
    assert rec.config.tensor_parallel_size * rec.config.replicas <= 8
    # cheapest: nothing on the front that meets the targets costs less
    for candidate in result.pareto:
        p = candidate.prediction
        if p.ttft_ms <= 2000 and p.e2e_latency_ms <= 20000:
            assert p.cost_per_hour >= rec.prediction.cost_per_hour
    # the 70B does not fit one GPU: the search saw that and says why
    assert any("does not fit in GPU memory" in reason for r in result.rejected for reason in r.reasons)
    assert len(result.pareto) >= 2


def test_unreachable_targets_are_a_normal_answer_that_says_what_fails(llama70b):
    result = optimize(_request(llama70b, targets=Targets(max_ttft_ms=1.0, max_cost_per_hour=100)))
    assert not result.meets_targets
    rec = result.recommendation
    assert rec is not None and not rec.meets_targets
    misses = {m.target: m for m in rec.failed_targets}
    assert set(misses) == {"max_ttft_ms"}
    assert misses["max_ttft_ms"].predicted > 1.0 and misses["max_ttft_ms"].shortfall_pct > 100
    assert "none meets the targets" in result.message


def test_resumable_search_equals_one_shot(llama8b):
    request = _request(llama8b, generations=12, population_size=24, targets=Targets(max_ttft_ms=300))
    one_shot = optimize(request)
    state = start_search(request)
    state = advance_search(state, 4)
    state = SearchState.model_validate_json(state.model_dump_json())  # as a workflow would store it
    assert state.generation == 5 and not state.done
    state = advance_search(state, 3)
    state = advance_search(SearchState.model_validate_json(state.model_dump_json()), 100)
    assert state.done and state.generation == 12
    assert finish_search(state) == one_shot


def test_heuristic_and_manual_methods(llama8b):
    heuristic = optimize(_request(llama8b, method=Method.HEURISTIC, targets=Targets(max_ttft_ms=1000)))
    assert heuristic.meets_targets and heuristic.recommendation.config.total_gpus <= 8
    config = ServingConfig(tensor_parallel_size=2, max_num_seqs=64, max_model_len=2048)
    manual = optimize(_request(llama8b, method=Method.MANUAL, config=config))
    assert manual.recommendation.config.tensor_parallel_size == 2 and manual.evaluated == 1
    assert manual.meets_targets  # no targets given, and it fits


def test_manual_config_that_does_not_fit_is_rejected_with_reasons(llama70b):
    config = ServingConfig(tensor_parallel_size=1, max_model_len=2048)
    result = optimize(_request(llama70b, method=Method.MANUAL, config=config))
    assert not result.meets_targets
    assert "does not fit in GPU memory" in result.rejected[0].reasons[0]
    assert result.recommendation.prediction.tpot_ms > 0  # still says what it would do


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(gpu_type="nvidia-gtx-480"), "gpu_type"),
        (dict(targets=Targets(max_ttft_ms=-5)), "targets.max_ttft_ms"),
        (dict(targets=Targets(min_throughput_tps=0)), "targets.min_throughput_tps"),
        (dict(method=Method.MANUAL, config=ServingConfig(tensor_parallel_size=3)), "config"),
        (dict(method=Method.MANUAL), "config"),
        (dict(runtime="triton"), "runtime"),
        (dict(available_gpus=0), "available_gpus"),
        (dict(workload=Workload(input_tokens=200000, output_tokens=10)), "workload"),
    ],
)
def test_bad_input_is_invalid_request(llama8b, overrides, field):
    with pytest.raises(InvalidRequest) as error:
        optimize(_request(llama8b, **overrides))
    assert error.value.field == field
    if field == "config" and "config" in overrides:
        assert "does not divide the 32 attention heads" in error.value.message


def test_more_gpus_never_recommend_a_worse_config(llama8b):
    targets = Targets(max_ttft_ms=500)
    small = optimize(_request(llama8b, available_gpus=2, targets=targets))
    large = optimize(_request(llama8b, available_gpus=8, targets=targets))
    assert small.meets_targets and large.meets_targets
    assert large.recommendation.prediction.cost_per_hour <= small.recommendation.prediction.cost_per_hour * 1.0001


def test_the_recommendation_is_the_front_member_that_predicts_the_same(llama8b):
    # max_num_seqs 16 and 128 predict the same at 16 clients, but 128 has more capacity: the front keeps 128, so
    # the recommendation (once 16 with identical predicted numbers) must be that same config.
    request = OptimizationRequest(model=llama8b, gpu_type="h100_sxm", available_gpus=8,
                                  targets=Targets(max_ttft_ms=500), seed=0)
    result = optimize(request)
    rec = result.recommendation
    assert rec.meets_targets
    assert rec.config in [c.config for c in result.pareto]
    same = [c for c in result.pareto if c.prediction.cost_per_hour == rec.prediction.cost_per_hour
            and abs(c.prediction.e2e_latency_ms - rec.prediction.e2e_latency_ms) < 1e-6]
    assert [c.config for c in same] == [rec.config] and same[0].prediction == rec.prediction


def test_confidence_high_judges_the_targets_on_the_interval_s_pessimistic_side(llama8b):
    expected = optimize(_request(llama8b, method=Method.HEURISTIC, targets=Targets(max_latency_ms=4000)))
    p = expected.recommendation.prediction
    assert p.e2e_latency_p10_ms < p.e2e_latency_ms < p.e2e_latency_p90_ms  # every prediction carries its interval
    assert all(c.prediction.ttft_p90_ms > c.prediction.ttft_ms for c in expected.pareto)
    # a limit between the recommendation's predicted latency and its P90: met when expected, not with confidence
    limit = (p.e2e_latency_ms + p.e2e_latency_p90_ms) / 2
    sure = optimize(_request(llama8b, method=Method.HEURISTIC,
                             targets=Targets(max_latency_ms=limit, confidence="high")))
    loose = optimize(_request(llama8b, method=Method.HEURISTIC, targets=Targets(max_latency_ms=limit)))
    assert loose.meets_targets and loose.recommendation.prediction.e2e_latency_ms <= limit
    chosen = sure.recommendation
    if sure.meets_targets:
        assert chosen.prediction.e2e_latency_p90_ms <= limit and "P90" in chosen.reason
        assert chosen.config != loose.recommendation.config
        assert chosen.prediction.cost_per_hour >= loose.recommendation.prediction.cost_per_hour
    else:
        assert {m.basis for m in chosen.failed_targets} == {"p90"}
    with pytest.raises(ValueError):
        Targets(confidence="certain")


def _slow_measurements(model, factor: float, spread: float = 0.0):
    """Measured rows of the 8B on one H100 under vLLM whose TPOT is `factor` x the cold prediction."""
    from budsim.calibration import Measurement
    from budsim.catalog import get_gpu
    from budsim.predictor import predict, serving_point

    rows = []
    for index, (seqs, concurrency) in enumerate([(16, 1), (64, 16), (256, 64), (128, 32)]):
        config = ServingConfig(max_num_seqs=seqs, max_model_len=2048)
        workload = Workload(input_tokens=1024, output_tokens=256, concurrency=concurrency)
        cold = predict(model, "h100_sxm", config, workload)
        wobble = 1 + spread * (-1) ** index
        rows.append(Measurement(serving_point(model, get_gpu("h100_sxm"), config, workload),
                                cold.ttft_ms * factor * wobble, cold.tpot_ms * factor * wobble, id=f"m{index}"))
    return rows


def test_a_group_calibration_is_used_by_the_search_and_reported(llama8b):
    from budsim.calibration import calibrate, group_of

    rows = _slow_measurements(llama8b, 2.5)
    calibration = calibrate(group_of(rows[0].point, "meta-llama/Llama-3.1-8B-Instruct"), rows)
    targets = Targets(max_latency_ms=3000)
    cold = optimize(_request(llama8b, method=Method.HEURISTIC, targets=targets))
    calibrated = optimize(_request(llama8b, method=Method.HEURISTIC, targets=targets, group_calibration=calibration))
    assert cold.calibration is None and "uncalibrated" in cold.message
    assert calibrated.calibration == calibration and calibrated.calibration.measurements == ["m0", "m1", "m2", "m3"]
    assert "calibrated on 4 measurement(s)" in calibrated.message
    assert calibrated.recommendation.prediction.calibrated
    # measured 2.5x slower: the cold choice no longer meets the latency target, a larger config is needed
    assert calibrated.recommendation.config.total_gpus > cold.recommendation.config.total_gpus
    cold_config = cold.recommendation.config
    assert cold_config not in [c.config for c in calibrated.pareto]
    # the same request and measurements give the same answer
    again = optimize(_request(llama8b, method=Method.HEURISTIC, targets=targets,
                              group_calibration=calibrate(group_of(rows[0].point, "meta-llama/Llama-3.1-8B-Instruct"),
                                                          rows)))
    assert again == calibrated


def test_measurements_the_calibration_cannot_explain_are_said_in_the_answer(llama8b):
    from budsim.calibration import calibrate, group_of

    rows = _slow_measurements(llama8b, 1.0, spread=0.8)
    calibration = calibrate(group_of(rows[0].point, "meta-llama/Llama-3.1-8B-Instruct"), rows)
    assert not calibration.consistent
    result = optimize(_request(llama8b, method=Method.HEURISTIC, group_calibration=calibration))
    assert "disagree" in result.message and result.recommendation.prediction.calibration_warning


def test_a_calibration_of_another_group_is_refused(llama8b):
    from budsim.calibration import calibrate, group_of

    rows = _slow_measurements(llama8b, 2.0)
    calibration = calibrate(group_of(rows[0].point, "meta-llama/Llama-3.1-8B-Instruct"), rows)
    with pytest.raises(InvalidRequest) as error:
        optimize(_request(llama8b, gpu_type="nvidia-l4", group_calibration=calibration))
    assert error.value.field == "group_calibration"
