"""The `bud` command. Each group loads its heavy packages inside its commands, so `bud ... --help` answers at once."""

from __future__ import annotations

from cli import clusters, dev, endpoints, keys, models, routes, sim, usage
from cli.app import command_group

# No --install-completion/--show-completion: typer coerces those options through pydantic on every subcommand's
# start, a second before `bud endpoints --help` could answer.
app = command_group("Bud Foundry: deploy, scale and watch LLM endpoints.", add_completion=False)
app.add_typer(dev.app, name="dev")
app.add_typer(models.app, name="models")
app.add_typer(clusters.app, name="clusters")
app.add_typer(endpoints.app, name="endpoints")
app.add_typer(routes.app, name="routes")
app.add_typer(keys.app, name="keys")
app.command("usage")(usage.usage)
app.add_typer(sim.app, name="sim", help="Predict serving performance and recommend configurations.")

if __name__ == "__main__":
    app()
