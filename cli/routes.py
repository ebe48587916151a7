"""`bud routes list|show|set|shift|abort|revert`: the model names clients send, spread over endpoints by weight,
and the TrafficShift workflow that moves one to a new endpoint (blue-green, or gradual steps each judged by a
canary analysis). Endpoints by name or id; `--json` prints the API's JSON. Exit codes as for `bud endpoints`:
3 when a followed shift ends without completing (FAILED, or ROLLED_BACK by its canary analysis or an abort)."""

from __future__ import annotations

import time

import typer

from cli.app import command_group
from cli.tables import console as _console
from cli.tables import print_table

app = command_group("Route a model name to endpoints by weight; shift it to a new endpoint, abort, revert.")
JsonOption = typer.Option(False, "--json", help="print the API's JSON answer instead of a table")
RouteArg = typer.Argument(..., help="route name (the model name clients send)")
POLL_S = 0.5
STRATEGIES = ("gradual", "blue-green")
SHIFT_COLOURS = {"RUNNING": "yellow", "COMPLETED": "green", "ROLLED_BACK": "red", "FAILED": "red"}


def _backend_name(backend: dict) -> str:
    if backend["kind"] == "provider":
        return f"{backend.get('provider_name') or backend['provider_id']}/{backend['model']}"
    return backend.get("endpoint_name") or backend["endpoint_id"]


def _weights(route: dict) -> str:
    return ", ".join(f"{_backend_name(b)} {b['weight']} %" for b in route["backends"])


def _ms(value) -> str:
    return "not measured" if value is None else f"{value:g} ms"


def step_line(step: dict) -> str:
    """One step's decision as the shift record holds it: verdict, canary requests, TTFT p99 beside the stable."""
    canary, stable = step.get("canary") or {}, step.get("stable") or {}
    line = (f"step {step['weight']} %: {step['verdict']} ({step.get('requests', 0)} canary requests over "
            f"{step.get('window_s', 0):g} s; TTFT p99 {_ms(canary.get('ttft_p99_ms'))} vs stable "
            f"{_ms(stable.get('ttft_p99_ms'))}, errors {canary.get('errors', 0)} vs {stable.get('errors', 0)})")
    if step.get("reasons"):
        line += ": " + "; ".join(step["reasons"])
    return line


def print_route(route: dict) -> None:
    from rich.markup import escape

    from cli.api_client import temporal_ui_url

    console = _console()
    console.print(f"[bold]{escape(route['name'])}[/]  (updated {route['updated_at']})")
    print_table(("backend", "kind", "weight", "status", "id"),
                ((_backend_name(b), b["kind"], f"{b['weight']} %", b.get("status") or "-",
                  b.get("endpoint_id") or b.get("provider_id") or "-") for b in route["backends"]),
                whole=("backend",))
    if route["fallbacks"]:
        console.print("fallbacks, tried in order: " + ", ".join(_backend_name(b) for b in route["fallbacks"])
                      + (f" (spill past {route['spill_queue_depth']} requests in flight per replica)"
                         if route.get("spill_queue_depth") is not None else ""), markup=False, soft_wrap=True)
    shift = route.get("shift")
    if not shift:
        return
    colour = SHIFT_COLOURS.get(shift.get("status"), "yellow")
    console.print(f"shift ({shift.get('strategy')}) to {escape(str(shift.get('to_endpoint') or shift.get('to_endpoint_id')))}: "
                  f"[{colour}]{shift.get('status')}[/] at {escape(str(shift.get('step') or '-'))}", soft_wrap=True)
    for step in shift.get("steps") or []:
        console.print(f"  {step_line(step)}", markup=False, soft_wrap=True)
    if shift.get("reason"):
        console.print(f"  reason: {shift['reason']}", markup=False, soft_wrap=True)
    if shift.get("workflow_id"):
        console.print(f"  Temporal {temporal_ui_url(shift['workflow_id'])}", markup=False, soft_wrap=True)


@app.command("list")
def list_routes(as_json: bool = JsonOption) -> None:
    """The project's routes: their backends by weight and the last shift's status."""
    from cli.api_client import api_client, call, print_json

    with api_client() as client:
        rows = call(client, "GET", "/api/routes").json()
    if as_json:
        print_json(rows)
        return
    print_table(("name", "backends", "fallbacks", "shift"),
                ((row["name"], _weights(row), ", ".join(_backend_name(b) for b in row["fallbacks"]) or "-",
                  f"{row['shift'].get('status')} ({row['shift'].get('step')})" if row.get("shift") else "-")
                 for row in rows))


@app.command()
def show(route: str = RouteArg, as_json: bool = JsonOption) -> None:
    """Backends and weights, fallbacks, and the last shift with each step's decision and numbers."""
    from cli.api_client import api_client, call, print_json

    with api_client() as client:
        row = call(client, "GET", f"/api/routes/{route}").json()
    if as_json:
        print_json(row)
    else:
        print_route(row)


def _parse_weights(client, backends: list[str]) -> list[dict]:
    """ENDPOINT=WEIGHT arguments as the API's backends (endpoint names resolved to ids)."""
    from cli import resolve
    from cli.api_client import EXIT_USAGE, refuse

    parsed = []
    for item in backends:
        endpoint, _, weight = item.rpartition("=")
        if not endpoint or not weight.strip().isdigit():
            refuse(f"{item!r}: give each backend as ENDPOINT=WEIGHT (e.g. my-llm-endpoint=90)", EXIT_USAGE)
        parsed.append({"endpoint_id": resolve.endpoint_id(client, endpoint), "weight": int(weight)})
    return parsed


@app.command("set")
def set_route(
    route: str = RouteArg,
    backends: list[str] = typer.Argument(..., help="ENDPOINT=WEIGHT for each endpoint (name or id); the weights add "
                                                   "up to 100"),
    fallbacks: list[str] | None = typer.Option(None, "--fallback", help="an endpoint taking the requests the "
                                                                         "backends cannot (repeat, in the order tried)"),
    no_fallbacks: bool = typer.Option(False, "--no-fallbacks", help="remove the route's fallbacks"),
    spill_queue_depth: int | None = typer.Option(None, "--spill-queue-depth", min=0,
                                                 help="spill to the fallbacks past this many requests in flight per "
                                                      "backend replica"),
    as_json: bool = JsonOption,
) -> None:
    """Set the endpoints behind ROUTE and their weights (creates the route); the answer comes once the gateways
    serve it. Fallbacks and the spill depth not given keep their current value."""
    from cli import resolve
    from cli.api_client import EXIT_USAGE, api_client, call, print_json, refuse

    if fallbacks and no_fallbacks:
        refuse("--fallback and --no-fallbacks exclude each other", EXIT_USAGE)
    with api_client() as client:
        body: dict = {"backends": _parse_weights(client, backends)}
        if fallbacks:
            body["fallbacks"] = [{"endpoint_id": resolve.endpoint_id(client, name)} for name in fallbacks]
        elif no_fallbacks:
            body["fallbacks"] = []
        if spill_queue_depth is not None:
            body["spill_queue_depth"] = spill_queue_depth
        row = call(client, "PUT", f"/api/routes/{route}", json=body).json()
    if as_json:
        print_json(row)
        return
    _console().print(f"{row['name']}: {_weights(row)}", markup=False, soft_wrap=True)
    if not row["propagated"]:
        lagging = ", ".join(str(g) for g in row["lagging_gateways"])
        _console().print(f"  committed; gateways still serving an older table: {lagging}", markup=False,
                         soft_wrap=True)


def follow_shift(client, route: str, timeout_s: float, quiet: bool) -> dict:
    """Poll the route every POLL_S seconds until its shift settles (or TIMEOUT_S): a progress bar of the new
    endpoint's share of traffic, the current step, and a line per step decided."""
    from rich.progress import BarColumn, Progress, TextColumn

    from cli.api_client import call

    deadline = time.monotonic() + timeout_s
    console = _console()
    shown_steps, shown_step = 0, None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f} % to the new endpoint"),
                  console=console, disable=quiet, transient=True) as progress:
        task = progress.add_task("starting", total=100)
        while True:
            row = call(client, "GET", f"/api/routes/{route}").json()
            shift = row.get("shift") or {}
            to = shift.get("to_endpoint_id")
            share = next((b["weight"] for b in row["backends"] if b.get("endpoint_id") == to), 0)
            progress.update(task, completed=share, description=str(shift.get("step") or "..."))
            if not quiet:
                if shift.get("step") != shown_step:
                    progress.console.print(f"  {shift.get('status')}: {shift.get('step')}", markup=False,
                                           soft_wrap=True)
                    shown_step = shift.get("step")
                for step in (shift.get("steps") or [])[shown_steps:]:
                    progress.console.print(f"  {step_line(step)}", markup=False, soft_wrap=True)
                shown_steps = len(shift.get("steps") or [])
            if shift.get("status") != "RUNNING" or time.monotonic() > deadline:
                return row
            time.sleep(POLL_S)


def _outcome(row: dict, follow_it: bool, as_json: bool) -> None:
    """Print the shift's end (or the route as it is) and exit 3 when a followed shift did not complete."""
    from cli.api_client import EXIT_FAILED, print_json, temporal_ui_url

    shift = row.get("shift") or {}
    if as_json:
        print_json(row)
    else:
        console = _console()
        colour = SHIFT_COLOURS.get(shift.get("status"), "yellow")
        console.print(f"[bold {colour}]{shift.get('status')}[/] {row['name']}: {_weights(row)}", soft_wrap=True)
        if shift.get("reason"):
            console.print(f"  reason: {shift['reason']}", markup=False, style="red", soft_wrap=True)
        if shift.get("workflow_id"):
            console.print(f"  Temporal {temporal_ui_url(shift['workflow_id'])}", markup=False, soft_wrap=True)
    if follow_it and shift.get("status") in ("FAILED", "ROLLED_BACK"):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def shift(
    route: str = RouteArg,
    to: str = typer.Option(..., "--to", help="the endpoint (name or id) to move the traffic to; RUNNING"),
    strategy: str = typer.Option("gradual", "--strategy", help="gradual (steps judged by canary analysis) or "
                                                               "blue-green (validate, then swap at once)"),
    steps: str = typer.Option("10,50,100", "--steps", help="gradual: the new endpoint's weight after each step, "
                                                           "increasing, ending at 100"),
    step_interval_s: float = typer.Option(60, "--step-interval", help="gradual: seconds each step runs before it is "
                                                                      "judged"),
    min_requests: int | None = typer.Option(None, "--min-requests", help="canary requests a step needs (API default "
                                                                         "20); send traffic while it runs"),
    traffic_wait_s: float | None = typer.Option(None, "--traffic-wait", help="seconds past the interval a step "
                                                                             "waits for them before the shift fails"),
    max_ttft_p99_ms: float | None = typer.Option(None, "--max-ttft-p99-ms", help="SLO: the canary's TTFT p99 ceiling"),
    max_error_rate: float | None = typer.Option(None, "--max-error-rate", help="SLO: 0-1"),
    drain_s: float = typer.Option(30, "--drain", help="seconds before the old endpoints leave the route"),
    remove_old: bool = typer.Option(False, "--remove-old", help="delete the old endpoints once the shift completes"),
    follow_it: bool = typer.Option(True, "--follow/--no-follow", help="follow the shift to its outcome"),
    timeout_s: float = typer.Option(3600, "--timeout", help="seconds to follow"),
    as_json: bool = JsonOption,
) -> None:
    """Move ROUTE's traffic to an endpoint, following the TrafficShift workflow: each step and its decision, then
    the outcome (COMPLETED, ROLLED_BACK with the canary's numbers, or FAILED with the reason) and the Temporal link."""
    from cli import resolve
    from cli.api_client import EXIT_USAGE, api_client, call, temporal_ui_url, refuse

    if strategy not in STRATEGIES:
        refuse(f"--strategy is one of {', '.join(STRATEGIES)}", EXIT_USAGE)
    try:
        weights = [int(step) for step in steps.split(",")]
    except ValueError:
        refuse(f"--steps {steps!r}: comma-separated weights, e.g. 10,50,100", EXIT_USAGE)
    slo = {key: value for key, value in dict(min_requests=min_requests, traffic_wait_s=traffic_wait_s,
                                             max_ttft_p99_ms=max_ttft_p99_ms, max_error_rate=max_error_rate).items()
           if value is not None}
    with api_client() as client:
        body = {"to_endpoint_id": resolve.endpoint_id(client, to), "strategy": strategy, "steps": weights,
                "step_interval_s": step_interval_s, "drain_s": drain_s, "remove_old": remove_old, "slo": slo}
        row = call(client, "POST", f"/api/routes/{route}/shift", json=body).json()
        if not as_json:
            _console().print(f"shifting {row['name']} to {to} ({strategy}): workflow "
                             f"{temporal_ui_url(row['shift']['workflow_id'])}", markup=False, soft_wrap=True)
        if follow_it:
            row = follow_shift(client, route, timeout_s, quiet=as_json)
    _outcome(row, follow_it, as_json)


@app.command()
def abort(
    route: str = RouteArg,
    reason: str = typer.Option("aborted by request", "--reason", help="recorded as the shift's reason"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="wait until the weights are back"),
    timeout_s: float = typer.Option(120, "--timeout", help="seconds to wait"),
    as_json: bool = JsonOption,
) -> None:
    """Abort the route's running shift: every weight returns to where it was before it started."""
    from cli.api_client import api_client, call

    with api_client() as client:
        row = call(client, "POST", f"/api/routes/{route}/shift/abort", json={"reason": reason}).json()
        if wait:
            row = follow_shift(client, route, timeout_s, quiet=True)
    _outcome(row, False, as_json)


@app.command()
def revert(route: str = RouteArg, as_json: bool = JsonOption) -> None:
    """Put ROUTE's weights back to where they were before its last shift (after it completed, say); a running shift
    is aborted instead (`bud routes abort`)."""
    from cli.api_client import api_client, call, print_json, refuse

    with api_client() as client:
        current = call(client, "GET", f"/api/routes/{route}").json()
        shift = current.get("shift") or {}
        if shift.get("status") == "RUNNING":
            refuse(f"a shift is moving route {route}: `bud routes abort {route}` rolls it back")
        if not shift.get("original"):
            refuse(f"route {route} has no shift to revert")
        body = {"backends": [{"endpoint_id": endpoint, "weight": weight} for endpoint, weight in
                             shift["original"].items()]}
        row = call(client, "PUT", f"/api/routes/{route}", json=body).json()
    if as_json:
        print_json(row)
    else:
        _console().print(f"{row['name']} reverted: {_weights(row)}", markup=False, soft_wrap=True)
