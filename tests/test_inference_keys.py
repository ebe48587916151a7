"""Inference API keys through the API: shown once, listed by prefix, bounded, revocable, kept in their project; the
first one written beside the admin token; a project's monthly token quota set by an admin."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta

from core.inference_keys import digest
from tests.helpers import unique
from tests.inference_helpers import bearer, new_project


async def test_a_key_is_shown_once_and_listed_by_its_prefix(api, anon_api, db_pool):
    project, member = await new_project(api)
    created = await anon_api.post(f"/api/projects/{project}/api-keys", json={"name": "chat-app", "rpm": 60,
                                                                           "tpm": 100_000}, headers=bearer(member))
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith(body["prefix"] + "-") and body["prefix"].startswith("bud-sk-") and len(body["prefix"]) == 15
    assert body["routes"] is None and body["rpm"] == 60 and body["tpm"] == 100_000 and body["revoked_at"] is None
    async with db_pool.acquire() as conn:
        stored = await conn.fetchrow("SELECT digest, project_id FROM inference_keys WHERE id = $1", body["id"])
    assert stored["digest"] == digest(key) and str(stored["project_id"]) == project
    listed = await anon_api.get(f"/api/projects/{project}/api-keys", headers=bearer(member))
    assert listed.status_code == 200
    (mine,) = listed.json()
    assert mine["prefix"] == body["prefix"] and mine["last_used_at"] is None
    assert key not in listed.text and stored["digest"] not in listed.text and "key" not in mine


async def test_revoking_a_key_records_when_and_is_idempotent(api, anon_api, db_pool):
    project, member = await new_project(api)
    created = (await anon_api.post(f"/api/projects/{project}/api-keys", json={"name": "ci"},
                                   headers=bearer(member))).json()
    async with db_pool.acquire() as conn:
        before = await conn.fetchval("SELECT updated_at FROM inference_keys WHERE id = $1", created["id"])
    for _ in range(2):
        revoked = await anon_api.delete(f"/api/projects/{project}/api-keys/{created['id']}", headers=bearer(member))
        assert revoked.status_code == 204
    (listed,) = (await anon_api.get(f"/api/projects/{project}/api-keys", headers=bearer(member))).json()
    assert listed["revoked_at"] is not None
    async with db_pool.acquire() as conn:
        after = await conn.fetchval("SELECT updated_at FROM inference_keys WHERE id = $1", created["id"])
    assert after > before  # the gateway's reload marker moved
    missing = await anon_api.delete(f"/api/projects/{project}/api-keys/00000000-0000-0000-0000-000000000000",
                                    headers=bearer(member))
    assert missing.status_code == 404


async def test_key_bounds_are_refused_with_the_field_named(api, anon_api):
    project, member = await new_project(api)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    cases = [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "k", "rpm": 0}, "rpm"),
        ({"name": "k", "tpm": 10**9 + 1}, "tpm"),
        ({"name": "k", "rpm": -5}, "rpm"),
        ({"name": "k", "routes": ["r"] * 101}, "routes"),
        ({"name": "k", "routes": [""]}, "routes.0"),
        ({"name": "k", "routes": ["x" * 101]}, "routes.0"),
        ({"name": "k", "expires_at": past}, "expires_at"),
        ({"name": "k", "expires_at": "2999-01-01T00:00:00"}, "expires_at"),  # no time zone
        ({"name": "k", "routes": ["no-such-route"]}, "routes"),
        ({"name": "k", "role": "admin"}, "role"),
    ]
    for body, field in cases:
        refused = await anon_api.post(f"/api/projects/{project}/api-keys", json=body, headers=bearer(member))
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["error"]["details"][0]["field"] == field, (body, refused.text)
    unknown = await anon_api.post(f"/api/projects/{project}/api-keys", json={"name": "k", "routes": ["no-such-route"]},
                                  headers=bearer(member))
    assert "no-such-route" in unknown.json()["error"]["message"]
    assert (await anon_api.get(f"/api/projects/{project}/api-keys", headers=bearer(member))).json() == []


async def test_a_key_may_be_limited_to_the_projects_routes(api, anon_api, db_pool):
    project, member = await new_project(api)
    other_project, _ = await new_project(api)
    mine, theirs = unique("chat"), unique("chat")
    async with db_pool.acquire() as conn:
        await conn.execute("INSERT INTO routes (name, project_id) VALUES ($1, $2), ($3, $4)",
                           mine, project, theirs, other_project)
    created = await anon_api.post(f"/api/projects/{project}/api-keys", json={"name": "k", "routes": [mine, mine]},
                                  headers=bearer(member))
    assert created.status_code == 201 and created.json()["routes"] == [mine]
    refused = await anon_api.post(f"/api/projects/{project}/api-keys", json={"name": "k", "routes": [mine, theirs]},
                                  headers=bearer(member))
    assert refused.status_code == 422 and theirs in refused.json()["error"]["message"]


async def test_an_expiring_key_keeps_its_expiry(api, anon_api):
    project, member = await new_project(api)
    soon = datetime.now(UTC) + timedelta(hours=1)
    created = await anon_api.post(f"/api/projects/{project}/api-keys",
                                  json={"name": "brief", "expires_at": soon.isoformat()}, headers=bearer(member))
    assert created.status_code == 201
    assert abs(datetime.fromisoformat(created.json()["expires_at"]) - soon) < timedelta(seconds=1)


async def test_read_only_tokens_list_keys_but_do_not_create_or_revoke(api, anon_api):
    project, member = await new_project(api)
    key = (await anon_api.post(f"/api/projects/{project}/api-keys", json={"name": "k"},
                               headers=bearer(member))).json()
    reader = (await anon_api.post(f"/api/projects/{project}/tokens", json={"name": "r", "role": "read-only"},
                                  headers=bearer(member))).json()["token"]
    assert (await anon_api.get(f"/api/projects/{project}/api-keys", headers=bearer(reader))).status_code == 200
    assert (await anon_api.post(f"/api/projects/{project}/api-keys", json={"name": "k2"},
                                headers=bearer(reader))).status_code == 403
    assert (await anon_api.delete(f"/api/projects/{project}/api-keys/{key['id']}",
                                  headers=bearer(reader))).status_code == 403


async def test_another_project_can_neither_see_nor_create_nor_revoke_a_projects_keys(api, anon_api):
    project, member = await new_project(api)
    _, stranger = await new_project(api)
    key = (await anon_api.post(f"/api/projects/{project}/api-keys", json={"name": "k"},
                               headers=bearer(member))).json()
    assert (await anon_api.get(f"/api/projects/{project}/api-keys", headers=bearer(stranger))).status_code == 404
    assert (await anon_api.post(f"/api/projects/{project}/api-keys", json={"name": "x"},
                                headers=bearer(stranger))).status_code == 404
    assert (await anon_api.delete(f"/api/projects/{project}/api-keys/{key['id']}",
                                  headers=bearer(stranger))).status_code == 404
    (still,) = (await anon_api.get(f"/api/projects/{project}/api-keys", headers=bearer(member))).json()
    assert still["revoked_at"] is None
    # An admin manages any project's keys.
    assert (await api.get(f"/api/projects/{project}/api-keys")).status_code == 200


async def test_the_first_inference_key_lies_beside_the_admin_token_and_a_restart_keeps_it(settings, app, db_pool,
                                                                                         tmp_path):
    from api.bootstrap import ensure_inference_key

    path = settings.state_dir / "inference-key"
    key = path.read_text().strip()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    async with db_pool.acquire() as conn:
        row = await conn.fetchrow("SELECT k.revoked_at, p.name FROM inference_keys k JOIN projects p "
                                  "ON p.id = k.project_id WHERE k.digest = $1", digest(key))
    assert row["name"] == "default" and row["revoked_at"] is None
    assert await ensure_inference_key(db_pool, settings) is None
    assert path.read_text().strip() == key

    elsewhere = settings.model_copy(update={"state_dir": tmp_path})  # another checkout on the same database
    first = await ensure_inference_key(db_pool, elsewhere)
    assert first and (tmp_path / "inference-key").read_text().strip() == first
    assert await ensure_inference_key(db_pool, elsewhere) is None
    async with db_pool.acquire() as conn:  # revoked: the next start writes a new one
        await conn.execute("UPDATE inference_keys SET revoked_at = now() WHERE digest = $1", digest(first))
    fresh = await ensure_inference_key(db_pool, elsewhere)
    assert fresh and fresh != first and (tmp_path / "inference-key").read_text().strip() == fresh
    assert stat.S_IMODE(os.stat(tmp_path / "inference-key").st_mode) == 0o600
    (tmp_path / "inference-key").write_text("bud-sk-garbage\n")
    assert await ensure_inference_key(db_pool, elsewhere) not in (None, fresh)


async def test_an_admin_sets_a_projects_monthly_quota(api, anon_api, db_pool):
    project, member = await new_project(api)
    async with db_pool.acquire() as conn:
        before = await conn.fetchval("SELECT updated_at FROM projects WHERE id = $1", project)
    set_quota = await api.patch(f"/api/projects/{project}", json={"monthly_token_quota": 5_000_000})
    assert set_quota.status_code == 200, set_quota.text
    assert set_quota.json()["monthly_token_quota"] == 5_000_000
    async with db_pool.acquire() as conn:
        row = await conn.fetchrow("SELECT monthly_token_quota, updated_at FROM projects WHERE id = $1", project)
    assert row["monthly_token_quota"] == 5_000_000 and row["updated_at"] > before
    shown = await anon_api.get(f"/api/projects/{project}/quota", headers=bearer(member))
    assert shown.status_code == 200 and shown.json()["monthly_token_quota"] == 5_000_000
    refused = await anon_api.patch(f"/api/projects/{project}", json={"monthly_token_quota": 1},
                                   headers=bearer(member))
    assert refused.status_code == 403
    for bad in (0, -1, 10**16, "many"):
        response = await api.patch(f"/api/projects/{project}", json={"monthly_token_quota": bad})
        assert response.status_code == 422 and response.json()["error"]["details"][0]["field"] == "monthly_token_quota"
    cleared = await api.patch(f"/api/projects/{project}", json={"monthly_token_quota": None})
    assert cleared.status_code == 200 and cleared.json()["monthly_token_quota"] is None
    missing = await api.patch("/api/projects/00000000-0000-0000-0000-000000000000", json={"monthly_token_quota": 5})
    assert missing.status_code == 404
    _, stranger = await new_project(api)
    assert (await anon_api.get(f"/api/projects/{project}/quota", headers=bearer(stranger))).status_code == 404
