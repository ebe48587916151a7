"""The API <-> optimizer translation (control/translate.py): a recommended config, stored on the endpoint and read
back for the deploy, is the config the optimizer judged; targets and workloads keep every field."""

from __future__ import annotations

from budsim.schemas import ServingConfig, Targets, Workload
from control import translate
from control.payloads.deployments import PerformanceTargets, RuntimeConfig, WorkloadSpec


def test_a_recommended_config_comes_back_as_the_optimizer_judged_it():
    chosen = ServingConfig(tensor_parallel_size=2, pipeline_parallel_size=2, max_num_seqs=48,
                           max_num_batched_tokens=4096, max_model_len=3072, gpu_memory_utilization=0.85,
                           replicas=3, runtime="sglang")
    stored = translate.runtime_config(chosen).model_dump()  # what the endpoint row holds
    judged = translate.serving_config(RuntimeConfig.model_validate(stored), chosen.replicas, chosen.runtime,
                                      context_length=131_072)
    assert judged == chosen
    assert translate.replica_resources(chosen, "nvidia-h100-80gb").gpu_count == 4


def test_unset_api_fields_take_the_models_context_and_budsims_batch_budget():
    judged = translate.serving_config(RuntimeConfig(), replicas=0, runtime="vllm", context_length=4096)
    assert judged.max_model_len == 4096
    assert judged.max_num_batched_tokens == ServingConfig().max_num_batched_tokens
    assert judged.replicas == 1


def test_targets_and_workload_keep_every_field():
    targets = PerformanceTargets(max_latency_ms=2000, max_ttft_ms=300, min_throughput_tps=100, max_cost_per_hour=9)
    assert translate.targets(targets) == Targets(**targets.model_dump())
    assert translate.targets(targets.model_dump()) == translate.targets(targets)  # as stored on the endpoint
    assert translate.targets(None) == Targets()
    assert set(PerformanceTargets.model_fields) == set(Targets.model_fields)
    spec = WorkloadSpec(input_tokens=700, output_tokens=90, concurrency=12)
    assert translate.workload(spec) == Workload(input_tokens=700, output_tokens=90, concurrency=12)
    assert set(WorkloadSpec.model_fields) == set(Workload.model_fields)
