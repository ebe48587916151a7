"""`bud sim`: the performance model and optimizer from the command line.

bud sim predict --csv runs.csv --out predicted.csv [--calibration measured.csv]
bud sim recommend --model meta-llama/Llama-3.1-70B-Instruct --gpu h100_sxm --gpus 8 --max-ttft-ms 500 \
    [--calibration measured.csv] [--confidence high]
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from cli.app import command_group

if TYPE_CHECKING:  # loaded inside the commands: numpy, scipy and the predictor take seconds to import
    from budsim.calibration import Calibration
    from budsim.schemas import OptimizationResult
    from core.model_facts import ModelArchitecture

app = command_group("Predict LLM serving performance and recommend deployment configs.")


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)

PREDICTED_COLUMNS = [
    "predicted_ttft_ms",
    "predicted_tpot_ms",
    "ttft_p10_ms",
    "ttft_p90_ms",
    "tpot_p10_ms",
    "tpot_p90_ms",
    "calibrated",
    "predict_error",
]
# what point_from_row's error fields are called in the CSV
_ROW_COLUMNS = {"model": "model_path", "gpu_type": "system", "isl/osl/batch_size": "isl, osl, batch_size"}
MEASURED_COLUMNS = ("silicon_ttft_ms", "silicon_tpot_ms")


def _fail(message: str) -> None:
    _console(stderr=True).print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=2)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _group_key(row: dict[str, str], point) -> tuple[str, str, str, str]:
    return ((row.get("model_path") or "").strip().lower(), point.gpu.name, point.backend, point.precision)


def _calibrations(path: Path, quiet: bool = False) -> dict[tuple[str, str, str, str], Calibration]:
    """One calibration per (model, GPU, runtime, precision) measured in `path`; exits 2 naming the first bad row.
    Each is reported on stdout (on stderr when `quiet`: stdout is JSON)."""
    from budsim.calibration import CalibrationGroup, Measurement, calibrate
    from budsim.dataset import point_from_row
    from budsim.errors import InvalidRequest
    from budsim.predictor import default_predictor

    console = _console(stderr=quiet)
    columns, rows = _read_csv(path)
    missing = [c for c in MEASURED_COLUMNS if c not in columns]
    if missing:
        _fail(f"{path}: no column {', '.join(missing)} (the measured TTFT and TPOT of each row)")
    if not rows:
        _fail(f"{path}: no measured rows")
    grouped: dict[tuple[str, str, str, str], list[tuple[str, Measurement]]] = {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{path} line {number}"
        try:
            point = point_from_row(row)
        except InvalidRequest as error:
            _fail(f"{where}, column {_ROW_COLUMNS.get(error.field, error.field)}: {error.message}")
            raise
        values = {}
        for column in MEASURED_COLUMNS:
            raw = (row.get(column) or "").strip()
            try:
                values[column] = float(raw)
            except ValueError:
                values[column] = math.nan
            if not (math.isfinite(values[column]) and values[column] > 0):
                _fail(f"{where}, column {column}: {raw!r} is not a positive number of milliseconds")
        measurement = Measurement(point, values["silicon_ttft_ms"], values["silicon_tpot_ms"], row.get("id") or "")
        grouped.setdefault(_group_key(row, point), []).append((row.get("model_path", "").strip(), measurement))
    calibrations = {}
    for key, members in sorted(grouped.items()):
        group = CalibrationGroup(model=members[0][0], gpu=key[1], runtime=key[2], precision=key[3])
        calibration = calibrate(group, [m for _, m in members], default_predictor())
        calibrations[key] = calibration
        colour = "green" if calibration.consistent else "yellow"
        console.print(
            f"[{colour}]calibrated[/{colour}] {group.label()} on {calibration.n} row(s): TPOT x"
            f"{calibration.tpot.batch_scale:.2f} per-sequence / x{calibration.tpot.weights_scale:.2f} weights, "
            f"TTFT x{calibration.ttft.prefill_scale:.2f} prefill"
            + ("" if calibration.consistent else f"; {calibration.message}")
        )
    return calibrations


@app.command()
def predict(
    csv_in: Path = typer.Option(
        ..., "--csv", exists=True, dir_okay=False, help="rows with silicon_sample.csv's columns"
    ),
    out: Path = typer.Option(..., "--out", help="where to write the rows plus predictions and their P10-P90"),
    calibration_csv: Optional[Path] = typer.Option(
        None,
        "--calibration",
        exists=True,
        dir_okay=False,
        help="measured rows (silicon_sample.csv's columns incl. silicon_ttft_ms, silicon_tpot_ms): each model / GPU "
        "/ runtime / precision present is calibrated on them before its rows are predicted",
    ),
) -> None:
    """Predict TTFT and TPOT, with P10-P90 intervals, for every agg-mode row of a CSV shaped like aiconfigurator's
    silicon_sample.csv; optionally calibrated on measured rows first."""
    from budsim.dataset import point_from_row
    from budsim.errors import InvalidRequest
    from budsim.predictor import default_predictor

    console = _console()
    calibrations = _calibrations(calibration_csv) if calibration_csv is not None else {}
    columns, rows = _read_csv(csv_in)
    points, keys, errors = {}, {}, {}
    for index, row in enumerate(rows):
        try:
            points[index] = point_from_row(row)
            keys[index] = _group_key(row, points[index])
        except InvalidRequest as error:
            errors[index] = str(error)
    by_calibration: dict[tuple | None, list[int]] = {}
    for index in points:
        by_calibration.setdefault(keys[index] if keys[index] in calibrations else None, []).append(index)
    predicted: dict[int, dict[str, float]] = {}
    predictor = default_predictor()
    for key, indices in by_calibration.items():
        result = predictor.predict_with_intervals([points[i] for i in indices], calibrations.get(key))
        for position, index in enumerate(indices):
            predicted[index] = {name: float(values[position]) for name, values in result.items()}
    out_columns = columns + [c for c in PREDICTED_COLUMNS if c not in columns]
    errors_ttft, errors_tpot = [], []
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=out_columns)
        writer.writeheader()
        for index, row in enumerate(rows):
            row = dict(row)
            if index in predicted:
                p = predicted[index]
                row["predicted_ttft_ms"], row["predicted_tpot_ms"] = f"{p['ttft']:.3f}", f"{p['tpot']:.3f}"
                for name in ("ttft_p10", "ttft_p90", "tpot_p10", "tpot_p90"):
                    row[f"{name}_ms"] = f"{p[name]:.3f}"
                row["calibrated"] = "yes" if keys[index] in calibrations else "no"
                row["predict_error"] = ""
                errors_ttft += _ape(row.get("silicon_ttft_ms"), p["ttft"])
                errors_tpot += _ape(row.get("silicon_tpot_ms"), p["tpot"])
            else:
                for column in PREDICTED_COLUMNS[:-1]:
                    row[column] = ""
                row["predict_error"] = errors[index]
            writer.writerow(row)
    console.print(f"predicted {len(predicted)} of {len(rows)} rows -> {out}")
    if errors:
        reasons: dict[str, int] = {}
        for message in errors.values():
            reasons[message] = reasons.get(message, 0) + 1
        for message, count in sorted(reasons.items(), key=lambda item: -item[1])[:5]:
            console.print(f"  skipped {count}: {message}")
    if errors_tpot:
        console.print(
            f"against the measured columns: TPOT MAPE {sum(errors_tpot) / len(errors_tpot):.1f} %, "
            f"TTFT MAPE {sum(errors_ttft) / len(errors_ttft):.1f} % ({len(errors_tpot)} rows; rows the "
            "predictor was trained on score better than unseen ones, see budsim/artifacts/accuracy.md)"
        )


def _ape(measured: str | None, predicted: float) -> list[float]:
    try:
        value = float(measured or "nan")
    except ValueError:
        return []
    return [abs(predicted - value) / value * 100] if math.isfinite(value) and value > 0 else []


def _load_model(model: str) -> ModelArchitecture:
    from budsim.catalog import get_model
    from budsim.errors import InvalidRequest
    from core.model_facts import ConfigError, architecture_from_config, load_config_json

    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" and path.exists():
        try:
            return architecture_from_config(load_config_json(path.read_bytes()))
        except ConfigError as error:
            raise InvalidRequest("model", f"{path}: {error}") from None
    return get_model(model)


@app.command()
def recommend(
    model: str = typer.Option(..., "--model", help="Hugging Face id from the catalog, or a path to a config.json"),
    gpu: str = typer.Option(..., "--gpu", help="GPU type, e.g. h100_sxm or nvidia-h100-80gb"),
    gpus: int = typer.Option(..., "--gpus", help="free GPUs of that type"),
    runtime: str = typer.Option("vllm", "--runtime", help="vllm | sglang | tensorrt-llm"),
    method: str = typer.Option("REGRESSOR", "--method", help="REGRESSOR, HEURISTIC or MANUAL (any case)"),
    input_tokens: int = typer.Option(1024, "--input-tokens"),
    output_tokens: int = typer.Option(256, "--output-tokens"),
    concurrency: int = typer.Option(16, "--concurrency", help="concurrent requests across all replicas"),
    max_ttft_ms: Optional[float] = typer.Option(None, "--max-ttft-ms"),
    max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms", help="end-to-end latency per request"),
    min_throughput: Optional[float] = typer.Option(None, "--min-throughput", help="output tokens/s in total"),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="USD per hour"),
    confidence: str = typer.Option(
        "expected", "--confidence",
        help="expected: judge the targets on the predicted values; high: on the pessimistic side (P90) of their "
        "interval",
    ),
    calibration_csv: Optional[Path] = typer.Option(
        None,
        "--calibration",
        exists=True,
        dir_okay=False,
        help="measured rows (silicon_sample.csv's columns incl. silicon_ttft_ms, silicon_tpot_ms); the rows of this "
        "model / GPU / runtime / precision calibrate every prediction of the search",
    ),
    price: Optional[float] = typer.Option(None, "--price", help="USD per GPU-hour (default: the catalog's)"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print the full result as JSON"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="draw the Pareto front to this PNG"),
) -> None:
    """Search TP/PP/batching/replicas for the cheapest config meeting the targets; show the Pareto front."""
    from budsim.errors import InvalidRequest
    from budsim.schemas import Method, OptimizationRequest, Targets, Workload
    from budsim.search import optimize

    methods = {m.value: m for m in Method}
    if method.upper() not in methods:
        _fail(f"--method is one of {', '.join(methods)}")
    if confidence not in ("expected", "high"):
        _fail(f"--confidence is expected or high, not {confidence!r}")
    try:
        architecture = _load_model(model)
        group_calibration = None
        if calibration_csv is not None:
            calibrations = _calibrations(calibration_csv, quiet=as_json)
            group_calibration = _calibration_for(calibrations, calibration_csv, model, gpu, runtime, architecture)
        request = OptimizationRequest(
            model=architecture,
            gpu_type=gpu,
            available_gpus=gpus,
            runtime=runtime,
            method=methods[method.upper()],
            targets=Targets(
                max_ttft_ms=max_ttft_ms,
                max_latency_ms=max_latency_ms,
                min_throughput_tps=min_throughput,
                max_cost_per_hour=max_cost,
                confidence=confidence,
            ),
            workload=Workload(input_tokens=input_tokens, output_tokens=output_tokens, concurrency=concurrency),
            price_per_hour=price,
            seed=seed,
            group_calibration=group_calibration,
        )
        result = optimize(request)
    except InvalidRequest as error:
        _fail(str(error))
        return
    if plot is not None:
        draw_pareto(result, plot)
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    print_result(result)
    if plot is not None:
        _console().print(f"Pareto plot written to {plot}")


def _calibration_for(calibrations: dict[tuple[str, str, str, str], Calibration], path: Path, model: str, gpu: str,
                     runtime: str, architecture: ModelArchitecture) -> Calibration:
    """The calibration of the searched model / GPU / runtime / precision among those fitted from `path`."""
    from budsim.catalog import get_gpu
    from budsim.roofline import normalize_backend

    key = (model.strip().lower(), get_gpu(gpu).name, normalize_backend(runtime), architecture.precision.name)
    if key not in calibrations:
        found = ", ".join(c.group.label() for c in calibrations.values())
        _fail(f"{path}: no measured rows of {' / '.join(key)} (it has {found})")
    return calibrations[key]


def _interval(value: float, low: float | None, high: float | None, digits: int) -> str:
    if low is None or high is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def print_result(result: OptimizationResult) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"Pareto front ({result.gpu_type}, {result.evaluated} configs evaluated)")
    for column in (
        "TP",
        "PP",
        "replicas",
        "max seqs",
        "batch tokens",
        "GPUs",
        "TTFT ms (P10-P90)",
        "TPOT ms (P10-P90)",
        "latency ms (P10-P90)",
        "tokens/s",
        "capacity tok/s",
        "$/h",
        "$/M tok",
    ):
        table.add_column(column, justify="right")
    chosen = result.recommendation.config if result.recommendation else None
    for candidate in result.pareto:
        c, p = candidate.config, candidate.prediction
        style = "bold green" if c == chosen else None
        table.add_row(
            str(c.tensor_parallel_size),
            str(c.pipeline_parallel_size),
            str(c.replicas),
            str(c.max_num_seqs),
            str(c.max_num_batched_tokens),
            str(c.total_gpus),
            _interval(p.ttft_ms, p.ttft_p10_ms, p.ttft_p90_ms, 0),
            _interval(p.tpot_ms, p.tpot_p10_ms, p.tpot_p90_ms, 1),
            _interval(p.e2e_latency_ms, p.e2e_latency_p10_ms, p.e2e_latency_p90_ms, 0),
            f"{p.output_throughput_tps:.0f}",
            f"{p.max_throughput_tps:.0f}",
            f"{p.cost_per_hour:.2f}",
            f"{p.cost_per_million_tokens:.2f}",
            style=style,
        )
    console.print(table)
    rec = result.recommendation
    if rec is None:
        console.print(f"[red]{result.message}[/red]")
    else:
        c, p = rec.config, rec.prediction
        colour = "green" if rec.meets_targets else "yellow"
        console.print(
            f"[{colour}]recommendation:[/{colour}] TP {c.tensor_parallel_size} x PP {c.pipeline_parallel_size} x "
            f"{c.replicas} replica(s), max_num_seqs {c.max_num_seqs}, max_num_batched_tokens "
            f"{c.max_num_batched_tokens}, max_model_len {c.max_model_len} on {c.total_gpus} GPUs ({c.runtime})"
        )
        console.print(
            f"  predicted TTFT {_interval(p.ttft_ms, p.ttft_p10_ms, p.ttft_p90_ms, 0)} ms, "
            f"TPOT {_interval(p.tpot_ms, p.tpot_p10_ms, p.tpot_p90_ms, 1)} ms, "
            f"latency {_interval(p.e2e_latency_ms, p.e2e_latency_p10_ms, p.e2e_latency_p90_ms, 0)} ms (P10-P90), "
            f"{p.output_throughput_tps:.0f} tokens/s (capacity {p.max_throughput_tps:.0f}), "
            f"${p.cost_per_hour:.2f}/h, ${p.cost_per_million_tokens:.2f}/M tokens"
        )
        console.print(f"  {result.message}")
    if result.rejected:
        console.print(f"{len(result.rejected)} configs rejected, e.g.: {result.rejected[0].reasons[0]}")


def draw_pareto(result: OptimizationResult, path: Path) -> None:
    """Throughput against latency for the Pareto set, coloured by $/hour; the recommendation is circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    if result.pareto:
        latency = [c.prediction.e2e_latency_ms for c in result.pareto]
        throughput = [c.prediction.output_throughput_tps for c in result.pareto]
        cost = [c.prediction.cost_per_hour for c in result.pareto]
        points = axes.scatter(latency, throughput, c=cost, cmap="viridis")
        figure.colorbar(points, ax=axes, label="$/hour")
    if result.recommendation:
        p = result.recommendation.prediction
        axes.scatter(
            [p.e2e_latency_ms],
            [p.output_throughput_tps],
            s=250,
            facecolors="none",
            edgecolors="red",
            label="recommendation",
        )
        axes.legend(loc="best")
    axes.set_xlabel("end-to-end latency per request (ms)")
    axes.set_ylabel("output tokens/s")
    axes.set_title(f"Pareto front on {result.gpu_type}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    app()
