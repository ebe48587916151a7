"""How the CLI reaches the API: base URL and token from BUD_API_URL / BUD_TOKEN, else the dev stack's defaults."""

from __future__ import annotations

import os

import httpx
import typer

from core.settings import get_settings


def api_base_url() -> str:
    settings = get_settings()
    return os.environ.get("BUD_API_URL", f"http://127.0.0.1:{settings.api_port}")


def api_token() -> str:
    token = os.environ.get("BUD_TOKEN")
    if token:
        return token
    path = get_settings().admin_token_path
    if path.exists():
        return path.read_text().strip()
    raise typer.BadParameter("no API token: set BUD_TOKEN (or run `make up`, which writes .bud/admin-token)")


def api_client(timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=api_base_url(), headers={"Authorization": f"Bearer {api_token()}"}, timeout=timeout)


def error_message(response: httpx.Response) -> str:
    """The API's {error: {message}}, naming the fields its details name when the message does not; else the raw
    body."""
    try:
        error = response.json()["error"]
        message = error["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:300]}"
    details = error.get("details")
    fields = [details.get("field")] if isinstance(details, dict) else \
        [d.get("field") for d in details if isinstance(d, dict)] if isinstance(details, list) else []
    unnamed = [str(field) for field in fields if field and str(field) not in message]
    return f"{message} (field {', '.join(unnamed)})" if unnamed else message


# ------------------------------------------------------------------------------- shared by the endpoint commands
EXIT_REFUSED = 1  # the API refused (4xx) or could not be reached; its message is printed
EXIT_USAGE = 2  # a command line typer or the command itself refuses
EXIT_FAILED = 3  # a followed workflow ended FAILED


def refuse(message: str, code: int = EXIT_REFUSED):
    """Print MESSAGE on stderr (as is: API messages may hold [brackets]) and exit with CODE."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


def call(client: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response:
    """One request; a refusal (4xx/5xx) or an unreachable API prints the reason and exits 1."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TransportError as error:
        refuse(f"cannot reach the API at {api_base_url()} ({type(error).__name__}: {error})")
    if response.status_code >= 400:
        refuse(error_message(response))
    return response


def print_json(value) -> None:
    """The API's JSON, exactly, on stdout (for scripts: `--json`)."""
    import json

    typer.echo(json.dumps(value, indent=2))


def temporal_ui_url(workflow_id: str) -> str:
    """Where the dev stack's Temporal Web UI shows a workflow's history (BUD_TEMPORAL_UI_PORT, BUD_TEMPORAL_NAMESPACE)."""
    settings = get_settings()
    return (f"http://127.0.0.1:{settings.temporal_ui_port}/namespaces/{settings.temporal_namespace}"
            f"/workflows/{workflow_id}")
