"""The dashboard is served by the API, parses as JavaScript, and calls only API routes that exist."""

from __future__ import annotations

import re
import shutil
import subprocess

from api.routers.dashboard import DASHBOARD_DIR

API_CALL = re.compile(r'api\("(GET|POST|PUT|DELETE)", [`"]([^`"]+)[`"]')


def _route_pattern(path: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")


async def test_dashboard_pages_and_assets_are_served(anon_api):
    page = await anon_api.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'data-tab="models"' in page.text and "/ui/static/app.js" in page.text
    script = await anon_api.get("/ui/static/app.js")
    assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
    assert (await anon_api.get("/ui/static/index.html")).status_code == 404  # only the listed assets
    config = (await anon_api.get("/ui/config.json")).json()
    assert config["temporal_ui_url"].startswith("http://127.0.0.1:")
    assert (await anon_api.get("/", follow_redirects=False)).headers["location"] == "/ui"


def test_dashboard_script_is_valid_javascript():
    node = shutil.which("node")
    assert node, "Node.js is part of the machine image (README: tests need it for this check)"
    result = subprocess.run([node, "--check", str(DASHBOARD_DIR / "app.js")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_api_call_of_the_dashboard_exists(app):
    routes = [({method.upper() for method in operations}, _route_pattern(path))
              for path, operations in app.openapi()["paths"].items()]
    calls = API_CALL.findall((DASHBOARD_DIR / "app.js").read_text())
    assert len(calls) >= 10
    for method, template in calls:
        path = re.sub(r"\$\{[^}]+\}", "x", template).split("?")[0]
        assert any(method in methods and pattern.match(path) for methods, pattern in routes), f"{method} {template}"
