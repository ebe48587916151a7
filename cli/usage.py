"""`bud usage`: requests, errors, tokens and cost of the token's project at the gateway, per group."""

from __future__ import annotations

import typer

GROUPS = ("project", "key", "route", "backend")


def usage(
    group_by: str = typer.Option("project", "--group-by", help="project, key, route or backend"),
    window_from: str | None = typer.Option(None, "--from", help="ISO time (default: 24 h before --to)"),
    to: str | None = typer.Option(None, "--to", help="ISO time, exclusive (default: now)"),
    step: int | None = typer.Option(None, "--step", help="seconds per bucket, for a time series (--json shows it)"),
    as_json: bool = typer.Option(False, "--json", help="print the API's JSON answer instead of a table"),
) -> None:
    """Usage and realized cost per project, key, route or backend."""
    from cli.api_client import EXIT_USAGE, api_client, call, print_json, refuse

    if group_by not in GROUPS:
        refuse(f"--group-by is one of {', '.join(GROUPS)}", EXIT_USAGE)
    params = {k: v for k, v in {"group_by": group_by, "from": window_from, "to": to, "step": step}.items()
              if v is not None}
    with api_client() as client:
        report = call(client, "GET", "/api/usage", params=params).json()
    if as_json:
        print_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(group_by, "requests", "errors", "prompt tok", "completion tok", "cost $", "$/Mtok",
                  title=f"usage {report['from']} .. {report['to']}")

    def figures(row: dict) -> list[str]:
        per_mtok = row["realized_usd_per_mtok"]
        return [f"{row['requests']:,}", f"{row['errors']:,}", f"{row['prompt_tokens']:,}",
                f"{row['completion_tokens']:,}", f"{row['cost_usd']:.4f}",
                f"{per_mtok:.4f}" if per_mtok is not None else "-"]

    for group in report["groups"]:
        table.add_row(group.get("name") or group["group"] or "(no key)", *figures(group))
    table.add_row("[bold]total[/]", *figures(report["totals"]))
    console = Console(highlight=False)
    console.print(table)
    if report["unattributed_gpu_usd"]:
        console.print(f"idle GPU time no request used: ${report['unattributed_gpu_usd']:.4f}")
