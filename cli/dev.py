"""`bud dev up|status|down`: run the embedded stack on this machine."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING

import typer

from cli.app import command_group
from cli.tables import console as _console

if TYPE_CHECKING:  # the stack (and the Kubernetes client under it) loads inside the commands: `--help` stays fast
    from devstack.stack import Stack

app = command_group("Run the embedded stack (Temporal, PostgreSQL, S3, clamd, Prometheus, API, workers).")


def _print_admin_token(stack: Stack) -> None:
    console = _console()
    token_file = stack.settings.admin_token_path
    shown_marker = stack.state / ".admin-token-shown"
    if token_file.exists() and not shown_marker.exists():
        console.print(f"\n[bold]First admin token[/bold] (saved in {token_file}, shown once):\n  {token_file.read_text().strip()}")
        shown_marker.touch()
    elif token_file.exists():
        console.print(f"\nAdmin token: {token_file}")
    key_file = stack.settings.state_dir / "inference-key"
    if key_file.exists():
        console.print(f"Inference key for the gateway: {key_file} "
                      "(send it as `Authorization: Bearer $(cat .bud/inference-key)`)")


@app.command()
def up(
    detach: bool = typer.Option(False, "--detach", "-d", help="start in the background and return"),
    kube: bool = typer.Option(
        False, "--kube", help="also start a local Kubernetes cluster with fake GPU nodes, registered as a cluster "
                              "(`bud clusters list` names it)"
    ),
) -> None:
    """Start every part, wait for each to be healthy, print its URL. Ctrl-C stops everything (unless --detach)."""
    from core.login_links import CODE_TTL_S, issue_code
    from core.processes import StartupError
    from core.settings import get_settings
    from devstack.kube_stack import CLUSTER_NAME
    from devstack.stack import Stack

    console = _console()
    stack = Stack(get_settings(), kube=kube)
    console.print(f"Starting the Bud Foundry stack (state in {stack.state})")
    try:
        stack.up(console.print)
    except (StartupError, OSError):
        console.print("[red]The stack did not start; see the logs in[/red] " + str(stack.state / "logs"))
        raise typer.Exit(1) from None
    console.print("\n" + "\n".join(stack.summary()))
    if kube:
        console.print(f"Kubernetes export KUBECONFIG={stack.kube.kubeconfig_path}  (cluster {CLUSTER_NAME}; try kubectl get nodes)")
    _print_admin_token(stack)
    console.print(f"Dashboard sign-in link (works once, for {CODE_TTL_S // 60} minutes): "
                  f"http://127.0.0.1:{stack.settings.api_port}/ui/login?code={issue_code(stack.settings.state_dir)}")
    if detach:
        console.print("\nRunning in the background: `bud dev status`, `bud dev down`.")
        return
    console.print("\nPress Ctrl-C to stop.")
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    console.print("\nStopping...")
    stack.down(console.print)


@app.command()
def status() -> None:
    """Show each part: running or not, healthy or not, and its URL."""
    from rich.table import Table

    from core.settings import get_settings
    from devstack.stack import Stack

    console = _console()
    stack = Stack(get_settings())
    table = Table("part", "state", "url")
    rows = stack.status()
    for name, state, url in rows:
        colour = "green" if state.startswith("healthy") else "red"
        table.add_row(name, f"[{colour}]{state}[/{colour}]", url)
    console.print(table)
    if not all(state.startswith("healthy") for _, state, _ in rows):
        raise typer.Exit(1)


@app.command()
def down() -> None:
    """Stop every part this stack started (by the pids it recorded)."""
    from core.settings import get_settings
    from devstack.stack import Stack

    Stack(get_settings()).down(_console().print)
