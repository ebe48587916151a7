"""`bud models upload|list|show`: put a model folder in the registry and follow its security scan."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NoReturn
from uuid import UUID

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from cli.api_client import api_client, error_message
from cli.upload import UploadError, model_files, upload_folder
from core.model_facts import ConfigError, architecture_from_config, load_config_json, supported_context_length
from registry.safetensors_check import check_safetensors_file

app = typer.Typer(help="Upload, register and browse models.", no_args_is_help=True)
console = Console()
SETTLED = {"AVAILABLE", "QUARANTINED", "FAILED"}
UPLOAD_TIMEOUT_S = 600.0  # per read or write: the API answers a large file once S3 has assembled it


def declared_facts(folder: Path) -> tuple[str, int, int]:
    """(architecture, parameter_count, context_length) read from the folder, as the registration declares them."""
    config_path = folder / "config.json"
    if not config_path.exists():
        raise typer.BadParameter(f"{config_path} not found: a model folder needs config.json", param_hint="DIR")
    shards = sorted(folder.glob("*.safetensors"))
    parameters = sum(check_safetensors_file(path).parameter_count for path in shards) if shards else 0
    try:
        config = load_config_json(config_path.read_bytes())
        # the weights' count, or the config's estimate without safetensors or when the weights are packed (4/8-bit)
        facts = architecture_from_config(config, parameters or None)
        context = supported_context_length(config)
    except ConfigError as error:
        raise typer.BadParameter(str(error), param_hint="DIR") from error
    return facts.model_type, facts.parameter_count, context


def follow_scan(client, model_id: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    with console.status("scanning (checksums, ClamAV, pickle and safetensors checks)...") as status:
        while True:
            response = client.get(f"/api/models/{model_id}")
            response.raise_for_status()
            model = response.json()
            progress = (model.get("progress") or {})
            if progress:
                status.update(f"scanning: {progress.get('step')} ({progress.get('files_done')}/{progress.get('files_total')} checks)")
            if model["status"] in SETTLED or time.monotonic() > deadline:
                return model
            time.sleep(0.5)


def print_report(model: dict) -> None:
    colour = {"AVAILABLE": "green", "QUARANTINED": "red", "FAILED": "red"}.get(model["status"], "yellow")
    console.print(f"[bold {colour}]{model['status']}[/]  {model['name']} {model['version']}  id={model['id']}")
    if model.get("error"):
        console.print(f"  reason: {model['error']}")
    report = model.get("scan_report") or {}
    findings = report.get("findings", [])
    if findings:
        table = Table("file", "check", "finding", "blocking")
        for finding in findings:
            table.add_row(finding.get("file") or "-", finding["check"], finding["message"], "yes" if finding["blocking"] else "note")
        console.print(table)
    if report.get("quarantine_prefix"):
        console.print(f"  objects moved to {report['quarantine_prefix']}")


@app.command()
def upload(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="model folder (config.json, *.safetensors, tokenizer files)"),
    name: str = typer.Option(..., "--name", help="registry name"),
    version: str = typer.Option("1", "--version"),
    license: str | None = typer.Option(None, "--license", help="license id, e.g. apache-2.0"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="follow the scan until it settles"),
    timeout_s: float = typer.Option(3600, "--timeout", help="seconds to follow the scan"),
) -> None:
    """Upload FOLDER through the API (files streamed, several at once, unchanged files skipped) into this token's
    project, register it, and follow its scan. Only the token is needed: the platform holds the S3 credentials."""
    architecture, parameters, context = declared_facts(folder)
    total = sum(f.size for f in model_files(folder))
    with api_client(timeout=UPLOAD_TIMEOUT_S) as client, \
            Progress(TextColumn("[bold]upload"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                     TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("upload", total=total)
        try:
            outcome = upload_folder(client, folder, name, version, on_bytes=lambda n: progress.advance(task, n),
                                    on_file=lambda f, what: progress.console.print(f"  {f}: {what}", markup=False))
        except UploadError as error:
            progress.stop()
            fail(f"upload refused: {error}")
        except httpx.TransportError as error:
            progress.stop()
            fail(f"upload failed: cannot reach the API ({type(error).__name__}: {error})")
    console.print(f"uploaded {len(outcome.uploaded)} file(s), skipped {len(outcome.skipped)} unchanged")
    with api_client() as client:
        response = client.post("/api/models", json={
            "name": name, "version": version, "architecture": architecture, "parameter_count": parameters,
            "context_length": context, "source_path": outcome.source_path, "license": license,
        })
        if response.status_code != 202:
            fail(f"registration refused: {error_message(response)}")
        model_id = response.json()["id"]
        console.print(f"registered {name} {version} (id {model_id}); workflow {response.json()['workflow_id']}")
        if not wait:
            return
        model = follow_scan(client, model_id, timeout_s)
    print_report(model)
    if model["status"] != "AVAILABLE":
        raise typer.Exit(2)


@app.command("list")
def list_models(
    architecture: str | None = None, status: str | None = None, license: str | None = None,
    benchmark: str | None = None, min_score: float | None = None, sort: str = "created_at", limit: int = 50,
) -> None:
    """List models with the API's filters."""
    params = {k: v for k, v in dict(architecture=architecture, status=status, license=license, benchmark=benchmark,
                                    min_score=min_score, sort=sort, limit=limit).items() if v is not None}
    with api_client() as client:
        response = client.get("/api/models", params=params)
    if response.status_code != 200:
        console.print(f"[red]{error_message(response)}[/red]")
        raise typer.Exit(1)
    table = Table("id", "name", "version", "architecture", "parameters", "license", "status")
    for model in response.json()["items"]:
        table.add_row(model["id"], model["name"], model["version"], model["architecture"],
                      f"{model['effective_parameter_count']:,}", model.get("license") or "-", model["status"])
    console.print(table)


def fail(message: str) -> NoReturn:
    console.print(message, style="red", markup=False, highlight=False)  # API messages may hold [brackets]
    raise typer.Exit(1)


def resolve_model_id(client, model: str, version: str | None) -> str:
    """MODEL as given when it is an id; else the id of the project's model of that name (and version: a name
    repeats only across versions). The API lists without a name filter, so this pages through the list."""
    try:
        return str(UUID(model))
    except ValueError:
        pass
    matches: list[dict] = []
    params: dict = {"limit": 200}
    while True:
        response = client.get("/api/models", params=params)
        if response.status_code != 200:
            fail(error_message(response))
        page = response.json()
        matches += [m for m in page["items"] if m["name"] == model and version in (None, m["version"])]
        if not page.get("next_cursor"):
            break
        params["cursor"] = page["next_cursor"]
    if not matches:
        fail(f"no model named {model!r}{f' with version {version!r}' if version else ''} in this project "
             "(`bud models list` shows them)")
    if len(matches) > 1:
        versions = ", ".join(m["version"] for m in matches)
        fail(f"{model!r} has versions {versions}: choose one with --version")
    return matches[0]["id"]


@app.command()
def show(
    model: str = typer.Argument(..., help="model id, or its name"),
    version: str | None = typer.Option(None, "--version", help="which version, when the name has several"),
) -> None:
    """Facts, checksums and the scan report of one model, by id or by name."""
    with api_client() as client:
        response = client.get(f"/api/models/{resolve_model_id(client, model, version)}")
    if response.status_code != 200:
        fail(error_message(response))
    print_report(response.json())
    console.print_json(json.dumps({k: response.json()[k] for k in ("facts", "files", "benchmarks")}))
