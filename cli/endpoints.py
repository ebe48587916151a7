"""`bud endpoints list|create|show|config|deploy|scale|delete`: endpoints by name or id, each with `--json` (the
API's JSON as it answered). Exit codes: 0 done, 1 the API refused (its message printed), 2 a usage error, 3 a
followed deploy ended FAILED or its rolling update was rolled back. Heavy packages load inside the commands, so
`bud --help` stays fast."""

from __future__ import annotations

import time

import typer

from cli.app import command_group
from cli.tables import console as _console
from cli.tables import print_table

app = command_group("Create, configure, deploy, scale and delete endpoints.")
SETTLED = {"RUNNING", "FAILED", "DELETED"}
POLL_S = 0.5
METHODS = ("REGRESSOR", "HEURISTIC", "MANUAL")
RUNTIMES = ("vllm", "sglang", "tensorrt-llm")

JsonOption = typer.Option(False, "--json", help="print the API's JSON answer instead of a table")
EndpointArg = typer.Argument(..., help="endpoint name or id")


def _colour(status: str) -> str:
    return {"RUNNING": "green", "FAILED": "red", "DELETED": "red", "DELETING": "yellow",
            "UPDATING": "bold cyan"}.get(status, "yellow")


ROLLOUT_COLOURS = {"PENDING": "bold cyan", "RUNNING": "bold cyan", "COMPLETED": "green", "ROLLED_BACK": "red",
                   "FAILED": "red", "REVERTED": "yellow"}
ROLLOUT_SETTLED = {"COMPLETED", "ROLLED_BACK", "FAILED", "REVERTED"}


def _fields(values: dict | None) -> str:
    """key=value for the fields that are set, or "-"."""
    shown = ", ".join(f"{key}={value}" for key, value in sorted((values or {}).items()) if value is not None)
    return shown or "-"


def _changed(label: str, before, after) -> list[str]:
    if isinstance(before, dict) or isinstance(after, dict):
        before, after = before or {}, after or {}
        return [change for key in sorted(set(before) | set(after))
                for change in _changed(key, before.get(key), after.get(key))]
    shown = ["-" if value is None else value for value in (before, after)]
    return [] if before == after else [f"{label} {shown[0]} -> {shown[1]}"]


def pending_changes(endpoint: dict) -> str:
    """What the pending configuration changes from what the replicas run ("max_num_seqs 8 -> 16; replicas 1 ->
    2"), or "-" when nothing is pending."""
    pending, serving = endpoint.get("pending_config"), endpoint["deployment"]
    if not pending:
        return "-"
    changes = _changed("runtime", serving["runtime"], pending["runtime"])
    if pending.get("config") is None:
        changes.append("config: the optimizer is choosing it")
    else:
        changes += _changed("config", serving.get("config"), pending["config"])
    changes += _changed("resources", serving.get("resources"), pending.get("resources"))
    changes += _changed("replicas", serving["replicas"], pending["replicas"])
    return "; ".join(changes) or "-"


def rollout_progress(rollout: dict) -> str:
    """The rolling update's status, generations and steps done: "RUNNING generation 1 -> 2, 1/4 steps done"."""
    planned = len(rollout.get("steps") or [])
    done = sum(step.get("outcome") == "done" for step in rollout.get("done") or [])
    generations = (f" generation {rollout['from_generation']} -> {rollout['to_generation']}"
                   if rollout.get("to_generation") else "")
    rolled_back = sum(step.get("outcome") == "rolled back" for step in rollout.get("done") or [])
    back = f", {rolled_back} rolled back" if rolled_back else ""
    return f"{rollout['status']}{generations}, {done}/{planned} steps done{back}"


def _rollout_reason(rollout: dict) -> str | None:
    error = rollout.get("error")
    if not error:
        return None
    return f"{error.get('reason')}" + (f" (at {error['step']})" if error.get("step") else "")


def _rollout_cell(rollout: dict | None) -> str:
    """The last rolling update: its progress (coloured by status), the plan in one line, the reason it stopped."""
    from rich.markup import escape

    if not rollout:
        return "-"
    colour = ROLLOUT_COLOURS.get(rollout.get("status"), "yellow")
    lines = [f"[{colour}]{escape(rollout_progress(rollout))}[/]", f"plan: {escape(rollout.get('plan') or '-')}"]
    if _rollout_reason(rollout):
        lines.append(f"[red]reason: {escape(_rollout_reason(rollout))}[/]")
    return "\n".join(lines)


def _generation(endpoint: dict) -> str:
    generation = endpoint["deployment"].get("generation")
    rollout = endpoint.get("rollout") or {}
    shown = "-" if generation is None else str(generation)
    if endpoint["status"] == "UPDATING" and rollout.get("to_generation"):
        shown += f" (updating to {rollout['to_generation']})"
    return shown


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
        ("generation", _generation(endpoint)),
        ("config", escape(_fields(deployment.get("config")))),
        ("resources", escape(_fields(deployment.get("resources")))),
        ("pending config", escape(pending_changes(endpoint))),
        ("rollout", _rollout_cell(endpoint.get("rollout"))),
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
    """Status, step, deployment (its generation), the pending configuration as the fields it changes, the last
    rolling update (plan, steps done, the reason it was rolled back), inference URL and the failure reason."""
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


def follow(client, endpoint_id: str, timeout_s: float, quiet: bool, doing: str = "deploying...") -> dict:
    """Poll the endpoint every POLL_S seconds, showing its status and step, until it settles (or TIMEOUT_S)."""
    from cli.api_client import call

    deadline = time.monotonic() + timeout_s
    console = _console()
    with _nothing() if quiet else console.status(doing) as status:
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
    """Deploy (it waits for the optimizer when that still chooses) and follow its steps to the outcome. On a RUNNING
    endpoint with a pending configuration this is a rolling update: its plan, each step, then COMPLETED, or
    ROLLED_BACK with the reason (exit 3)."""
    from cli import resolve
    from cli.api_client import EXIT_FAILED, api_client, call, print_json, temporal_ui_url

    with api_client() as client:
        endpoint_id = resolve.endpoint_id(client, endpoint)
        row = call(client, "POST", f"/api/endpoints/{endpoint_id}/deploy",
                   json={"keep_on_failure": keep_on_failure}).json()
        accepted, rolling = row, row["status"] == "UPDATING"
        if not as_json:
            doing = "rolling update of" if rolling else "deploying"
            _console().print(f"{doing} {row['name']}: workflow {temporal_ui_url(row['workflow_id'])}", markup=False,
                             soft_wrap=True)
            if rolling and (row.get("rollout") or {}).get("status") == "PENDING":
                _console().print(f"  plan: {row['rollout']['plan']}", markup=False, soft_wrap=True)
        if follow_it:
            row = follow(client, endpoint_id, timeout_s, quiet=as_json,
                         doing="rolling update..." if rolling else "deploying...")
    outcome = _rollout_outcome(accepted, row) if rolling else None
    if as_json:
        print_json(row)
    else:
        console = _console()
        console.print(f"[bold {_colour(row['status'])}]{row['status']}[/] {row['name']}")
        if outcome:
            console.print(f"  rolling update {rollout_progress(outcome)}", markup=False, soft_wrap=True,
                          style=ROLLOUT_COLOURS.get(outcome["status"], "yellow"))
        if row["status"] == "RUNNING":
            console.print(f"  inference URL {row.get('inference_url')}  (model {row['name']!r})", markup=False, soft_wrap=True)
        if row.get("error"):
            error = row["error"]
            reason = (error.get("reason") or error.get("message") or error) if isinstance(error, dict) else error
            step = error.get("step") if isinstance(error, dict) else None
            console.print(f"  reason{f' (step {step})' if step else ''}: {reason}", markup=False, style="red", soft_wrap=True)
        if row.get("workflow_id"):
            console.print(f"  Temporal {temporal_ui_url(row['workflow_id'])}", markup=False, soft_wrap=True)
    if follow_it and (row["status"] == "FAILED" or (outcome or {}).get("status") in ("ROLLED_BACK", "FAILED")):
        raise typer.Exit(EXIT_FAILED)


def _rollout_outcome(accepted: dict, settled: dict) -> dict | None:
    """The rolling update this deploy started, once it ended; None while it runs, or when it stopped before its
    plan was made (the endpoint's error says why, and `rollout` is still the one before)."""
    rollout = settled.get("rollout")
    if not rollout or rollout.get("status") not in ROLLOUT_SETTLED or settled["status"] == "UPDATING":
        return None
    before = accepted.get("rollout")
    if before and before.get("status") in ROLLOUT_SETTLED and before == rollout:
        return None
    return rollout


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


# ------------------------------------------------------------------------------------------------ autoscaling
@app.command()
def autoscale(
    endpoint: str = EndpointArg,
    min_replicas: int = typer.Option(1, "--min", min=0, max=1000, help="fewest replicas (0: scale to zero when "
                                                                       "idle, local cluster)"),
    max_replicas: int = typer.Option(4, "--max", min=1, max=1000, help="most replicas"),
    target_queue_depth: float | None = typer.Option(
        None, "--target-queue-depth", help="requests waiting + running over all replicas (inference_queue_depth, a "
                                           "Value target): more adds replicas"),
    target_queue_per_replica: float | None = typer.Option(
        None, "--target-queue-per-replica", help="the same per replica (an AverageValue target)"),
    target_cpu: int | None = typer.Option(None, "--target-cpu", min=1, max=1000,
                                          help="average CPU of the replicas, percent of their requested cores"),
    scale_down_window_s: int | None = typer.Option(
        None, "--scale-down-window", min=0, max=3600, help="seconds of lower recommendations before scaling down "
                                                           "(autoscaling/v2's default: 300)"),
    scale_to_zero_after_s: int | None = typer.Option(None, "--scale-to-zero-after", min=1,
                                                     help="with --min 0: idle seconds before the last replica stops"),
    off: bool = typer.Option(False, "--off", help="disable the autoscaler: the replica count is yours again"),
    as_json: bool = JsonOption,
) -> None:
    """Hand the replica count to the autoscaler (an autoscaling/v2 HPA spec; on the local cluster the
    AutoscaleEndpoint workflow applies the same rules). No target given: 80 % CPU or 100 requests queued."""
    from cli import resolve
    from cli.api_client import EXIT_USAGE, api_client, call, print_json, refuse

    metrics = []
    if target_queue_depth is not None:
        metrics.append(_queue_metric({"type": "Value", "value": target_queue_depth}))
    if target_queue_per_replica is not None:
        metrics.append(_queue_metric({"type": "AverageValue", "averageValue": target_queue_per_replica}))
    if target_cpu is not None:
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                                     "averageUtilization": target_cpu}}})
    if off and (metrics or scale_to_zero_after_s is not None or scale_down_window_s is not None):
        refuse("--off takes no targets", EXIT_USAGE)
    body: dict = {"enabled": not off, "min_replicas": min_replicas, "max_replicas": max_replicas}
    if metrics:
        body["metrics"] = metrics
    if scale_down_window_s is not None:
        body["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": scale_down_window_s}}
    if scale_to_zero_after_s is not None:
        body["scale_to_zero_after_s"] = scale_to_zero_after_s
    with api_client() as client:
        row = call(client, "PUT", f"/api/endpoints/{resolve.endpoint_id(client, endpoint)}/autoscaling",
                   json=body).json()
    if as_json:
        print_json(row)
        return
    spec = row.get("autoscaling") or body
    if not spec.get("enabled"):
        _console().print(f"{row['name']}: autoscaler off; `bud endpoints scale` sets the replicas", markup=False)
        return
    _console().print(f"{row['name']}: autoscaling {spec['min_replicas']}..{spec['max_replicas']} replicas on "
                     f"{', '.join(_target(m) for m in spec.get('metrics') or [])}; watch it with "
                     f"`bud endpoints metrics {row['name']}` or drive it with `bud endpoints load {row['name']}`",
                     markup=False, soft_wrap=True)


def _queue_metric(target: dict) -> dict:
    return {"type": "External", "external": {"metric": {"name": "inference_queue_depth"}, "target": target}}


def _target(metric: dict) -> str:
    """One metric of an autoscaling spec, readable: `inference_queue_depth > 100`, `cpu > 80 %`."""
    if metric["type"] == "Resource":
        return f"cpu > {metric['resource']['target']['averageUtilization']} %"
    target = metric["external"]["target"]
    if target["type"] == "AverageValue":
        return f"{metric['external']['metric']['name']} > {target['averageValue']:g} per replica"
    return f"{metric['external']['metric']['name']} > {target['value']:g}"


# ------------------------------------------------------------------------------------------------- benchmarks
BENCHMARK_SETTLED = {"COMPLETED", "FAILED"}


def _levels(text: str) -> list[int]:
    from cli.api_client import EXIT_USAGE, refuse

    try:
        return [int(level) for level in text.split(",")]
    except ValueError:
        refuse(f"--concurrency {text!r}: comma-separated client counts, e.g. 1,4,16", EXIT_USAGE)


def _figure(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_benchmark(run: dict) -> None:
    """Per level: measured TTFT, TPOT and throughput beside the optimizer's prediction for the same workload."""
    console = _console()
    colour = {"COMPLETED": "green", "FAILED": "red"}.get(run["status"], "yellow")
    console.print(f"[bold {colour}]{run['status']}[/] benchmark {run['id']} ({run['request']['input_tokens']} in / "
                  f"{run['request']['output_tokens']} out tokens): {run.get('step') or ''}", soft_wrap=True)
    rows = []
    for level in run["levels"]:
        predicted = level.get("predicted") or {}
        rows.append((str(level["concurrency"]), f"{level['completed']}/{level['requests']}", str(level["errors"]),
                     _figure(level.get("ttft_p99_ms")), _figure(predicted.get("ttft_ms")),
                     _figure(level.get("tpot_p50_ms"), 1), _figure(predicted.get("tpot_ms"), 1),
                     _figure(level.get("throughput_tps")), _figure(predicted.get("throughput_tps"))))
    # Nine narrow columns fit an 80-column terminal; TTFT p50 and TPOT p99 are in --json.
    print_table(("clients", "done", "errors", "TTFT p99", "pred", "TPOT p50", "pred", "tok/s", "pred"), rows,
                whole=("clients",))
    console.print("TTFT and TPOT in ms; pred: the optimizer's predicted figure for the same config and workload",
                  markup=False, soft_wrap=True)
    if run.get("error"):
        console.print(f"  reason: {run['error']}", markup=False, style="red", soft_wrap=True)


@app.command()
def benchmark(
    endpoint: str = EndpointArg,
    input_tokens: int = typer.Option(256, "--input-tokens", min=1, help="prompt tokens per request"),
    output_tokens: int = typer.Option(64, "--output-tokens", min=1, help="tokens generated per request"),
    concurrency: str = typer.Option("1,4,16", "--concurrency", help="concurrent clients of each level"),
    requests_per_level: int | None = typer.Option(None, "--requests-per-level", min=1,
                                                  help="requests each level sends (default: 4 per client, >= 8)"),
    max_duration_s: float | None = typer.Option(None, "--max-duration", help="seconds for the whole sweep (API "
                                                                             "default 600)"),
    follow_it: bool = typer.Option(True, "--follow/--no-follow", help="wait for the sweep and print its table"),
    timeout_s: float = typer.Option(3600, "--timeout", help="seconds to follow"),
    as_json: bool = JsonOption,
) -> None:
    """Sweep load levels through the gateway against a RUNNING endpoint: per level measured TTFT, TPOT and
    throughput beside the prediction (each level is also stored as a measurement)."""
    from cli import resolve
    from cli.api_client import EXIT_FAILED, api_client, call, print_json, temporal_ui_url

    body = _drop_none({"input_tokens": input_tokens, "output_tokens": output_tokens,
                       "concurrency": _levels(concurrency), "requests_per_level": requests_per_level,
                       "max_duration_s": max_duration_s})
    with api_client() as client:
        endpoint_id = resolve.endpoint_id(client, endpoint)
        run = call(client, "POST", f"/api/endpoints/{endpoint_id}/benchmark", json=body).json()
        if not as_json and run.get("workflow_id"):
            _console().print(f"benchmark {run['id']}: workflow {temporal_ui_url(run['workflow_id'])}", markup=False,
                             soft_wrap=True)
        deadline = time.monotonic() + timeout_s
        shown = None
        with _nothing() if as_json or not follow_it else _console().status("benchmarking...") as status:
            while follow_it and run["status"] not in BENCHMARK_SETTLED and time.monotonic() < deadline:
                time.sleep(POLL_S)
                run = call(client, "GET", f"/api/endpoints/{endpoint_id}/benchmarks/{run['id']}").json()
                if not as_json and run.get("step") != shown:
                    status.update(run.get("step") or "...")
                    shown = run.get("step")
    if as_json:
        print_json(run)
    else:
        print_benchmark(run)
    if follow_it and run["status"] == "FAILED":
        raise typer.Exit(EXIT_FAILED)


# ---------------------------------------------------------------------------------------------------- metrics
NOT_MEASURED = "not measured"
METRIC_ROWS = (  # (label, field of the monitoring's metrics, unit, digits)
    ("TTFT p50", "ttft_p50_ms", "ms", 0), ("TTFT p99", "ttft_p99_ms", "ms", 0), ("TPOT p50", "tpot_p50_ms", "ms", 1),
    ("latency p99", "inference_latency_p99_ms", "ms", 0), ("throughput", "throughput_tps", "tokens/s", 1),
    ("requests", "requests_per_s", "/s", 2), ("queue depth", "queue_depth", "waiting", 1),
    ("running", "running", "requests", 1), ("GPU utilization", "gpu_utilization", "%", 0),
)


GPU_ROWS = (("GPUs reporting", "gpus", "", 0), ("utilization", "utilization_percent", "%", 0),
            ("memory used", "memory_used_mib", "MiB", 0), ("memory free", "memory_free_mib", "MiB", 0),
            ("power", "power_w", "W", 0))


def _measured(value, unit: str, digits: int) -> str:
    """A figure with its unit; None (or the API's own "not measured") as "not measured"."""
    if value is None or isinstance(value, str):
        return value or NOT_MEASURED
    return f"{value:.{digits}f} {unit}".rstrip()


def _alert_text(alert) -> str:
    """An alert as the API lists it: Prometheus's (name, severity, summary) or the monitoring's name."""
    if not isinstance(alert, dict):
        return str(alert)
    severity = f" [{alert['severity']}]" if alert.get("severity") else ""
    return f"{alert.get('name') or '?'}{severity}" + (f": {alert['summary']}" if alert.get("summary") else "")


def _alerts_lines(metrics: dict, monitoring: dict | None) -> list[str]:
    """Firing (and pending) alerts: Prometheus's rules where the API asked it, else the monitoring's own."""
    prometheus = metrics.get("alerts")
    if prometheus:
        lines = ["alerts firing: " + ("; ".join(_alert_text(a) for a in prometheus.get("firing") or []) or "none")]
        if prometheus.get("pending"):
            lines.append("alerts pending: " + "; ".join(_alert_text(a) for a in prometheus["pending"]))
        if prometheus.get("error"):
            lines.append(f"alerts not read: {prometheus['error']}")
        return lines
    alerts = (monitoring or {}).get("alerts") or []
    return ["alerts firing: " + (", ".join(_alert_text(a) for a in alerts) if alerts else "none")]


def print_metrics(endpoint: dict, metrics: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    deployment = endpoint["deployment"]
    console.print(f"[bold]{escape(endpoint['name'])}[/] [{_colour(endpoint['status'])}]{endpoint['status']}[/]  "
                  f"replicas {deployment['ready_replicas']}/{deployment['replicas']} ready", soft_wrap=True)
    spec, state = endpoint.get("autoscaling") or {}, endpoint.get("autoscaling_state") or {}
    if spec.get("enabled"):
        console.print(f"  autoscaling {spec['min_replicas']}..{spec['max_replicas']} on "
                      f"{', '.join(_target(m) for m in spec.get('metrics') or [])}: "
                      f"{state.get('message') or ', '.join(state.get('reasons') or []) or '-'}",
                      markup=False, soft_wrap=True)
    monitoring = metrics.get("monitoring")
    if monitoring:
        live, expectation = monitoring.get("metrics") or {}, monitoring.get("expectation") or {}
        predicted = {"ttft_p50_ms": expectation.get("predicted_ttft_ms"),
                     "tpot_p50_ms": expectation.get("predicted_tpot_ms")}
        table = Table("metric", "measured", "predicted", title=f"over the last {monitoring.get('window_s')} s")
        for label, field, unit, digits in METRIC_ROWS:
            table.add_row(label, _measured(live.get(field), unit, digits),
                          "-" if predicted.get(field) is None else _measured(predicted[field], unit, digits))
        console.print(table)
    else:
        console.print(f"  serving metrics {NOT_MEASURED} yet: the monitoring schedule has not observed it "
                      f"(`bud endpoints metrics {endpoint['name']} --refresh` observes it now)", markup=False,
                      soft_wrap=True)
    if metrics.get("gpu"):
        gpus = Table("GPUs now (DCGM)", "measured")
        for label, field, unit, digits in GPU_ROWS:
            gpus.add_row(label, _measured(metrics["gpu"].get(field), unit, digits))
        console.print(gpus)
    for line in _alerts_lines(metrics, monitoring):
        console.print(line, markup=False, soft_wrap=True)
    if monitoring and monitoring.get("reoptimize_because"):
        console.print("re-optimization advised: " + "; ".join(monitoring["reoptimize_because"]), markup=False,
                      soft_wrap=True)


@app.command()
def metrics(
    endpoint: str = EndpointArg,
    refresh: bool = typer.Option(False, "--refresh", help="observe now (over --window seconds) instead of showing "
                                                          "the schedule's last observation"),
    window_s: int = typer.Option(300, "--window", min=10, max=86_400, help="seconds observed with --refresh"),
    timeout_s: float = typer.Option(60, "--timeout", help="seconds to wait for the new observation"),
    as_json: bool = JsonOption,
) -> None:
    """TTFT and latency p99, throughput, queue depth, GPU use (measured beside predicted), replicas, the
    autoscaler's state and the alerts firing; "not measured" where nothing was."""
    from cli import resolve
    from cli.api_client import api_client, call, print_json

    with api_client() as client:
        endpoint_id = resolve.endpoint_id(client, endpoint)
        observed = call(client, "GET", f"/api/endpoints/{endpoint_id}/metrics").json()
        if refresh:
            before = observed["monitoring"]
            call(client, "POST", f"/api/endpoints/{endpoint_id}/metrics/refresh", params={"window_s": window_s})
            deadline = time.monotonic() + timeout_s
            with _nothing() if as_json else _console().status("observing..."):
                while observed["monitoring"] == before and time.monotonic() < deadline:
                    time.sleep(POLL_S)
                    observed = call(client, "GET", f"/api/endpoints/{endpoint_id}/metrics").json()
        row = call(client, "GET", f"/api/endpoints/{endpoint_id}").json()
    if as_json:
        print_json(observed)
    else:
        print_metrics(row, observed)


# ------------------------------------------------------------------------------------------------------- load
@app.command()
def load(
    endpoint: str = EndpointArg,
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=1024, help="requests kept in flight"),
    duration_s: float = typer.Option(60, "--duration", min=1, max=3600, help="seconds to send for"),
    max_tokens: int = typer.Option(128, "--max-tokens", min=1, max=8192, help="tokens each request generates"),
    every_s: float = typer.Option(5, "--every", min=0.5, max=600, help="seconds between progress lines"),
    key: str | None = typer.Option(None, "--key", help="inference key (default: BUD_INFERENCE_KEY, else "
                                                       ".bud/inference-key, which `make up` writes)"),
    model: str | None = typer.Option(None, "--model", help="model name to send (default: the endpoint's name; a "
                                                           "route's name spreads over its backends)"),
    as_json: bool = JsonOption,
) -> None:
    """Drive bounded streaming load through the gateway and print, every few seconds, requests sent and failed, TTFT
    p99 and the endpoint's replicas: run it beside an autoscaling block to watch replicas rise, and fall after."""
    import asyncio

    from cli import resolve
    from cli.api_client import EXIT_REFUSED, api_client, call, print_json, refuse
    from cli.load import run_load

    secret = key or _inference_key()
    with api_client() as client:
        endpoint_id = resolve.endpoint_id(client, endpoint)
        row = call(client, "GET", f"/api/endpoints/{endpoint_id}").json()
    if not row.get("inference_url"):
        refuse(f"{row['name']} has no inference URL yet ({row['status']}): deploy it first")
    console = _console()

    def replicas() -> str:
        with api_client() as client:
            current = call(client, "GET", f"/api/endpoints/{endpoint_id}").json()
        return f"{current['deployment']['ready_replicas']}/{current['deployment']['replicas']}"

    def report(line: str) -> None:
        if not as_json:
            console.print(line, markup=False, soft_wrap=True)

    if not as_json:
        console.print(f"{concurrency} streaming clients for {duration_s:g} s -> {row['inference_url']} "
                      f"(model {model or row['name']!r})", markup=False, soft_wrap=True)
    summary = asyncio.run(run_load(row["inference_url"], secret, model or row["name"], concurrency, duration_s,
                                   max_tokens, every_s, report, replicas))
    if as_json:
        print_json(summary)
    if summary["sent"] and not summary["ok"]:
        refuse(f"every request failed: {summary['error_sample']}", EXIT_REFUSED)


def _inference_key() -> str:
    import os

    from cli.api_client import refuse
    from core.settings import get_settings

    if os.environ.get("BUD_INFERENCE_KEY"):
        return os.environ["BUD_INFERENCE_KEY"]
    path = get_settings().state_dir / "inference-key"
    if not path.exists():
        refuse(f"no inference key: pass --key, set BUD_INFERENCE_KEY, or run `make up` (it writes {path})")
    return path.read_text().strip()
