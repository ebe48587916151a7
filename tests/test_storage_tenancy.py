"""Each project owns its key space in the models bucket, and each registration owns its prefix: another project can
neither register (and so deploy) a project's weights nor move them into its own quarantine."""

from __future__ import annotations

from core.objectstore import ObjectStore
from tests.helpers import unique
from tests.model_files import write_eicar_file, write_tiny_llama
from tests.registry_helpers import register_and_wait, registration, upload


def declared(tiny) -> dict:
    return {"parameter_count": tiny.parameter_count, "context_length": tiny.spec.max_position_embeddings}


async def other_project(api) -> tuple[dict, dict]:
    project = (await api.post("/api/projects", json={"name": unique("tenant")})).json()
    return project, {"Authorization": f"Bearer {project['token']}"}


async def test_another_project_cannot_register_a_projects_objects(api, anon_api, settings, control_worker, tmp_path):
    tiny = write_tiny_llama(tmp_path / "mine")
    mine = await register_and_wait(api, settings, await upload(settings, tiny.path), **declared(tiny))
    prefix = mine["source_path"].removeprefix(f"s3://{settings.models_bucket}/")
    assert mine["status"] == "AVAILABLE"
    project, theirs = await other_project(api)
    for target in (prefix, prefix.split("/")[0], f"{prefix}/sub"):  # the prefix, its parent, a child
        refused = await anon_api.post("/api/models", json=registration(settings, target), headers=theirs)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["details"][0]["field"] == "source_path"
        assert f"s3://{settings.models_bucket}/{project['name']}/" in error["message"]
    assert (await api.get(f"/api/models/{mine['id']}")).json()["status"] == "AVAILABLE"


async def test_a_bad_file_under_a_parent_prefix_never_touches_another_projects_objects(
        api, anon_api, settings, control_worker, tmp_path):
    """The attack that worked before: B registers the parent of A's prefix with a bad file in it."""
    tiny = write_tiny_llama(tmp_path / "a")
    prefix = await upload(settings, tiny.path)
    victim = await register_and_wait(api, settings, prefix, **declared(tiny))
    _, theirs = await other_project(api)
    parent = prefix.split("/")[0]
    bad = tmp_path / "bad"
    write_eicar_file(bad / "payload.bin")
    await upload(settings, bad, prefix=f"{parent}/{unique('planted')}")
    refused = await anon_api.post("/api/models", json=registration(settings, parent), headers=theirs)
    assert refused.status_code == 422
    async with ObjectStore(settings) as store:
        still_there = {o.key for o in await store.list_objects(settings.models_bucket, prefix + "/")}
    assert f"{prefix}/config.json" in still_there
    assert (await api.get(f"/api/models/{victim['id']}")).json()["status"] == "AVAILABLE"


async def test_registrations_within_a_project_never_overlap(api, settings, control_worker, tmp_path):
    tiny = write_tiny_llama(tmp_path / "m")
    group = f"default/{unique('group')}"
    prefix = await upload(settings, tiny.path, prefix=f"{group}/llama")
    owner = await register_and_wait(api, settings, prefix, **declared(tiny))
    assert owner["status"] == "AVAILABLE"
    for target in (prefix, prefix.rsplit("/", 1)[0] + "/" + prefix.rsplit("/", 1)[1][:3], f"{prefix}/v2"):
        answer = await api.post("/api/models", json=registration(settings, target))
        if target.startswith(prefix + "/") or target == prefix:
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"]["details"]["field"] == "source_path"
            assert owner["name"] in answer.json()["error"]["message"]
        else:  # a sibling whose name merely starts the same way is another prefix
            assert answer.status_code == 202, answer.text
    parent = await api.post("/api/models", json=registration(settings, group))
    assert parent.status_code == 409  # the parent folder contains the owner's prefix
    root = await api.post("/api/models", json=registration(settings, "default"))
    assert root.status_code == 422  # the key space itself is not a model's prefix


async def test_a_quarantined_registration_frees_its_prefix(api, settings, control_worker, tmp_path):
    tiny = write_tiny_llama(tmp_path / "m")
    write_eicar_file(tiny.path / "extra.bin")
    prefix = await upload(settings, tiny.path)
    first = await register_and_wait(api, settings, prefix, **declared(tiny))
    assert first["status"] == "QUARANTINED"  # its objects moved to quarantine/<id>/: the prefix is empty again
    fixed = write_tiny_llama(tmp_path / "fixed")
    await upload(settings, fixed.path, prefix=prefix)
    again = await register_and_wait(api, settings, prefix, name=unique("fixed"), **declared(fixed))
    assert again["status"] == "AVAILABLE"
