"""The `bud` command."""

from __future__ import annotations

import typer

from cli import dev, models

app = typer.Typer(help="Bud Foundry: deploy, scale and watch LLM endpoints.", no_args_is_help=True)
app.add_typer(dev.app, name="dev")
app.add_typer(models.app, name="models")

try:  # the performance model's commands (bud sim predict|recommend)
    from cli import sim

    app.add_typer(sim.app, name="sim", help="Predict serving performance and recommend configurations.")
except ImportError:  # pragma: no cover - only while budsim is being built
    pass

if __name__ == "__main__":
    app()
