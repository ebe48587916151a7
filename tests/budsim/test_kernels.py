"""Per-GPU kernel profiles: the fits recover known efficiencies, the curves interpolate what was measured, and the
committed artifacts (profiles, predictor) belong together."""

import json
import shutil

import numpy as np
import pytest

from budsim.catalog import get_gpu
from budsim.dataset import Sample
from budsim.evaluate import runtime_transfer_ceiling
from budsim.kernel_fit import allreduce_curves, fit_decode_attention, fit_gemm
from budsim.kernels import ARTIFACT, AllReduceCurve, profile_for, profiles_hash
from budsim.predictor import ARTIFACT_DIR, Predictor
from budsim.roofline import ServingPoint, physics


def test_gemm_fit_recovers_the_efficiencies_that_generated_the_table():
    peak, bandwidth = 989e12, 3.35e12
    rows = []
    for m in (1, 8, 64, 512, 4096, 16384):
        for n, k in ((4096, 4096), (14336, 4096), (4096, 14336), (1024, 8192)):
            flops, moved = 2.0 * m * n * k, (m * k + k * n) * 2.0 + m * n * 2.0
            seconds = max(flops / (peak * 0.7), moved / (bandwidth * 0.8)) + 6e-6
            rows.append({"gemm_dtype": "bfloat16", "m": m, "n": n, "k": k, "latency": seconds * 1000})
            rows.append({"gemm_dtype": "bfloat16", "m": m, "n": n, "k": k, "latency": seconds * 1300})  # slower kernel
    compute, memory, floor, error = fit_gemm(rows, peak, bandwidth, "bfloat16")
    assert compute == pytest.approx(0.7, rel=0.03)
    assert memory == pytest.approx(0.8, rel=0.03)
    assert floor == pytest.approx(6e-6, rel=0.2)
    assert error < 1.0  # the fastest kernel per shape is what a runtime picks


def test_decode_attention_fit_reads_the_kv_cache_at_the_fitted_bandwidth():
    bandwidth = 4.8e12
    rows = [
        {"batch_size": b, "isl": 1, "step": ctx, "num_key_value_heads": 8, "head_dim": 128, "kv_cache_dtype": "fp8",
         "latency": (b * (ctx + 1) * 8 * 128 * 2.0 / (bandwidth * 0.6) + 7e-6) * 1000}
        for b in (1, 4, 16, 64) for ctx in (128, 1024, 8192)
    ]  # fmt: skip
    efficiency, floor, error = fit_decode_attention(rows, bandwidth)
    assert efficiency == pytest.approx(0.6, rel=0.03) and floor == pytest.approx(7e-6, rel=0.2) and error < 1.0


def test_allreduce_curve_takes_the_faster_implementation_and_interpolates():
    custom = [
        {"num_gpus": 8, "message_size": s, "latency": t, "backend": "vllm_graph", "allreduce_dtype": "bfloat16"}
        for s, t in ((1024, 0.005), (1 << 20, 0.020), (1 << 24, 0.300))
    ]
    nccl = [
        {"op_name": "all_reduce", "nccl_dtype": "half", "num_gpus": 8, "message_size": s, "latency": t}
        for s, t in ((1024, 0.016), (1 << 20, 0.038), (1 << 24, 0.120))
    ]
    curve = allreduce_curves(custom, nccl)[8]  # the tables count bf16 elements: the curve is in bytes
    assert curve.sizes == [2048, 2 << 20, 2 << 24]
    assert curve.at(2048) == pytest.approx(5e-6)  # custom wins small messages
    assert curve.at(2 << 24) == pytest.approx(120e-6)  # NCCL wins big ones
    assert 5e-6 < curve.at(1 << 16) < 20e-6
    assert curve.at(2 << 25) == pytest.approx(240e-6)  # beyond the table: at the largest message's bandwidth


def test_monotone_curve_never_finishes_a_larger_message_sooner():
    curve = allreduce_curves(
        [],
        [
            {"op_name": "all_reduce", "nccl_dtype": "half", "num_gpus": 2, "message_size": s, "latency": t}
            for s, t in ((1024, 0.010), (2048, 0.008), (4096, 0.012))
        ],
    )[2]
    assert curve.seconds == sorted(curve.seconds)
    assert isinstance(curve, AllReduceCurve)


def test_measured_gpus_have_their_own_profile_and_others_the_default():
    h100, b200 = profile_for(get_gpu("h100_sxm")), profile_for(get_gpu("b200_sxm"))
    assert h100.measured and not b200.measured
    assert set(h100.allreduce) == {2, 4, 8}
    # the unmeasured GPU's all-reduce comes from its own NVLink figure, so a faster link gives a faster reduce
    b200_gpu, h100_gpu = get_gpu("b200_sxm"), get_gpu("h100_sxm")
    assert b200.allreduce_s(8, 64 << 20, b200_gpu.interconnect_bandwidth) < b200.allreduce_s(
        8, 64 << 20, h100_gpu.interconnect_bandwidth
    )
    for value in (h100.memory_efficiency, h100.gemm("bf16"), h100.gemm("fp8"), h100.decode_attention_efficiency):
        assert 0.2 < value <= 1.0


def test_roofline_uses_the_profile_of_the_gpu(llama70b):
    def step(gpu_name):
        point = ServingPoint(
            model=llama70b, gpu=get_gpu(gpu_name), backend="vllm", precision="bf16", tp=8, pp=1, dp=1, moe_tp=8,
            moe_ep=1, batch_per_rank=32, isl=1024, osl=256,
        )  # fmt: skip
        return physics(point).decode_step_s

    # H200 reads HBM faster than H100, so the memory-bound decode step is shorter
    assert step("h200_sxm") < step("h100_sxm")


def test_committed_predictor_was_trained_on_the_committed_kernel_profiles():
    meta = json.loads((ARTIFACT_DIR / "predictor.meta.json").read_text())
    assert meta["kernel_profiles"]["hash"] == profiles_hash(), "rerun `python -m budsim.train`"
    assert json.loads(ARTIFACT.read_text())["format"] == "budsim-kernels/1"


def test_predictor_refuses_an_artifact_trained_on_other_kernel_profiles(tmp_path):
    for name in ("predictor.json", "predictor.meta.json"):
        shutil.copy(ARTIFACT_DIR / name, tmp_path / name)
    meta = json.loads((tmp_path / "predictor.meta.json").read_text())
    meta["kernel_profiles"]["hash"] = "sha256:" + "0" * 64
    (tmp_path / "predictor.meta.json").write_text(json.dumps(meta))
    with pytest.raises(RuntimeError, match="kernel profiles"):
        Predictor(tmp_path)


def _sample(point, backend, ttft, tpot):
    return Sample(point, ttft, tpot, ("m", "h100_sxm", backend), "")


def test_runtime_transfer_ceiling_is_zero_for_a_constant_ratio_and_grows_when_it_varies(llama70b):
    gpu = get_gpu("h100_sxm")
    points = [
        ServingPoint(model=llama70b, gpu=gpu, backend="vllm", precision="fp8", tp=4, pp=1, dp=1, moe_tp=4, moe_ep=1,
                     batch_per_rank=c, isl=1024, osl=256)
        for c in (1, 4, 16, 64)
    ]  # fmt: skip
    steady = [_sample(p, "vllm", 100.0 * i, 10.0 * i) for i, p in enumerate(points, 1)]
    steady += [_sample(p, "trtllm", 50.0 * i, 8.0 * i) for i, p in enumerate(points, 1)]
    (row,) = runtime_transfer_ceiling(steady)
    assert row["configs"] == 4 and row["tpot_mape"] == pytest.approx(0.0) and row["ttft_mape"] == pytest.approx(0.0)

    varying = [_sample(p, "vllm", 100.0, 10.0) for p in points]
    varying += [_sample(p, "trtllm", 100.0, r) for p, r in zip(points, (5.0, 10.0, 10.0, 20.0))]
    (row,) = runtime_transfer_ceiling(varying)
    assert row["tpot_mape"] == pytest.approx(np.mean([1.0, 0.0, 0.0, 0.5]) * 100)
