"""The dashboard: static files calling the same /api as everything else, with links into the
Temporal Web UI. No data of its own, so it needs no auth here: every call it makes carries the user's token."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from api.deps import SettingsDep
from api.errors import not_found

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui")


@router.get("/ui")
async def dashboard() -> FileResponse:
    return FileResponse(DASHBOARD_DIR / "index.html", media_type="text/html")


@router.get("/ui/config.json")
async def dashboard_config(settings: SettingsDep) -> dict:
    return {"temporal_ui_url": f"http://127.0.0.1:{settings.temporal_ui_port}"}


@router.get("/ui/static/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:  # a fixed list: no path from the URL ever reaches the file system
        raise not_found("asset", name)
    return FileResponse(DASHBOARD_DIR / name, media_type=ASSETS[name])
