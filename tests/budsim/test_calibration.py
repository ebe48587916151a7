"""Calibrating the shipped predictor on a group's measurements, and its P10-P90 intervals.

The fixture holds one measured row per group, so groups with several measurements are built from a fixture row's
config varied in concurrency, lengths and TP, "measured" as a deployment whose kernels and runtime differ from the
model in physically meaningful ways (slower per-sequence work, a fixed step overhead, slower prefill, a queue).
"""

import csv
import math
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from budsim.calibration import (
    Calibration,
    CalibrationGroup,
    Measurement,
    TpotCoefficients,
    TtftCoefficients,
    apply,
    calibrate,
    decompose,
    group_of,
)
from budsim.catalog import get_gpu, get_model
from budsim.dataset import load_samples
from budsim.errors import InvalidRequest
from budsim.predictor import default_predictor, predict
from budsim.schemas import ServingConfig, Workload
from cli.sim import app

MODEL = "meta-llama/Llama-3.1-70B"
H100, H200 = get_gpu("h100_sxm").name, get_gpu("h200_sxm").name
TRUTH = Calibration(
    group=CalibrationGroup(model=MODEL, gpu=H100, runtime="vllm", precision="fp8"),
    measurements=["truth"],
    n=1,
    tpot=TpotCoefficients(weights_scale=1.15, batch_scale=1.8, comm_scale=1.3, step_overhead_ms=1.5),
    ttft=TtftCoefficients(prefill_scale=1.6, step_scale=1.2, queue_share=0.15),
    tpot_residual_sigma=0.0,
    ttft_residual_sigma=0.0,
    tpot_interval_sigma=0.0,
    ttft_interval_sigma=0.0,
)


@pytest.fixture(scope="module")
def base_point(silicon_fixture):
    samples, _ = load_samples(silicon_fixture)
    return next(s for s in samples if s.group == (MODEL, "h100_sxm", "vllm")).point


def _variants(point, count):
    """`count` distinct configs of the point's group: concurrency, lengths and TP varied."""
    combos = [
        (batch, isl, osl, tp)
        for tp in (4, 8, 2)
        for batch in (1, 8, 32, 96)
        for isl, osl in ((1024, 1024), (4096, 512), (512, 2048))
    ]
    return [replace(point, batch_per_rank=b, isl=i, osl=o, tp=t, moe_tp=t) for b, i, o, t in combos[:count]]


def _measure(points, noise=0.03, seed=1):
    """What the differing deployment measures on `points` (TRUTH applied to the physics, a few % noise)."""
    terms = decompose(default_predictor().fitted, points)
    ttft, tpot = apply(terms, TRUTH)
    rng = np.random.default_rng(seed)
    ttft = ttft * np.exp(rng.normal(0, noise, len(points)))
    tpot = tpot * np.exp(rng.normal(0, noise, len(points)))
    return [Measurement(p, float(a), float(b), f"m{i}") for i, (p, a, b) in enumerate(zip(points, ttft, tpot))]


def _group(point):
    return group_of(point, MODEL)


def _mape(predicted, measured):
    return float(np.mean(np.abs(predicted - measured) / measured) * 100)


def _log_moves(cal: Calibration) -> float:
    t, f = cal.tpot, cal.ttft
    scales = [t.weights_scale, t.batch_scale, t.comm_scale, t.interference_scale, f.prefill_scale, f.step_scale]
    return sum(abs(math.log(s)) for s in scales)


def test_same_measurements_give_the_same_coefficients(base_point):
    rows = _measure(_variants(base_point, 5))
    first, second = calibrate(_group(base_point), rows), calibrate(_group(base_point), list(rows))
    assert first.model_dump() == second.model_dump()
    assert first.measurements == [f"m{i}" for i in range(5)] and first.n == 5
    assert first.group == CalibrationGroup(model=MODEL, gpu=H100, runtime="vllm", precision="fp8")


def test_one_measurement_moves_the_model_less_than_ten(base_point):
    rows = _measure(_variants(base_point, 10))
    one, ten = calibrate(_group(base_point), rows[:1]), calibrate(_group(base_point), rows)
    assert 0 < _log_moves(one) < _log_moves(ten)
    # ten measurements find what differs: everything slower, per-sequence work the most; prefill slower
    assert ten.tpot.batch_scale > ten.tpot.weights_scale > 1.1
    assert ten.ttft.prefill_scale > 1.2


def test_calibrating_on_three_rows_lowers_the_error_on_the_group_s_other_rows(base_point):
    rows = _measure(_variants(base_point, 20))
    chosen, others = [rows[0], rows[7], rows[14]], [r for i, r in enumerate(rows) if i not in (0, 7, 14)]
    calibration = calibrate(_group(base_point), chosen)
    assert calibration.consistent, calibration.message
    terms = decompose(default_predictor().fitted, [r.point for r in others])
    measured_ttft = np.array([r.ttft_ms for r in others])
    measured_tpot = np.array([r.tpot_ms for r in others])
    cold_ttft, cold_tpot = apply(terms)
    warm_ttft, warm_tpot = apply(terms, calibration)
    assert _mape(warm_tpot, measured_tpot) < 0.6 * _mape(cold_tpot, measured_tpot)
    assert _mape(warm_ttft, measured_ttft) < 0.6 * _mape(cold_ttft, measured_ttft)
    assert _mape(warm_tpot, measured_tpot) < 12


def test_measurements_the_correction_cannot_explain_are_flagged(base_point):
    point = _variants(base_point, 1)[0]
    good = _measure([point], noise=0.0)[0]
    # the same config measured twice, the second three times slower: no coefficient explains both
    clash = Measurement(point, good.ttft_ms, good.tpot_ms * 3, "slow")
    flagged = calibrate(_group(base_point), [good, clash])
    assert not flagged.consistent and "TPOT" in flagged.message and "inconsistent" not in flagged.message.lower()
    assert flagged.tpot_residual_sigma > 0.25
    fine = calibrate(_group(base_point), _measure(_variants(base_point, 6)))
    assert fine.consistent and fine.message == "calibrated on 6 measurement(s)"
    # a flagged calibration's intervals carry the whole spread: wider than a consistent one's
    assert flagged.tpot_interval_sigma > 2 * fine.tpot_interval_sigma


def test_rows_of_another_group_are_refused(base_point):
    rows = _measure(_variants(base_point, 2))
    other = CalibrationGroup(model=MODEL, gpu=H200, runtime="vllm", precision="fp8")
    with pytest.raises(InvalidRequest, match=f"not {MODEL} / {H200}"):
        calibrate(other, rows)
    with pytest.raises(InvalidRequest, match="no measurements"):
        calibrate(_group(base_point), [])


def test_intervals_are_wide_cold_and_narrow_with_calibration(base_point):
    model = get_model(MODEL)
    config = ServingConfig(tensor_parallel_size=4, max_num_seqs=256, max_model_len=4096)
    workload = Workload(input_tokens=1024, output_tokens=1024, concurrency=16)
    points = _variants(base_point, 10)
    rows = _measure(points)
    one, ten = calibrate(_group(base_point), rows[:1]), calibrate(_group(base_point), rows)
    cold = predict(model, "h100_sxm", config, workload)
    assert cold.ttft_p10_ms < cold.ttft_ms < cold.ttft_p90_ms and cold.tpot_p10_ms < cold.tpot_ms < cold.tpot_p90_ms
    assert not cold.calibrated and cold.calibration_warning is None

    def width(p, target):
        return math.log(getattr(p, f"{target}_p90_ms") / getattr(p, f"{target}_p10_ms"))

    # the model's own config in the fixture point's precision (fp8): predict with the group's calibration
    fp8 = model.model_copy(update={"dtype": "fp8"})
    assert fp8.precision.name == base_point.precision == "fp8"
    warm_one = predict(fp8, "h100_sxm", config, workload, calibration=one)
    warm_ten = predict(fp8, "h100_sxm", config, workload, calibration=ten)
    assert warm_ten.calibrated and warm_ten.calibration_warning is None
    assert width(warm_ten, "tpot") < width(warm_one, "tpot") < width(cold, "tpot")
    # TTFT: the ten rows' fit leaves a real residual spread, which its interval keeps; never wider than cold
    assert max(width(warm_ten, "ttft"), width(warm_one, "ttft")) <= width(cold, "ttft") + 1e-9
    # the calibrated prediction follows the slower deployment
    assert warm_ten.tpot_ms > 1.2 * predict(fp8, "h100_sxm", config, workload).tpot_ms
    with pytest.raises(InvalidRequest, match="calibrated for"):
        predict(fp8, "h200_sxm", config, workload, calibration=ten)


def _write(path, columns, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def test_cli_predict_with_calibration_round_trip(tmp_path, silicon_fixture):
    with open(silicon_fixture, newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames), [r for r in reader if r["mode"] == "agg"]
    measured, inputs = tmp_path / "measured.csv", tmp_path / "in.csv"
    _write(measured, columns, rows)
    _write(inputs, columns, rows)
    runner = CliRunner()
    cold_out, warm_out = tmp_path / "cold.csv", tmp_path / "warm.csv"
    cold = runner.invoke(app, ["predict", "--csv", str(inputs), "--out", str(cold_out)])
    warm = runner.invoke(
        app, ["predict", "--csv", str(inputs), "--out", str(warm_out), "--calibration", str(measured)]
    )
    assert cold.exit_code == 0 and warm.exit_code == 0, warm.output
    assert "calibrated" in warm.output
    with open(cold_out, newline="") as handle:
        cold_rows = list(csv.DictReader(handle))
    with open(warm_out, newline="") as handle:
        warm_rows = list(csv.DictReader(handle))
    assert len(warm_rows) == len(rows)
    for name in ("predicted_ttft_ms", "predicted_tpot_ms", "ttft_p10_ms", "ttft_p90_ms", "tpot_p10_ms", "tpot_p90_ms"):
        assert all(float(r[name]) > 0 for r in warm_rows), name
    assert {r["calibrated"] for r in warm_rows} == {"yes"} and {r["calibrated"] for r in cold_rows} == {"no"}
    for row in warm_rows:
        assert float(row["tpot_p10_ms"]) < float(row["predicted_tpot_ms"]) < float(row["tpot_p90_ms"])

    def log_errors(produced, target):
        return np.abs(
            np.log([float(r[f"predicted_{target}_ms"]) / float(r[f"silicon_{target}_ms"]) for r in produced])
        )

    for target in ("ttft", "tpot"):
        # each group calibrated on its own measured row moves towards what was measured
        assert np.mean(log_errors(warm_rows, target)) < np.mean(log_errors(cold_rows, target)), target
        assert np.all(log_errors(warm_rows, target) <= log_errors(cold_rows, target) + 1e-9), target


def test_cli_calibration_bad_rows_exit_2_naming_row_and_column(tmp_path, silicon_fixture):
    with open(silicon_fixture, newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames), [r for r in reader if r["mode"] == "agg"][:3]
    inputs = tmp_path / "in.csv"
    _write(inputs, columns, rows)
    runner = CliRunner()
    cases = [
        (dict(rows[1], silicon_tpot_ms="fast"), "line 3, column silicon_tpot_ms"),
        (dict(rows[1], silicon_ttft_ms="-4"), "line 3, column silicon_ttft_ms"),
        (dict(rows[1], model_path="someone/unknown"), "line 3, column model_path"),
        (dict(rows[1], system="tpu-v5"), "line 3, column system"),
    ]
    for bad, expected in cases:
        measured = tmp_path / "measured.csv"
        _write(measured, columns, [rows[0], bad, rows[2]])
        result = runner.invoke(
            app, ["predict", "--csv", str(inputs), "--out", str(tmp_path / "o.csv"), "--calibration", str(measured)]
        )
        assert result.exit_code == 2, result.output
        assert expected in " ".join(result.output.split()), result.output
    no_measure = tmp_path / "plain.csv"
    _write(no_measure, [c for c in columns if not c.startswith("silicon_")],
           [{k: v for k, v in r.items() if not k.startswith("silicon_")} for r in rows])
    result = runner.invoke(
        app, ["predict", "--csv", str(inputs), "--out", str(tmp_path / "o.csv"), "--calibration", str(no_measure)]
    )
    assert result.exit_code == 2 and "silicon_ttft_ms" in result.output
