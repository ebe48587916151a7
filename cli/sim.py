"""`bud sim`: the performance model and optimizer from the command line.

bud sim predict --csv runs.csv --out predicted.csv
bud sim recommend --model meta-llama/Llama-3.1-70B-Instruct --gpu h100_sxm --gpus 8 --max-ttft-ms 500
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from budsim.catalog import get_model
from budsim.dataset import point_from_row
from budsim.errors import InvalidRequest
from budsim.predictor import default_predictor
from budsim.schemas import Method, OptimizationRequest, OptimizationResult, Targets, Workload
from budsim.search import optimize
from core.model_facts import ConfigError, ModelArchitecture, architecture_from_config, load_config_json

app = typer.Typer(help="Predict LLM serving performance and recommend deployment configs.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

PREDICTED_COLUMNS = ["predicted_ttft_ms", "predicted_tpot_ms", "predict_error"]


def _fail(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=2)


@app.command()
def predict(
    csv_in: Path = typer.Option(
        ..., "--csv", exists=True, dir_okay=False, help="rows with silicon_sample.csv's columns"
    ),
    out: Path = typer.Option(..., "--out", help="where to write the rows plus predicted_ttft_ms / predicted_tpot_ms"),
) -> None:
    """Predict TTFT and TPOT for every agg-mode row of a CSV shaped like aiconfigurator's silicon_sample.csv."""
    with open(csv_in, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    points, errors = {}, {}
    for index, row in enumerate(rows):
        try:
            points[index] = point_from_row(row)
        except InvalidRequest as error:
            errors[index] = str(error)
    ttft, tpot, _ = default_predictor().predict_points(list(points.values()))
    predicted = {index: (float(a), float(b)) for index, a, b in zip(points, ttft, tpot)}
    out_columns = columns + [c for c in PREDICTED_COLUMNS if c not in columns]
    errors_ttft, errors_tpot = [], []
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=out_columns)
        writer.writeheader()
        for index, row in enumerate(rows):
            row = dict(row)
            if index in predicted:
                row["predicted_ttft_ms"], row["predicted_tpot_ms"] = (
                    f"{predicted[index][0]:.3f}",
                    f"{predicted[index][1]:.3f}",
                )
                row["predict_error"] = ""
                errors_ttft += _ape(row.get("silicon_ttft_ms"), predicted[index][0])
                errors_tpot += _ape(row.get("silicon_tpot_ms"), predicted[index][1])
            else:
                row["predicted_ttft_ms"] = row["predicted_tpot_ms"] = ""
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
    method: Method = typer.Option(Method.REGRESSOR, "--method", case_sensitive=False),
    input_tokens: int = typer.Option(1024, "--input-tokens"),
    output_tokens: int = typer.Option(256, "--output-tokens"),
    concurrency: int = typer.Option(16, "--concurrency", help="concurrent requests across all replicas"),
    max_ttft_ms: Optional[float] = typer.Option(None, "--max-ttft-ms"),
    max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms", help="end-to-end latency per request"),
    min_throughput: Optional[float] = typer.Option(None, "--min-throughput", help="output tokens/s in total"),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="USD per hour"),
    price: Optional[float] = typer.Option(None, "--price", help="USD per GPU-hour (default: the catalog's)"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print the full result as JSON"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="draw the Pareto front to this PNG"),
) -> None:
    """Search TP/PP/batching/replicas for the cheapest config meeting the targets; show the Pareto front."""
    try:
        request = OptimizationRequest(
            model=_load_model(model),
            gpu_type=gpu,
            available_gpus=gpus,
            runtime=runtime,
            method=method,
            targets=Targets(
                max_ttft_ms=max_ttft_ms,
                max_latency_ms=max_latency_ms,
                min_throughput_tps=min_throughput,
                max_cost_per_hour=max_cost,
            ),
            workload=Workload(input_tokens=input_tokens, output_tokens=output_tokens, concurrency=concurrency),
            price_per_hour=price,
            seed=seed,
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
        console.print(f"Pareto plot written to {plot}")


def print_result(result: OptimizationResult) -> None:
    table = Table(title=f"Pareto front ({result.gpu_type}, {result.evaluated} configs evaluated)")
    for column in (
        "TP",
        "PP",
        "replicas",
        "max seqs",
        "batch tokens",
        "GPUs",
        "TTFT ms",
        "TPOT ms",
        "latency ms",
        "tokens/s",
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
            f"{p.ttft_ms:.0f}",
            f"{p.tpot_ms:.1f}",
            f"{p.e2e_latency_ms:.0f}",
            f"{p.output_throughput_tps:.0f}",
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
            f"  predicted TTFT {p.ttft_ms:.0f} ms, TPOT {p.tpot_ms:.1f} ms, latency {p.e2e_latency_ms:.0f} ms, "
            f"{p.output_throughput_tps:.0f} tokens/s, ${p.cost_per_hour:.2f}/h, ${p.cost_per_million_tokens:.2f}/M tokens"
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
