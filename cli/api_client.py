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
    """The API's {error: {message}} or the raw body."""
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:300]}"
