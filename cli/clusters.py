"""`bud clusters list|show`: the clusters this token's project may deploy to (its own and the shared local one),
their GPUs and what registration found. Exit codes as for `bud endpoints`."""

from __future__ import annotations

import typer

from cli.app import command_group
from cli.tables import console as _console
from cli.tables import print_table

app = command_group("List the clusters endpoints deploy to and their GPUs.")
JsonOption = typer.Option(False, "--json", help="print the API's JSON answer instead of a table")


def _gpus(cluster: dict) -> str:
    return ", ".join(f"{pool['count']}x {pool['gpu_type']}" for pool in cluster["gpus"]) or "-"


@app.command("list")
def list_clusters(as_json: bool = JsonOption) -> None:
    """Name, kind, status and GPUs of each cluster."""
    from cli.api_client import api_client, call, print_json

    with api_client() as client:
        rows = call(client, "GET", "/api/clusters").json()
    if as_json:
        print_json(rows)
        return
    colour = {"READY": "green", "FAILED": "red"}
    print_table(("name", "kind", "status", "gpus", "id"),
                ((row["name"], row["kind"], f"[{colour.get(row['status'], 'yellow')}]{row['status']}[/]", _gpus(row),
                  row["id"]) for row in rows))


@app.command()
def show(cluster: str = typer.Argument(..., help="cluster name or id"), as_json: bool = JsonOption) -> None:
    """One cluster: its GPU pools (type, count, per node, price), what registration found, the failure reason."""
    from rich.markup import escape
    from rich.table import Table

    from cli import resolve
    from cli.api_client import api_client, call, print_json, temporal_ui_url

    with api_client() as client:
        row = call(client, "GET", f"/api/clusters/{resolve.cluster_id(client, cluster)}").json()
    if as_json:
        print_json(row)
        return
    console = _console()
    facts = ", ".join(f"{key}={value}" for key, value in sorted(row["facts"].items())) or "-"
    details = Table(show_header=False, box=None)
    for key, value in (("name", row["name"]), ("id", row["id"]), ("kind", row["kind"]), ("status", row["status"]),
                       ("facts", facts), ("error", row.get("error") or "-"),
                       ("workflow", temporal_ui_url(row["workflow_id"]) if row.get("workflow_id") else "-")):
        details.add_row(f"[bold]{key}[/]", escape(str(value)))
    console.print(details)
    print_table(("gpu type", "count", "per node", "$/GPU-hour"),
                ((pool["gpu_type"], str(pool["count"]), str(pool.get("gpus_per_node", "-")),
                  "catalog" if pool.get("price_per_hour") is None else f"{pool['price_per_hour']:.2f}")
                 for pool in row["gpus"]), whole=("gpu type",))
