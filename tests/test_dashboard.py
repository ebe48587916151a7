"""The dashboard is served by the API, parses as JavaScript, calls only API routes that exist, and trades a one-time
sign-in code for a token once."""

from __future__ import annotations

import re
import shutil
import subprocess

from api.routers.dashboard import DASHBOARD_DIR
from core.login_links import issue_code

API_CALL = re.compile(r'api\("(GET|POST|PUT|DELETE)", [`"]([^`"]+)[`"]')


def _route_pattern(path: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")


async def test_dashboard_pages_and_assets_are_served(anon_api):
    page = await anon_api.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'data-tab="models"' in page.text and "/ui/static/app.js" in page.text
    for name in ("app.js", "charts.js"):
        script = await anon_api.get(f"/ui/static/{name}")
        assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
    assert (await anon_api.get("/ui/login?code=anything")).text == page.text  # the page trades the code itself
    assert (await anon_api.get("/ui/static/index.html")).status_code == 404  # only the listed assets
    config = (await anon_api.get("/ui/config.json")).json()
    assert config["temporal_ui_url"].startswith("http://127.0.0.1:")
    assert (await anon_api.get("/", follow_redirects=False)).headers["location"] == "/ui"


def test_dashboard_script_is_valid_javascript():
    node = shutil.which("node")
    assert node, "Node.js is part of the machine image (README: tests need it for this check)"
    for name in ("app.js", "charts.js"):
        result = subprocess.run([node, "--check", str(DASHBOARD_DIR / name)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_every_api_call_of_the_dashboard_exists(app):
    routes = [({method.upper() for method in operations}, _route_pattern(path))
              for path, operations in app.openapi()["paths"].items()]
    calls = API_CALL.findall((DASHBOARD_DIR / "app.js").read_text())
    assert len(calls) >= 10
    for method, template in calls:
        path = re.sub(r"\$\{[^}]+\}", "x", template).split("?")[0]
        assert any(method in methods and pattern.match(path) for methods, pattern in routes), f"{method} {template}"


async def test_a_sign_in_code_gives_a_working_token_once(anon_api, settings):
    code = issue_code(settings.state_dir)
    signed_in = await anon_api.post("/ui/login", json={"code": code})
    assert signed_in.status_code == 200, signed_in.text
    token = signed_in.json()["token"]
    projects = await anon_api.get("/api/projects", headers={"Authorization": f"Bearer {token}"})
    assert projects.status_code == 200 and "default" in [p["name"] for p in projects.json()]
    again = await anon_api.post("/ui/login", json={"code": code})
    assert again.status_code == 401 and again.json()["error"]["message"].startswith("code: ")


async def test_expired_and_malformed_sign_in_codes_are_refused(anon_api, settings):
    expired = issue_code(settings.state_dir, ttl_s=-1)
    refused = await anon_api.post("/ui/login", json={"code": expired})
    assert refused.status_code == 401 and "expired" in refused.json()["error"]["message"]
    unknown = await anon_api.post("/ui/login", json={"code": "x" * 32})
    assert unknown.status_code == 401
    malformed = await anon_api.post("/ui/login", json={"code": "../../admin-token"})
    assert malformed.status_code == 422 and malformed.json()["error"]["message"].startswith("code: ")
    too_long = await anon_api.post("/ui/login", json={"code": "a" * 201})
    assert too_long.status_code == 422 and "code" in too_long.json()["error"]["message"]


async def test_metrics_series_refuses_bad_ranges_and_unknown_endpoints(api):
    unknown = "00000000-0000-0000-0000-000000000000"
    assert (await api.get(f"/api/endpoints/{unknown}/metrics/series")).status_code == 404
    for minutes in (0, 1441, "x"):
        refused = await api.get(f"/api/endpoints/{unknown}/metrics/series?minutes={minutes}")
        assert refused.status_code == 422 and "minutes" in refused.json()["error"]["message"], refused.text
