"""`bud endpoints list|create|show|config|deploy|scale|delete`: endpoints by name or id, each with `--json` (the
API's JSON as it answered). Exit codes: 0 done, 1 the API refused (its message printed), 2 a usage error, 3 a
followed deploy ended FAILED. Heavy packages load inside the commands, so `bud --help` stays fast."""

from __future__ import annotations

import time

import typer

from cli.tables import console as _console
from cli.tables import print_table

app = typer.Typer(help="Create, configure, deploy, scale and delete endpoints.", no_args_is_help=True)
SETTLED = {"RUNNING", "FAILED", "DELETED"}
POLL_S = 0.5
METHODS = ("REGRESSOR", "HEURISTIC", "MANUAL")
RUNTIMES = ("vllm", "sglang", "tensorrt-llm")

JsonOption = typer.Option(False, "--json", help="print the API's JSON answer instead of a table")
EndpointArg = typer.Argument(..., help="endpoint name or id")


def _colour(status: str) -> str:
    return {"RUNNING": "green", "FAILED": "red", "DELETED": "red", "DELETING": "yellow"}.get(status, "yellow")


def _fields(values: dict | None) -> str:
    """key=value for the fields that are set, or "-"."""
    shown = ", ".join(f"{key}={value}" for key, value in sorted((values or {}).items()) if value is not None)
    return shown or "-"


def print_endpoint(endpoint: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    table = Table(show_header=False, box=None)
    deployment = endpoint["deployment"]
    rows = [
        ("name", endpoint["name"]), ("id", endpoint["id"]),
        ("status", f"[{_colour(endpoint['status'])}]{endpoint['status']}[/]"),
        ("step", escape(endpoint.get("step") or "-")),
        ("runtime", deployment["runtime"]),
        ("replicas", f"{deployment['ready_replicas']}/{deployment['replicas']} ready"),
        ("config", escape(_fields(deployment.get("config")))),
        ("resources", escape(_fields(deployment.get("resources")))),
        ("optimization", f"{endpoint.get('optimization_method') or '-'} {endpoint.get('optimization_status') or ''}"),
        ("targets", escape(_fields(endpoint.get("performance_targets")))),
        ("inference URL", endpoint.get("inference_url") or "-"),
        ("workflow", endpoint.get("workflow_id") or "-"),
    ]
    if endpoint.get("error"):
        rows.append(("error", f"[red]{escape(str(endpoint['error']))}[/]"))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    console.print(table)


@app.command("list")
def list_endpoints(as_json: bool = JsonOption) -> None:
    """The project's endpoints."""
    from cli.api_client import api_client, call, print_json

    with api_client() as client:
        rows = call(client, "GET", "/api/endpoints").json()
    if as_json:
        print_json(rows)
        return
    print_table(("name", "status", "step", "replicas", "runtime", "id"),
                ((row["name"], f"[{_colour(row['status'])}]{row['status']}[/]", row.get("step") or "-",
                  f"{row['deployment']['ready_replicas']}/{row['deployment']['replicas']}",
                  row["deployment"]["runtime"], row["id"]) for row in rows))


@app.command()
def create(
    name: str = typer.Argument(..., help="endpoint name: also the model name clients send to the gateway"),
    model: str = typer.Option(..., "--model", help="model name or id"),
    version: str | None = typer.Option(None, "--version", help="the model's version, when its name has several"),
    cluster: str | None = typer.Option(None, "--cluster", help="cluster name or id (default: the local cluster)"),
    as_json: bool = JsonOption,
) -> None:
    """Create an endpoint for MODEL on a cluster (nothing runs until `bud endpoints deploy`)."""
    from cli import resolve
    from cli.api_client import api_client, call, print_json

    with api_client() as client:
        body = {"name": name, "project_id": resolve.project_id(client),
                "model_id": resolve.model_id(client, model, version), "cluster_id": resolve.cluster_id(client, cluster)}
        endpoint = call(client, "POST", "/api/endpoints", json=body).json()
    if as_json:
        print_json(endpoint)
        return
    _console().print(f"created endpoint {endpoint['name']} (id {endpoint['id']})")


@app.command()
def show(endpoint: str = EndpointArg, as_json: bool = JsonOption) -> None:
    """Status, step, deployment, inference URL and the failure reason of one endpoint."""
    from cli import resolve
    from cli.api_client import api_client, call, print_json

    with api_client() as client:
        row = call(client, "GET", f"/api/endpoints/{resolve.endpoint_id(client, endpoint)}").json()
    if as_json:
        print_json(row)
    else:
        print_endpoint(row)


def _drop_none(values: dict) -> dict:
    return {key: value for key, value in values.items() if value is not None}


@app.command()
def config(
    endpoint: str = EndpointArg,
    runtime: str = typer.Option("vllm", "--runtime", help="vllm, sglang or tensorrt-llm"),
    method: str | None = typer.Option(
        None, "--method", help="REGRESSOR, HEURISTIC or MANUAL (default: MANUAL when a manual field is given, "
                               "else REGRESSOR)"),
    max_latency_ms: float | None = typer.Option(None, "--max-latency-ms", help="target: end-to-end latency, ms"),
    max_ttft_ms: float | None = typer.Option(None, "--max-ttft-ms", help="target: time to first token, ms"),
    min_throughput_tps: float | None = typer.Option(None, "--min-throughput-tps",
                                                    help="target: output tokens/s over all replicas"),
    max_cost_per_hour: float | None = typer.Option(None, "--max-cost-per-hour", help="target: $ per hour"),
    input_tokens: int | None = typer.Option(None, "--input-tokens", help="workload: prompt tokens per request"),
    output_tokens: int | None = typer.Option(None, "--output-tokens", help="workload: output tokens per request"),
    concurrency: int | None = typer.Option(None, "--concurrency", help="workload: requests in flight"),
    tensor_parallel_size: int | None = typer.Option(None, "--tensor-parallel-size", help="manual"),
    pipeline_parallel_size: int | None = typer.Option(None, "--pipeline-parallel-size", help="manual"),
    max_model_len: int | None = typer.Option(None, "--max-model-len", help="manual"),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", help="manual"),
    gpu_memory_utilization: float | None = typer.Option(None, "--gpu-memory-utilization", help="manual"),
    max_num_batched_tokens: int | None = typer.Option(None, "--max-num-batched-tokens", help="manual"),
    replicas: int | None = typer.Option(None, "--replicas", help="replica count"),
    gpu_type: str | None = typer.Option(None, "--gpu-type", help="per replica: one of the cluster's GPU types"),
    gpu_count: int | None = typer.Option(None, "--gpu-count", help="per replica (with --gpu-type)"),
    wait: bool = typer.Option(False, "--wait", help="wait until the optimizer has chosen (or checked) the config"),
    timeout_s: float = typer.Option(600, "--timeout", help="seconds to wait with --wait"),
    as_json: bool = JsonOption,
) -> None:
    """Configure automatically (the optimizer chooses for the targets) or by hand (manual fields)."""
    from cli import resolve
    from cli.api_client import EXIT_FAILED, EXIT_USAGE, api_client, call, print_json, refuse

    manual = _drop_none(dict(tensor_parallel_size=tensor_parallel_size, pipeline_parallel_size=pipeline_parallel_size,
                             max_model_len=max_model_len, max_num_seqs=max_num_seqs,
                             gpu_memory_utilization=gpu_memory_utilization,
                             max_num_batched_tokens=max_num_batched_tokens))
    chosen = (method or ("MANUAL" if manual else "REGRESSOR")).upper()
    if chosen not in METHODS:
        refuse(f"--method is one of {', '.join(METHODS)}", EXIT_USAGE)
    if runtime not in RUNTIMES:
        refuse(f"--runtime is one of {', '.join(RUNTIMES)}", EXIT_USAGE)
    if manual and chosen != "MANUAL":
        refuse(f"manual fields ({', '.join(sorted(manual))}) go with --method MANUAL", EXIT_USAGE)
    if (gpu_type is None) != (gpu_count is None):
        refuse("--gpu-type and --gpu-count go together", EXIT_USAGE)
    body: dict = {"runtime": runtime, "optimization_method": chosen,
                  "performance_targets": _drop_none(dict(max_latency_ms=max_latency_ms, max_ttft_ms=max_ttft_ms,
                                                         min_throughput_tps=min_throughput_tps,
                                                         max_cost_per_hour=max_cost_per_hour))}
    workload = _drop_none(dict(input_tokens=input_tokens, output_tokens=output_tokens, concurrency=concurrency))
    if workload:
        body["workload"] = workload
    if chosen == "MANUAL":
        body["config"] = manual
    if replicas is not None:
        body["replicas"] = replicas
    if gpu_type is not None:
        body["resources"] = {"gpu_type": gpu_type, "gpu_count": gpu_count}
    with api_client() as client:
        endpoint_id = resolve.endpoint_id(client, endpoint)
        row = call(client, "PUT", f"/api/endpoints/{endpoint_id}/config", json=body).json()
        if wait:
            deadline = time.monotonic() + timeout_s
            with _console().status("the optimizer is choosing...") if not as_json else _nothing():
                while row.get("optimization_status") == "RUNNING" and time.monotonic() < deadline:
                    time.sleep(POLL_S)
                    row = call(client, "GET", f"/api/endpoints/{endpoint_id}").json()
    if as_json:
        print_json(row)
    else:
        console = _console()
        console.print(f"configured {row['name']}: {chosen}, optimization {row.get('optimization_status') or '-'}")
        if row["deployment"].get("config"):
            console.print(f"  config {_fields(row['deployment']['config'])}", markup=False, soft_wrap=True)
        if row.get("optimization_workflow_id"):
            from cli.api_client import temporal_ui_url

            console.print(f"  workflow {temporal_ui_url(row['optimization_workflow_id'])}", markup=False, soft_wrap=True)
    if wait and row.get("optimization_status") == "FAILED":
        raise typer.Exit(EXIT_FAILED)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def follow(client, endpoint_id: str, timeout_s: float, quiet: bool) -> dict:
    """Poll the endpoint every POLL_S seconds, showing its status and step, until it settles (or TIMEOUT_S)."""
    from cli.api_client import call

    deadline = time.monotonic() + timeout_s
    console = _console()
    with _nothing() if quiet else console.status("deploying...") as status:
        shown = None
        while True:
            row = call(client, "GET", f"/api/endpoints/{endpoint_id}").json()
            line = f"{row['status']}: {row.get('step') or '...'}"
            if line != shown and not quiet:
                status.update(line)
                console.print(f"  {line}", markup=False, soft_wrap=True)
                shown = line
            if row["status"] in SETTLED or time.monotonic() > deadline:
                return row
            time.sleep(POLL_S)


@app.command()
def deploy(
    endpoint: str = EndpointArg,
    keep_on_failure: bool = typer.Option(False, "--keep-on-failure", help="leave what was created when a step fails"),
    follow_it: bool = typer.Option(True, "--follow/--no-follow", help="follow the deploy until RUNNING or FAILED"),
    timeout_s: float = typer.Option(1800, "--timeout", help="seconds to follow"),
    as_json: bool = JsonOption,
) -> None:
    """Deploy (it waits for the optimizer when that still chooses) and follow its steps to the outcome."""
    from cli import resolve
    from cli.api_client import EXIT_FAILED, api_client, call, print_json, temporal_ui_url

    with api_client() as client:
        endpoint_id = resolve.endpoint_id(client, endpoint)
        row = call(client, "POST", f"/api/endpoints/{endpoint_id}/deploy",
                   json={"keep_on_failure": keep_on_failure}).json()
        if not as_json:
            _console().print(f"deploying {row['name']}: workflow {temporal_ui_url(row['workflow_id'])}", markup=False, soft_wrap=True)
        if follow_it:
            row = follow(client, endpoint_id, timeout_s, quiet=as_json)
    if as_json:
        print_json(row)
    else:
        console = _console()
        console.print(f"[bold {_colour(row['status'])}]{row['status']}[/] {row['name']}")
        if row["status"] == "RUNNING":
            console.print(f"  inference URL {row.get('inference_url')}  (model {row['name']!r})", markup=False, soft_wrap=True)
        if row.get("error"):
            error = row["error"]
            reason = (error.get("reason") or error.get("message") or error) if isinstance(error, dict) else error
            step = error.get("step") if isinstance(error, dict) else None
            console.print(f"  reason{f' (step {step})' if step else ''}: {reason}", markup=False, style="red", soft_wrap=True)
        if row.get("workflow_id"):
            console.print(f"  Temporal {temporal_ui_url(row['workflow_id'])}", markup=False, soft_wrap=True)
    if follow_it and row["status"] == "FAILED":
        raise typer.Exit(EXIT_FAILED)


@app.command()
def scale(
    endpoint: str = EndpointArg,
    replicas: int = typer.Argument(..., min=0, max=1000, help="replica count"),
    drain_timeout_s: float | None = typer.Option(None, "--drain-timeout", help="seconds a stopping replica may drain"),
    as_json: bool = JsonOption,
) -> None:
    """Scale by hand to REPLICAS."""
    from cli import resolve
    from cli.api_client import api_client, call, print_json

    with api_client() as client:
        endpoint_id = resolve.endpoint_id(client, endpoint)
        row = call(client, "POST", f"/api/endpoints/{endpoint_id}/scale",
                   json=_drop_none({"replicas": replicas, "drain_timeout_s": drain_timeout_s})).json()
    if as_json:
        print_json(row)
    else:
        _console().print(f"{row['name']}: {row.get('step') or row['status']}", markup=False, soft_wrap=True)


@app.command()
def delete(endpoint: str = EndpointArg, as_json: bool = JsonOption) -> None:
    """Delete the endpoint: a deploy in flight is cancelled, the release, routes and GPUs are removed."""
    from cli import resolve
    from cli.api_client import api_client, call, print_json

    with api_client() as client:
        row = call(client, "DELETE", f"/api/endpoints/{resolve.endpoint_id(client, endpoint)}").json()
    if as_json:
        print_json(row)
    else:
        _console().print(f"{row['name']}: {row['status']}", markup=False, soft_wrap=True)
