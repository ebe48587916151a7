"""API tokens have a role, may expire, can be revoked, record when they were last used, and stay in their project."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from tests.helpers import unique


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def new_project(api) -> tuple[str, str]:
    created = await api.post("/api/projects", json={"name": unique("team")})
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["token"]


async def test_a_read_only_token_looks_but_does_not_change(api, anon_api):
    project, member = await new_project(api)
    minted = await anon_api.post(f"/api/projects/{project}/tokens", json={"name": "dashboard", "role": "read-only"},
                                 headers=bearer(member))
    assert minted.status_code == 201, minted.text
    reader = bearer(minted.json()["token"])
    assert (await anon_api.get("/api/clusters", headers=reader)).status_code == 200
    refused = await anon_api.post("/api/clusters", json={"name": unique("c"), "kind": "local",
                                                        "gpus": [{"gpu_type": "nvidia-l4", "count": 1}]}, headers=reader)
    assert refused.status_code == 403 and "read-only" in refused.json()["error"]["message"]


async def test_only_an_admin_mints_admin_tokens(api, anon_api):
    project, member = await new_project(api)
    refused = await anon_api.post(f"/api/projects/{project}/tokens", json={"name": "x", "role": "admin"},
                                  headers=bearer(member))
    assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "role"
    assert (await api.post(f"/api/projects/{project}/tokens", json={"name": "ops", "role": "admin"})).status_code == 201


async def test_an_expired_token_is_refused(api, anon_api):
    project, member = await new_project(api)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    refused = await anon_api.post(f"/api/projects/{project}/tokens", json={"name": "old", "expires_at": past},
                                  headers=bearer(member))
    assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "expires_at"
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    minted = await anon_api.post(f"/api/projects/{project}/tokens", json={"name": "brief", "expires_at": soon},
                                 headers=bearer(member))
    assert minted.status_code == 201, minted.text
    brief = bearer(minted.json()["token"])
    assert (await anon_api.get("/api/clusters", headers=brief)).status_code == 200
    await asyncio.sleep(2.5)
    expired = await anon_api.get("/api/clusters", headers=brief)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "unauthorized"


async def test_a_revoked_token_is_refused_and_the_list_never_shows_secrets(api, anon_api):
    project, member = await new_project(api)
    minted = (await anon_api.post(f"/api/projects/{project}/tokens", json={"name": "ci"},
                                  headers=bearer(member))).json()
    ci = bearer(minted["token"])
    assert (await anon_api.get("/api/clusters", headers=ci)).status_code == 200
    listed = (await anon_api.get(f"/api/projects/{project}/tokens", headers=bearer(member))).json()
    assert minted["token"] not in str(listed) and member not in str(listed)
    mine = next(t for t in listed if t["id"] == minted["id"])
    assert mine["last_used_at"] is not None and mine["revoked_at"] is None and mine["role"] == "member"
    for _ in range(2):  # idempotent
        assert (await anon_api.delete(f"/api/projects/{project}/tokens/{minted['id']}",
                                      headers=bearer(member))).status_code == 204
    assert (await anon_api.get("/api/clusters", headers=ci)).status_code == 401
    listed = (await anon_api.get(f"/api/projects/{project}/tokens", headers=bearer(member))).json()
    assert next(t for t in listed if t["id"] == minted["id"])["revoked_at"] is not None


async def test_another_project_can_neither_see_nor_revoke_a_projects_tokens(api, anon_api):
    project, member = await new_project(api)
    other_project, stranger = await new_project(api)
    minted = (await anon_api.post(f"/api/projects/{project}/tokens", json={"name": "ci"},
                                  headers=bearer(member))).json()
    for call in (anon_api.get(f"/api/projects/{project}/tokens", headers=bearer(stranger)),
                 anon_api.delete(f"/api/projects/{project}/tokens/{minted['id']}", headers=bearer(stranger)),
                 anon_api.post(f"/api/projects/{project}/tokens", json={"name": "x"}, headers=bearer(stranger))):
        assert (await call).status_code == 404
    assert (await anon_api.get("/api/clusters", headers=bearer(minted["token"]))).status_code == 200
    # another project's token id, revoked through one's own project: not found, nothing revoked
    theirs = (await anon_api.post(f"/api/projects/{other_project}/tokens", json={"name": "theirs"},
                                  headers=bearer(stranger))).json()
    assert (await anon_api.delete(f"/api/projects/{project}/tokens/{theirs['id']}",
                                  headers=bearer(member))).status_code == 404
    assert (await anon_api.delete(f"/api/projects/{project}/tokens/{uuid.uuid4()}",
                                  headers=bearer(member))).status_code == 404
    assert (await anon_api.get("/api/clusters", headers=bearer(theirs["token"]))).status_code == 200
