"""`bud keys create|list|revoke`: the project's inference keys (what clients send to the gateway). A new key is
printed once; lists show its prefix. Exit codes as for `bud endpoints`."""

from __future__ import annotations

import typer

from cli.app import command_group
from cli.tables import console as _console
from cli.tables import print_table

app = command_group("Create, list and revoke inference keys.")
JsonOption = typer.Option(False, "--json", help="print the API's JSON answer instead of a table")


@app.command()
def create(
    name: str = typer.Option(..., "--name", help="what the key is for"),
    routes: list[str] | None = typer.Option(None, "--route", help="a route or endpoint name the key may call "
                                                                  "(repeat; none: every route of the project)"),
    rpm: int | None = typer.Option(None, "--rpm", help="requests per minute (none: no limit)"),
    tpm: int | None = typer.Option(None, "--tpm", help="tokens per minute (none: no limit)"),
    expires_at: str | None = typer.Option(None, "--expires-at", help="ISO time after which the gateway refuses it"),
    as_json: bool = JsonOption,
) -> None:
    """Create a key; it is printed this once (only its digest is stored)."""
    from cli import resolve
    from cli.api_client import api_client, call, print_json

    body = {"name": name, "routes": routes or None, "rpm": rpm, "tpm": tpm, "expires_at": expires_at}
    with api_client() as client:
        project = resolve.project_id(client)
        key = call(client, "POST", f"/api/projects/{project}/api-keys",
                   json={k: v for k, v in body.items() if v is not None}).json()
    if as_json:
        print_json(key)
        return
    console = _console()
    console.print(f"created key {key['name']} (id {key['id']}); shown this once, keep it:", markup=False, soft_wrap=True)
    typer.echo(key["key"])
    limits = ", ".join(f"{value} {unit}" for value, unit in ((key["rpm"], "rpm"), (key["tpm"], "tpm")) if value)
    console.print(f"  routes: {', '.join(key['routes']) if key['routes'] else 'all'}; limits: {limits or 'none'}",
                  markup=False, soft_wrap=True)


@app.command("list")
def list_keys(as_json: bool = JsonOption) -> None:
    """The project's keys (prefix, routes, limits, last use, revoked)."""
    from cli import resolve
    from cli.api_client import api_client, call, print_json

    with api_client() as client:
        rows = call(client, "GET", f"/api/projects/{resolve.project_id(client)}/api-keys").json()
    if as_json:
        print_json(rows)
        return
    print_table(("name", "prefix", "routes", "rpm", "tpm", "last used", "revoked", "id"),
                ((row["name"], row["prefix"], ", ".join(row["routes"]) if row["routes"] else "all",
                  str(row["rpm"] or "-"), str(row["tpm"] or "-"), row.get("last_used_at") or "-",
                  row.get("revoked_at") or "-", row["id"]) for row in rows))


@app.command()
def revoke(key: str = typer.Argument(..., help="key id, name or prefix"), as_json: bool = JsonOption) -> None:
    """Revoke a key; the gateway refuses it within a second. --json prints the key's row as listed afterwards."""
    from cli import resolve
    from cli.api_client import api_client, call, print_json

    with api_client() as client:
        project = resolve.project_id(client)
        row = resolve.key_id(client, project, key)
        call(client, "DELETE", f"/api/projects/{project}/api-keys/{row['id']}")
        after = next(r for r in call(client, "GET", f"/api/projects/{project}/api-keys").json() if r["id"] == row["id"])
    if as_json:
        print_json(after)
    else:
        _console().print(f"revoked {after['name']} ({after['prefix']}...)", markup=False, soft_wrap=True)
