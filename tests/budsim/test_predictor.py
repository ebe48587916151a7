import json

import numpy as np
import pytest

from budsim.catalog import get_model
from budsim.dataset import data_hash, load_samples
from budsim.features import FEATURE_NAMES
from budsim.predictor import ARTIFACT_DIR, Predictor, predict, predict_many
from budsim.schemas import ServingConfig, Workload
from budsim.train import train


def _assert_plain_json_predictor(artifact_dir):
    raw = (artifact_dir / "predictor.json").read_bytes()
    assert raw.lstrip().startswith(b"{")  # JSON, never a pickle
    document = json.loads(raw)
    assert set(document) == {"format", "ttft", "tpot"}
    assert document["ttft"]["learner"]["objective"]["name"] == "reg:pseudohubererror"
    meta = json.loads((artifact_dir / "predictor.meta.json").read_text())
    assert meta["features"] == FEATURE_NAMES
    assert meta["data"]["hash"].startswith("sha256:") and meta["data"]["rows"] > 0
    predictor = Predictor(artifact_dir)
    assert predictor.fitted.ttft_booster.num_features() == len(FEATURE_NAMES)
    return meta, predictor


def test_committed_artifact_is_plain_json_with_its_features():
    meta, _ = _assert_plain_json_predictor(ARTIFACT_DIR)
    assert meta["data"]["file"] == "aiconfigurator/silicon_sample.csv" and meta["data"]["groups"] >= 40


@pytest.fixture(scope="module")
def trained_on_fixture(tmp_path_factory, silicon_fixture):
    """`python -m budsim.train --seed 7 --data <fixture> --out <dir>`, once for this module."""
    out_dir = tmp_path_factory.mktemp("trained")
    train(seed=7, out_dir=out_dir, data=silicon_fixture)
    return out_dir


def test_training_writes_artifacts_the_predictor_loads_and_records_the_data(trained_on_fixture, silicon_fixture):
    meta, predictor = _assert_plain_json_predictor(trained_on_fixture)
    samples, skipped = load_samples(silicon_fixture)
    assert meta["data"]["hash"] == data_hash(silicon_fixture) and meta["seed"] == 7
    assert meta["data"]["rows"] == len(samples) and meta["data"]["skipped"] == skipped == {"mode": 4}
    assert set(meta["calibrations"]) == {"vllm", "sglang", "trtllm"}  # every runtime has enough rows to calibrate
    ttft, tpot, _ = predictor.predict_points([s.point for s in samples])
    measured = np.array([[s.ttft_ms, s.tpot_ms] for s in samples])
    # fitted on these very rows: the corrected predictions land near what was measured
    assert np.median(np.abs(np.log(np.stack([ttft, tpot], axis=1) / measured))) < np.log(1.25)


def test_training_is_reproducible_for_a_seed(trained_on_fixture, tmp_path, silicon_fixture):
    train(seed=7, out_dir=tmp_path, data=silicon_fixture)
    for name in ("predictor.json", "predictor.meta.json"):
        assert (tmp_path / name).read_bytes() == (trained_on_fixture / name).read_bytes(), name


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
