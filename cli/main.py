"""The `bud` command."""

from __future__ import annotations

import typer

from cli import dev, endpoints, keys, models, sim, usage

app = typer.Typer(help="Bud Foundry: deploy, scale and watch LLM endpoints.", no_args_is_help=True)
app.add_typer(dev.app, name="dev")
app.add_typer(models.app, name="models")
app.add_typer(endpoints.app, name="endpoints")
app.add_typer(keys.app, name="keys")
app.command("usage")(usage.usage)
app.add_typer(sim.app, name="sim", help="Predict serving performance and recommend configurations.")

if __name__ == "__main__":
    app()
