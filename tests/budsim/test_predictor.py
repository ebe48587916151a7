import json

import numpy as np
import pytest

from budsim.catalog import get_model
from budsim.dataset import data_hash, load_samples
from budsim.features import FEATURE_NAMES
from budsim.fitting import booster_to_json, fit
from budsim.predictor import ARTIFACT_DIR, Predictor, predict, predict_many
from budsim.schemas import ServingConfig, Workload


def test_committed_artifact_is_plain_json_trained_on_this_data():
    raw = (ARTIFACT_DIR / "predictor.json").read_bytes()
    assert raw.lstrip().startswith(b"{")  # JSON, never a pickle
    document = json.loads(raw)
    assert set(document) == {"format", "ttft", "tpot"}
    assert document["ttft"]["learner"]["objective"]["name"] == "reg:pseudohubererror"
    meta = json.loads((ARTIFACT_DIR / "predictor.meta.json").read_text())
    assert meta["features"] == FEATURE_NAMES
    assert meta["data"]["hash"] == data_hash(), "artifact is stale: rerun `python -m budsim.train`"
    predictor = Predictor()
    assert predictor.fitted.ttft_booster.num_features() == len(FEATURE_NAMES)


def test_training_is_reproducible_for_a_seed():
    samples, _ = load_samples()
    subset = samples[::12]
    first, second = fit(subset, seed=7), fit(subset, seed=7)
    assert booster_to_json(first.tpot_booster) == booster_to_json(second.tpot_booster)
    assert first.calibrations == second.calibrations


def test_more_tensor_parallelism_lowers_tpot_for_a_70b(llama70b):
    workload = Workload(input_tokens=1024, output_tokens=256, concurrency=16)
    configs = [ServingConfig(tensor_parallel_size=tp, max_num_seqs=32, max_model_len=2048) for tp in (4, 8)]
    tpot = [p.tpot_ms for p in predict_many(llama70b, "h100_sxm", configs, workload)]
    assert tpot[1] < tpot[0]
    assert 5 < tpot[1] < 40  # a 70B on H100s decodes in tens of milliseconds per token, not micro- or seconds


@pytest.mark.parametrize("gpu", ["h100_sxm", "h200_sxm", "nvidia-a100-80gb", "nvidia-l40s"])
def test_longer_prompts_raise_ttft(llama8b, gpu):
    config = ServingConfig(max_num_seqs=32, max_model_len=16384)
    ttft = [
        predict(llama8b, gpu, config, Workload(input_tokens=n, output_tokens=128, concurrency=4)).ttft_ms
        for n in (256, 2048, 8192)
    ]
    assert ttft[0] < ttft[1] < ttft[2]


def test_faster_memory_decodes_faster(llama8b):
    config, workload = ServingConfig(), Workload(input_tokens=512, output_tokens=256, concurrency=8)
    assert (
        predict(llama8b, "h200_sxm", config, workload).tpot_ms < predict(llama8b, "nvidia-l4", config, workload).tpot_ms
    )


def test_throughput_latency_and_cost_are_consistent(llama8b):
    config = ServingConfig(tensor_parallel_size=2, replicas=2)
    workload = Workload(input_tokens=1000, output_tokens=200, concurrency=40)
    p = predict(llama8b, "h100_sxm", config, workload, price_per_hour=2.0)
    assert p.e2e_latency_ms == pytest.approx(p.ttft_ms + 199 * p.tpot_ms)
    assert p.output_throughput_tps == pytest.approx(40 * 200 / (p.e2e_latency_ms / 1000))
    assert p.cost_per_hour == pytest.approx(8.0)
    assert p.cost_per_million_tokens == pytest.approx(8.0 / (p.output_throughput_tps * 3600) * 1e6)


def test_concurrency_beyond_max_num_seqs_queues(llama8b):
    workload = Workload(input_tokens=1024, output_tokens=256, concurrency=64)
    roomy, tight = predict_many(
        llama8b, "h100_sxm", [ServingConfig(max_num_seqs=64), ServingConfig(max_num_seqs=8)], workload
    )
    assert not roomy.queued and tight.queued
    assert tight.running_per_replica == 8
    assert tight.ttft_ms > 3 * roomy.ttft_ms  # waiting for a slot dominates


def test_predictions_are_finite_for_every_catalog_model():
    from budsim.catalog import list_models

    ids = sorted({get_model(m).model_dump_json(): m for m in list_models()}.values())
    for hf_id in ids:
        model = get_model(hf_id)
        p = predict(model, "b200_sxm", ServingConfig(tensor_parallel_size=8), Workload())
        assert np.isfinite([p.ttft_ms, p.tpot_ms, p.output_throughput_tps]).all() and p.tpot_ms > 0, hf_id
