"""Names to ids for the commands: what a user types (an id, or a name of this token's project) becomes the id the
API takes. Names are looked up through the API's own lists, so only the token's project is ever searched."""

from __future__ import annotations

from uuid import UUID

from cli.api_client import call, refuse


def _as_id(value: str) -> str | None:
    try:
        return str(UUID(value))
    except ValueError:
        return None


def endpoint_id(client, endpoint: str) -> str:
    """ENDPOINT as given when it is an id, else the id of the project's endpoint of that name."""
    found = _as_id(endpoint)
    if found:
        return found
    for row in call(client, "GET", "/api/endpoints").json():
        if row["name"] == endpoint and row["status"] != "DELETED":
            return row["id"]
    refuse(f"no endpoint named {endpoint!r} in this project (`bud endpoints list` shows them)")


def model_id(client, model: str, version: str | None = None) -> str:
    """MODEL as given when it is an id; else the id of the project's model of that name (and version, when the
    name has several). The API lists without a name filter, so this pages through the list."""
    found = _as_id(model)
    if found:
        return found
    matches: list[dict] = []
    params: dict = {"limit": 200}
    while True:
        page = call(client, "GET", "/api/models", params=params).json()
        matches += [m for m in page["items"] if m["name"] == model and version in (None, m["version"])]
        if not page.get("next_cursor"):
            break
        params["cursor"] = page["next_cursor"]
    if not matches:
        refuse(f"no model named {model!r}{f' with version {version!r}' if version else ''} in this project "
               "(`bud models list` shows them)")
    if len(matches) > 1:
        refuse(f"{model!r} has versions {', '.join(m['version'] for m in matches)}: choose one with --version")
    return matches[0]["id"]


def cluster_id(client, cluster: str | None) -> str:
    """CLUSTER as an id or a name; none given: the project's only cluster, else the one named "local"."""
    found = _as_id(cluster) if cluster else None
    if found:
        return found
    rows = call(client, "GET", "/api/clusters").json()
    if cluster is None:
        if len(rows) == 1:
            return rows[0]["id"]
        local = [row for row in rows if row["name"] == "local"]
        if local:
            return local[0]["id"]
        refuse("several clusters: choose one with --cluster (`bud clusters list` shows them)")
    for row in rows:
        if row["name"] == cluster:
            return row["id"]
    refuse(f"no cluster named {cluster!r} for this project (`bud clusters list` shows them)")


def project_id(client) -> str:
    """The token's project (the API lists only it)."""
    rows = call(client, "GET", "/api/projects").json()
    if not rows:
        refuse("this token sees no project")
    return rows[0]["id"]


def key_id(client, project: str, key: str) -> dict:
    """The key's row, by id, name (when unique) or prefix."""
    rows = call(client, "GET", f"/api/projects/{project}/api-keys").json()
    exact = [row for row in rows if row["id"] == _as_id(key)] or [row for row in rows if row["name"] == key] \
        or [row for row in rows if key.startswith(row["prefix"]) or row["prefix"] == key]
    if not exact:
        refuse(f"no inference key {key!r} in this project (`bud keys list` shows them)")
    if len(exact) > 1:
        refuse(f"several keys are named {key!r}: give its id (`bud keys list` shows them)")
    return exact[0]
