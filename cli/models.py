"""`bud models upload|list|show|make-example`: put a model folder in the registry and follow its security scan.
Heavy packages load inside the commands, so `bud --help` stays fast."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NoReturn

import typer

from cli.app import command_group
from cli.tables import console as _console

app = command_group("Upload, register and browse models.")
SETTLED = {"AVAILABLE", "QUARANTINED", "FAILED"}
UPLOAD_TIMEOUT_S = 600.0  # per read or write: the API answers a large file once S3 has assembled it


def declared_facts(folder: Path) -> tuple[str, int, int]:
    """(architecture, parameter_count, context_length) read from the folder, as the registration declares them."""
    from core.model_facts import ConfigError, architecture_from_config, load_config_json, supported_context_length
    from registry.safetensors_check import check_safetensors_file

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
    with _console().status("scanning (checksums, ClamAV, pickle and safetensors checks)...") as status:
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
    from rich.table import Table

    console = _console()
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
    import httpx
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    from cli.api_client import api_client, error_message
    from cli.upload import UploadError, model_files, upload_folder

    console = _console()
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


JsonOption = typer.Option(False, "--json", help="print the API's JSON answer instead of a table")


@app.command("list")
def list_models(
    architecture: str | None = None, status: str | None = None, license: str | None = None,
    benchmark: str | None = None, min_score: float | None = None, sort: str = "created_at", limit: int = 50,
    as_json: bool = JsonOption,
) -> None:
    """List models with the API's filters (--json: the API's page, items and next_cursor)."""
    from cli.api_client import api_client, call, print_json
    from cli.tables import print_table

    params = {k: v for k, v in dict(architecture=architecture, status=status, license=license, benchmark=benchmark,
                                    min_score=min_score, sort=sort, limit=limit).items() if v is not None}
    with api_client() as client:
        page = call(client, "GET", "/api/models", params=params).json()
    if as_json:
        print_json(page)
        return
    print_table(("name", "version", "architecture", "parameters", "license", "status", "id"),
                ((model["name"], model["version"], model["architecture"], f"{model['effective_parameter_count']:,}",
                  model.get("license") or "-", model["status"], model["id"]) for model in page["items"]))


def fail(message: str) -> NoReturn:
    _console().print(message, style="red", markup=False, highlight=False)  # API messages may hold [brackets]
    raise typer.Exit(1)


@app.command()
def show(
    model: str = typer.Argument(..., help="model id, or its name"),
    version: str | None = typer.Option(None, "--version", help="which version, when the name has several"),
    as_json: bool = JsonOption,
) -> None:
    """Facts, checksums and the scan report of one model, by id or by name."""
    import json

    from cli import resolve
    from cli.api_client import api_client, call, print_json

    with api_client() as client:
        row = call(client, "GET", f"/api/models/{resolve.model_id(client, model, version)}").json()
    if as_json:
        print_json(row)
        return
    print_report(row)
    _console().print_json(json.dumps({k: row[k] for k in ("facts", "files", "benchmarks")}))


@app.command("make-example")
def make_example(
    folder: Path = typer.Argument(..., file_okay=False, help="where to write the model folder (created; must be "
                                                             "empty or absent)"),
) -> None:
    """Write a small valid Llama-architecture model folder (config.json, safetensors weights that match it, a
    tokenizer, LICENSE) to try the platform with: `bud models upload DIR --name NAME` registers it."""
    from registry.example_model import write_tiny_llama

    if folder.exists() and any(folder.iterdir()):
        from cli.api_client import EXIT_USAGE, refuse

        refuse(f"{folder} is not empty: give a new folder", EXIT_USAGE)
    written = write_tiny_llama(folder)
    console = _console()
    console.print(f"wrote {len(written.files)} files ({written.total_bytes:,} bytes, "
                  f"{written.parameter_count:,} parameters) to {folder}", markup=False, soft_wrap=True)
    console.print(f"next: bud models upload {folder} --name my-model --license apache-2.0", markup=False,
                  soft_wrap=True)
