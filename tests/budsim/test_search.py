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
