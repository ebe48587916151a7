"""The API's contract for bad requests: 401 without a token, 422 naming the field, 404 for unknown or foreign ids."""

from __future__ import annotations

import re
import uuid

import httpx

from tests.helpers import unique


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


async def test_health_and_readiness(anon_api):
    assert (await anon_api.get("/healthz")).json() == {"status": "ok"}
    ready = await anon_api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "temporal": "ok"}


async def test_missing_and_invalid_tokens_are_401_json(anon_api):
    assert_error(await anon_api.get("/api/clusters"), 401, "unauthorized")
    bad = await anon_api.get("/api/clusters", headers={"Authorization": "Bearer bud_not-a-real-token"})
    error = assert_error(bad, 401, "unauthorized")
    assert "invalid" in error["message"]
    assert bad.headers["www-authenticate"] == "Bearer"


async def test_malformed_body_is_422_naming_the_field(api):
    response = await api.post("/api/clusters", json={"name": "gpu-farm", "kind": "local",
                                                     "gpus": [{"gpu_type": "nvidia-rtx-9999", "count": 4}]})
    error = assert_error(response, 422, "validation_error")
    assert error["details"][0]["field"] == "gpus.0.gpu_type"
    assert "nvidia-h100-80gb" in error["details"][0]["message"]  # tells the user what is accepted

    response = await api.post("/api/clusters", json={"name": "Bad Name!", "kind": "moon", "gpus": []})
    fields = {detail["field"] for detail in assert_error(response, 422, "validation_error")["details"]}
    assert fields == {"name", "kind", "gpus"}

    not_json = await api.post("/api/clusters", content=b"{nope", headers={"Content-Type": "application/json"})
    assert_error(not_json, 422, "validation_error")


async def test_kubernetes_cluster_needs_a_kubeconfig(api):
    response = await api.post("/api/clusters", json={"name": unique("k8s"), "kind": "kubernetes",
                                                     "gpus": [{"gpu_type": "h100_sxm", "count": 8}]})
    assert assert_error(response, 422, "validation_error")["details"][0]["field"] == "kubeconfig"


async def test_unknown_id_is_404_and_bad_id_is_422(api):
    assert_error(await api.get(f"/api/clusters/{uuid.uuid4()}"), 404, "not_found")
    assert assert_error(await api.get("/api/clusters/not-a-uuid"), 422, "validation_error")["details"][0]["field"] == "cluster_id"
    assert_error(await api.get("/api/no-such-route"), 404, "not_found")


async def test_projects_see_only_their_own_clusters(api, anon_api):
    created = await api.post("/api/projects", json={"name": unique("team")})
    assert created.status_code == 201, created.text
    team_token = created.json()["token"]
    team = {"Authorization": f"Bearer {team_token}"}

    # The admin's project registers a cluster; the other team cannot see it (404, not 403: no existence leak).
    admin_cluster = await api.post("/api/clusters", json={"name": unique("private"), "kind": "local",
                                                          "gpus": [{"gpu_type": "nvidia-l4", "count": 1}]})
    assert admin_cluster.status_code == 202, admin_cluster.text
    cluster_id = admin_cluster.json()["id"]
    assert_error(await anon_api.get(f"/api/clusters/{cluster_id}", headers=team), 404, "not_found")
    visible = {c["id"] for c in (await anon_api.get("/api/clusters", headers=team)).json()}
    assert cluster_id not in visible

    # Its projects list holds only itself, and it may not create projects.
    names = [p["name"] for p in (await anon_api.get("/api/projects", headers=team)).json()]
    assert names == [created.json()["name"]]
    assert_error(await anon_api.post("/api/projects", json={"name": unique("x")}, headers=team), 403, "forbidden")


async def test_duplicate_cluster_name_is_409(api):
    body = {"name": unique("dup"), "kind": "local", "gpus": [{"gpu_type": "nvidia-a10g", "count": 2}]}
    assert (await api.post("/api/clusters", json=body)).status_code == 202
    assert_error(await api.post("/api/clusters", json=body), 409, "conflict")


async def test_duplicate_project_is_409(api):
    name = unique("proj")
    assert (await api.post("/api/projects", json={"name": name})).status_code == 201
    assert_error(await api.post("/api/projects", json={"name": name}), 409, "conflict")


async def test_openapi_docs_are_served(anon_api):
    spec = (await anon_api.get("/openapi.json")).json()
    assert "/api/clusters" in spec["paths"]
    assert (await anon_api.get("/docs")).status_code == 200


async def test_every_path_answers_an_undeclared_method_with_405_and_its_allowed_methods(api, anon_api):
    spec = (await anon_api.get("/openapi.json")).json()
    for path, item in spec["paths"].items():
        declared = {method.upper() for method in item}
        url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - declared):
            response = await api.request(method, url)
            error = assert_error(response, 405, "method_not_allowed")
            assert set(response.headers["allow"].split(", ")) == declared, (method, path)
            assert method in error["message"]
