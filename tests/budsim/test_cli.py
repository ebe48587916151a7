import csv
import json
import statistics

from typer.testing import CliRunner

from cli.sim import app

runner = CliRunner()


def _sample_rows(path, count_agg=None, count_disagg=2):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames)
        rows = list(reader)
    agg = [r for r in rows if r["mode"] == "agg"][:count_agg]
    disagg = [r for r in rows if r["mode"] == "disagg"][:count_disagg]
    return columns, agg, disagg


def test_predict_csv_end_to_end(tmp_path, silicon_fixture):
    columns, agg, disagg = _sample_rows(silicon_fixture)
    unknown = dict(agg[0], id="mystery", model_path="someone/unknown-model")
    source = tmp_path / "in.csv"
    with open(source, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(agg + disagg + [unknown])
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["predict", "--csv", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as handle:
        produced = list(csv.DictReader(handle))
    assert len(produced) == len(agg) + len(disagg) + 1
    assert list(produced[0])[: len(columns)] == columns  # input columns kept, in order
    ratios = {"ttft": [], "tpot": []}
    for row in produced[: len(agg)]:
        assert row["predict_error"] == ""
        for target, values in ratios.items():
            values.append(float(row[f"predicted_{target}_ms"]) / float(row[f"silicon_{target}_ms"]))
    # trained on these rows (one from each measured group): close to what was measured, most within a factor of two
    for values in ratios.values():
        assert 0.8 < statistics.median(values) < 1.25, values
        assert sum(0.5 < ratio < 2 for ratio in values) >= 0.75 * len(values), values
    for row in produced[len(agg) : len(agg) + len(disagg)]:
        assert row["predicted_ttft_ms"] == "" and "only aggregated serving" in row["predict_error"]
    assert "unknown model 'someone/unknown-model'" in produced[-1]["predict_error"]


def test_predict_without_measured_columns(tmp_path, silicon_fixture):
    columns, agg, _ = _sample_rows(silicon_fixture, count_agg=3, count_disagg=0)
    kept = [c for c in columns if not c.startswith("silicon_")]
    source = tmp_path / "in.csv"
    with open(source, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=kept, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(agg)
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["predict", "--csv", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as handle:
        produced = list(csv.DictReader(handle))
    assert all(float(r["predicted_tpot_ms"]) > 0 for r in produced)


def test_recommend_prints_table_json_and_plot(tmp_path):
    plot = tmp_path / "pareto.png"
    result = runner.invoke(
        app,
        [
            "recommend",
            "--model",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--gpu",
            "h100_sxm",
            "--gpus",
            "4",
            "--max-ttft-ms",
            "500",
            "--plot",
            str(plot),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Pareto front" in result.output and "recommendation:" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    as_json = runner.invoke(
        app,
        [
            "recommend",
            "--model",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--gpu",
            "h100_sxm",
            "--gpus",
            "4",
            "--max-ttft-ms",
            "500",
            "--json",
        ],
    )
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.output)
    assert document["meets_targets"] is True and document["recommendation"]["prediction"]["ttft_ms"] <= 500


def test_recommend_from_a_config_json(tmp_path):
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = runner.invoke(app, ["recommend", "--model", str(path), "--gpu", "nvidia-l4", "--gpus", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["recommendation"]["config"]["tensor_parallel_size"] in (1, 2)


def test_recommend_bad_input_exits_2_with_the_reason():
    result = runner.invoke(app, ["recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "tpu-v5", "--gpus", "8"])
    assert result.exit_code == 2
    assert "unknown GPU 'tpu-v5'" in result.output
    negative = runner.invoke(
        app,
        ["recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "h100_sxm", "--gpus", "8", "--max-ttft-ms", "-3"],
    )
    assert negative.exit_code == 2 and "targets.max_ttft_ms" in negative.output


def _slow_rows(path, factor=2.5):
    """Three measured rows of the 8B on one H100 under vLLM, `factor` x the cold prediction of each."""
    from budsim.dataset import point_from_row
    from budsim.predictor import default_predictor

    rows = [dict(id=f"r{i}", backend="vllm", model_path="meta-llama/Llama-3.1-8B-Instruct", system="h100_sxm",
                 precision="bf16", mode="agg", isl="1024", osl="256", batch_size=str(c), tp_size="1", pp_size="1")
            for i, c in enumerate((1, 16, 64))]
    cold = default_predictor().predict_with_intervals([point_from_row(r) for r in rows])
    for i, row in enumerate(rows):
        row["silicon_ttft_ms"], row["silicon_tpot_ms"] = cold["ttft"][i] * factor, cold["tpot"][i] * factor
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_recommend_with_calibration_uses_and_reports_it(tmp_path):
    measured = _slow_rows(tmp_path / "measured.csv")
    base = ["recommend", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "h100_sxm", "--gpus", "8",
            "--method", "heuristic", "--max-latency-ms", "3000", "--json"]
    cold = json.loads(runner.invoke(app, base).stdout)
    result = runner.invoke(app, base + ["--calibration", str(measured)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # the calibration's report goes to stderr: stdout stays JSON
    assert cold["calibration"] is None
    assert document["calibration"]["measurements"] == ["r0", "r1", "r2"] and document["calibration"]["n"] == 3
    assert document["recommendation"]["prediction"]["calibrated"] is True
    assert "calibrated on 3 measurement(s)" in document["message"]
    assert document["recommendation"]["config"]["tensor_parallel_size"] * document["recommendation"]["config"][
        "replicas"] > cold["recommendation"]["config"]["tensor_parallel_size"] * cold["recommendation"]["config"][
        "replicas"]
    table = runner.invoke(app, base[:-1] + ["--calibration", str(measured), "--confidence", "high"])
    assert table.exit_code == 0, table.output
    text = " ".join(table.output.split())
    assert "P10-P90" in text and "calibrated on 3 measurement(s)" in text


def test_recommend_calibration_of_another_group_or_bad_confidence_exits_2(tmp_path):
    measured = _slow_rows(tmp_path / "measured.csv")
    other = runner.invoke(app, ["recommend", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "nvidia-l4",
                                "--gpus", "2", "--calibration", str(measured)])
    assert other.exit_code == 2 and "no measured rows of" in " ".join(other.output.split())
    bad = runner.invoke(app, ["recommend", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "h100_sxm",
                              "--gpus", "2", "--confidence", "certain"])
    assert bad.exit_code == 2 and "--confidence" in " ".join(bad.output.split())
