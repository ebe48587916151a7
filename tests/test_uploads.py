"""Model files reach S3 only through the API, with a project token, into that project's key space; the S3 secret
lives with the platform (the S3 server reads it from its environment, never its command line)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from api.routers.uploads import PART_SIZE
from cli.models import app as models_app
from cli.upload import UploadError, upload_folder
from core.objectstore import ObjectStore
from devstack import services
from core.processes import free_port
from tests.helpers import api_process, unique
from tests.model_files import write_tiny_llama
from tests.registry_helpers import registration, wait_settled

MiB = 1024 * 1024


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def new_project(api) -> dict:
    created = await api.post("/api/projects", json={"name": unique("uploader")})
    assert created.status_code == 201, created.text
    return created.json()


def files_url(name: str, version: str, path: str | None = None) -> str:
    return f"/api/models/uploads/{name}/{version}" + (f"/{path}" if path else "")


async def stored(settings, key: str) -> bytes | None:
    async with ObjectStore(settings) as store:
        if not await store.exists(settings.models_bucket, key):
            return None
        return await store.get_bytes(settings.models_bucket, key)


# ------------------------------------------------------------------------------------------ the S3 server's secret
def _tree(pid: int) -> list[int]:
    """pid and every descendant, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _s3(port: int, key: str, secret: str):
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=key,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                      retries={"max_attempts": 1}))


def test_the_s3_secret_is_on_no_command_line_and_only_the_right_secret_is_accepted(tmp_path):
    secret = "sec-" + os.urandom(8).hex() + '"quoted'  # a quote survives rclone's CSV form of the pair
    port = free_port()
    server = services.s3_server(tmp_path, port, "bud-key", secret).start().wait_healthy()
    try:
        assert server.pid is not None
        for pid in _tree(server.pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert secret not in cmdline and secret.split('"')[0] not in cmdline, cmdline
        right = _s3(port, "bud-key", secret)
        right.put_object(Bucket="models", Key="p/weights.bin", Body=b"weights")
        assert right.get_object(Bucket="models", Key="p/weights.bin")["Body"].read() == b"weights"
        for key, wrong in (("bud-key", secret + "x"), ("bud-key", ""), ("someone", secret)):
            with pytest.raises(ClientError) as refused:
                _s3(port, key, wrong or "x").put_object(Bucket="models", Key="p/weights.bin", Body=b"forged")
            assert refused.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "InvalidAccessKeyId")
        anonymous = httpx.put(f"http://127.0.0.1:{port}/models/p/weights.bin", content=b"forged")
        assert anonymous.status_code in (400, 403)  # unsigned: refused
        assert right.get_object(Bucket="models", Key="p/weights.bin")["Body"].read() == b"weights"
    finally:
        server.stop()


def test_a_key_pair_rclone_cannot_hold_is_refused_before_starting(tmp_path):
    for key, secret in (("bud-key", "with,comma"), ("bud,key", "secret"), ("bud-key", "new\nline"), ("bud-key", "")):
        with pytest.raises(ValueError, match="S3"):
            services.rclone_s3_server(tmp_path, free_port(), key, secret)


# ------------------------------------------------------------------------------------------ uploads through the API
async def test_uploaded_files_land_in_the_projects_key_space_and_register(api, settings, control_worker, tmp_path):
    tiny = write_tiny_llama(tmp_path / "tiny")
    name = unique("up")
    for relative in tiny.files:
        body = (tiny.path / relative).read_bytes()
        reply = await api.put(files_url(name, "1", relative), content=body,
                              headers={"X-Content-SHA256": hashlib.sha256(body).hexdigest()})
        assert reply.status_code == 201, reply.text
        assert reply.json()["size"] == len(body) and reply.json()["sha256"] == hashlib.sha256(body).hexdigest()
    source = reply.json()["source_path"]
    assert source == f"s3://{settings.models_bucket}/default/{name}/1"
    listing = (await api.get(files_url(name, "1"))).json()
    assert sorted(f["path"] for f in listing["files"]) == sorted(tiny.files)
    assert listing["source_path"] == source and listing["part_size"] == PART_SIZE
    config = (tiny.path / "config.json").read_bytes()
    assert await stored(settings, f"default/{name}/1/config.json") == config

    response = await api.post("/api/models", json=registration(
        settings, source.removeprefix(f"s3://{settings.models_bucket}/"), name=name, version="1",
        parameter_count=tiny.parameter_count, context_length=tiny.spec.max_position_embeddings))
    assert response.status_code == 202, response.text
    model = await wait_settled(api, response.json()["id"])
    assert model["status"] == "AVAILABLE", model
    # A registered version's files no longer change: a new version is the way.
    refused = await api.put(files_url(name, "1", "config.json"), content=b"{}")
    assert refused.status_code == 409 and "new version" in refused.json()["error"]["message"]
    assert await stored(settings, f"default/{name}/1/config.json") == config
    assert (await api.put(files_url(name, "2", "config.json"), content=config)).status_code == 201


async def test_a_file_larger_than_a_part_streams_through_in_parts(api, settings):
    name = unique("big")
    body = os.urandom(PART_SIZE * 2 + 12345)
    reply = await api.put(files_url(name, "1", "model-00001.safetensors"), content=body)
    assert reply.status_code == 201, reply.text
    assert reply.json()["sha256"] == hashlib.sha256(body).hexdigest()
    assert await stored(settings, f"default/{name}/1/model-00001.safetensors") == body
    listing = (await api.get(files_url(name, "1"))).json()
    assert listing["files"] == [{"path": "model-00001.safetensors", "size": len(body),
                                 "etag": listing["files"][0]["etag"]}]


async def test_a_body_that_does_not_match_its_checksum_is_not_stored(api, settings):
    name = unique("sum")
    reply = await api.put(files_url(name, "1", "config.json"), content=b'{"a": 1}',
                          headers={"X-Content-SHA256": hashlib.sha256(b"something else").hexdigest()})
    assert reply.status_code == 422 and "x-content-sha256" in reply.json()["error"]["message"]
    assert await stored(settings, f"default/{name}/1/config.json") is None
    big = os.urandom(PART_SIZE + 1)  # the multipart path aborts too
    reply = await api.put(files_url(name, "1", "w.bin"), content=big, headers={"X-Content-SHA256": "0" * 64})
    assert reply.status_code == 422
    assert await stored(settings, f"default/{name}/1/w.bin") is None
    assert (await api.put(files_url(name, "1", "c.json"), content=b"{}",
                          headers={"X-Content-SHA256": "not-hex"})).status_code == 422


@pytest.mark.parametrize("path, reason", [
    ("%2E%2E/%2E%2E/other/1/config.json", "'..'"),
    ("a/%2E/config.json", "'.'"),
    ("a//config.json", "empty"),
    ("a%5Cb.json", "backslash"),
    ("new%0Aline.json", "newline"),
    ("tab%09.json", "control"),
    ("/".join(["d"] * 17) + "/f.json", "deeper"),
    ("x" * 513, "longer"),
])
async def test_a_path_that_is_not_a_plain_relative_name_is_refused(api, settings, path, reason):
    name = unique("path")
    reply = await api.put(f"/api/models/uploads/{name}/1/{path}", content=b"{}")
    if reason == "newline":  # the router's path pattern does not match a newline at all
        assert reply.status_code == 404, reply.text
    else:
        assert reply.status_code == 422, reply.text
        assert reason in reply.json()["error"]["message"]
    async with ObjectStore(settings) as store:
        assert await store.list_objects(settings.models_bucket, f"default/{name}") == []
        assert await store.list_objects(settings.models_bucket, "other/") == []


async def test_hostile_names_versions_and_nul_are_refused(api):
    for url in ("/api/models/uploads/%2E%2E/1/config.json", "/api/models/uploads/m/%2E%2E/config.json",
                "/api/models/uploads/.hidden/1/config.json", "/api/models/uploads/m/1/a%00b",
                f"/api/models/uploads/{'m' * 129}/1/config.json", "/api/models/uploads/m/1/"):
        reply = await api.put(url, content=b"{}")
        assert reply.status_code in (404, 405, 422), (url, reply.status_code, reply.text)
        assert reply.status_code != 201


async def test_read_only_tokens_may_list_but_not_upload(api, anon_api, settings):
    project = await new_project(api)
    minted = await anon_api.post(f"/api/projects/{project['id']}/tokens", json={"name": "viewer", "role": "read-only"},
                                 headers=bearer(project["token"]))
    assert minted.status_code == 201, minted.text
    reader = bearer(minted.json()["token"])
    refused = await anon_api.put(files_url("m", "1", "config.json"), content=b"{}", headers=reader)
    assert refused.status_code == 403 and "read-only" in refused.json()["error"]["message"]
    assert await stored(settings, f"{project['name']}/m/1/config.json") is None
    assert (await anon_api.get(files_url("m", "1"), headers=reader)).status_code == 200
    assert (await anon_api.put(files_url("m", "1", "config.json"), content=b"{}")).status_code == 401


async def test_another_project_never_writes_into_a_projects_key_space(api, anon_api, settings):
    mine, theirs = await new_project(api), await new_project(api)
    name = unique("shared-name")
    mine_reply = await anon_api.put(files_url(name, "1", "config.json"), content=b'{"owner": "mine"}',
                                    headers=bearer(mine["token"]))
    assert mine_reply.status_code == 201
    # The same name and version from the other project is its own file, in its own key space.
    their_reply = await anon_api.put(files_url(name, "1", "config.json"), content=b'{"owner": "theirs"}',
                                     headers=bearer(theirs["token"]))
    assert their_reply.status_code == 201
    assert their_reply.json()["source_path"] == f"s3://{settings.models_bucket}/{theirs['name']}/{name}/1"
    # Paths that try to climb into the first project's space are refused.
    for path in (f"%2E%2E/%2E%2E/%2E%2E/{mine['name']}/{name}/1/config.json", f"..%2F..%2F{mine['name']}/x.json"):
        reply = await anon_api.put(f"/api/models/uploads/{name}/1/{path}", content=b"{}",
                                   headers=bearer(theirs["token"]))
        assert reply.status_code == 422, reply.text
    for url in (f"/api/models/uploads/%2E%2E/{mine['name']}/{name}/1/config.json",
                f"/api/models/uploads/{mine['name']}%2F{name}/1/config.json"):
        reply = await anon_api.put(url, content=b"{}", headers=bearer(theirs["token"]))
        if reply.status_code == 201:  # an encoded slash is a slash: still a name inside their own key space
            assert reply.json()["source_path"].startswith(f"s3://{settings.models_bucket}/{theirs['name']}/")
        else:
            assert reply.status_code in (404, 405, 422), reply.text
    assert await stored(settings, f"{mine['name']}/{name}/1/config.json") == b'{"owner": "mine"}'
    mine_listing = (await anon_api.get(files_url(name, "1"), headers=bearer(mine["token"]))).json()
    assert mine_listing["files"] == [{"path": "config.json", "size": 17, "etag": mine_listing["files"][0]["etag"]}]
    # The second project cannot register what the first uploaded either.
    refused = await anon_api.post("/api/models", headers=bearer(theirs["token"]), json=registration(
        settings, f"{mine['name']}/{name}/1"))
    assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "source_path"


# ------------------------------------------------------------------------------------------ limits, the CLI
@pytest.fixture(scope="module")
def small_limits() -> dict:
    return {"upload_max_file_bytes": 20 * MiB, "upload_max_bytes": 30 * MiB}


@pytest.fixture
async def limited_api(settings, db_pool, state_dir, admin_token, small_limits):
    """The API as `python -m api` serves it (uvicorn, real streaming), with small upload limits."""
    async with api_process(settings.model_copy(update=small_limits), state_dir, unique("api-uploads")) as (url, _):
        yield url


async def raw_put(url: str, path: str, token: str, head: dict[str, str], body_bytes: int,
                  method: str = "PUT") -> tuple[int, bytes]:
    """PUT (or `method`) over a plain socket, reading the answer while the body is still being sent (as a client sending
    `Expect: 100-continue` would): an early 413 is seen, not a broken pipe. body_bytes > 0 sends chunked."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Authorization: Bearer {token}",
             *(f"{k}: {v}" for k, v in head.items())]
    if body_bytes:
        lines.append("Transfer-Encoding: chunked")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def send_body():
        chunk = b"z" * MiB
        for _ in range(body_bytes // MiB):
            writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    sender = asyncio.create_task(send_body()) if body_bytes else None
    try:
        head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
        length = next(int(line.split(b":")[1]) for line in head_bytes.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        answer = head_bytes + await asyncio.wait_for(reader.readexactly(length), timeout=60)
    finally:
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest


async def test_uploads_over_the_limits_are_refused_while_they_stream(limited_api, admin_token, settings):
    name = unique("limits")
    # Declared too large: refused before the body is read.
    status, answer = await raw_put(limited_api, files_url(name, "1", "huge.bin"), admin_token,
                                   {"Content-Length": str(20 * MiB + 1), "Expect": "100-continue"}, 0)
    assert status == 413 and b"20971520 bytes" in answer, answer
    # No Content-Length: counted as it streams, refused past the limit, nothing stored.
    status, answer = await raw_put(limited_api, files_url(name, "1", "streamed.bin"), admin_token, {}, 40 * MiB)
    assert status == 413 and b"20 MB" in answer, answer
    assert await stored(settings, f"default/{name}/1/streamed.bin") is None

    async with httpx.AsyncClient(base_url=limited_api, headers=bearer(admin_token), timeout=60) as client:
        first = await client.put(files_url(name, "1", "a.bin"), content=os.urandom(18 * MiB))
        assert first.status_code == 201, first.text
        status, answer = await raw_put(limited_api, files_url(name, "1", "b.bin"), admin_token,
                                       {"Content-Length": str(13 * MiB), "Expect": "100-continue"}, 0)
        assert status == 413 and b"per model version" in answer, answer
        # Replacing a file counts it once, and other endpoints keep their small body limit.
        assert (await client.put(files_url(name, "1", "a.bin"), content=os.urandom(19 * MiB))).status_code == 201
        # Declared over the API's body limit, as curl sends a large body (waiting for 100-continue): refused before
        # a byte of it is read.
        status, _ = await raw_put(limited_api, "/api/projects", admin_token,
                                  {"Content-Type": "application/json", "Content-Length": str(2 * MiB + 12),
                                   "Expect": "100-continue"}, 0, method="POST")
        assert status == 413
        listing = (await client.get(files_url(name, "1"))).json()
        assert (listing["max_file_bytes"], listing["max_bytes"]) == (20 * MiB, 30 * MiB)
    assert await stored(settings, f"default/{name}/1/b.bin") is None


async def test_bud_models_upload_needs_only_a_token_and_skips_unchanged_files(
        limited_api, api, admin_token, settings, control_worker, tmp_path):
    tiny = write_tiny_llama(tmp_path / "tiny")
    (tiny.path / "extra.bin").write_bytes(os.urandom(PART_SIZE + 5))  # one file goes in parts
    name = unique("cli")

    def upload_twice():
        with httpx.Client(base_url=limited_api, headers=bearer(admin_token), timeout=60) as client:
            first = upload_folder(client, tiny.path, name, "draft")
            second = upload_folder(client, tiny.path, name, "draft")
            (tiny.path / "tokenizer_config.json").write_text('{"changed": true}')
            third = upload_folder(client, tiny.path, name, "draft")
        return first, second, third

    first, second, third = await asyncio.to_thread(upload_twice)
    everything = sorted([*tiny.files, "extra.bin"])
    assert first.uploaded == everything and first.skipped == []
    assert second.uploaded == [] and second.skipped == everything
    assert third.uploaded == ["tokenizer_config.json"]
    assert await stored(settings, f"default/{name}/draft/tokenizer_config.json") == b'{"changed": true}'
    (tiny.path / "extra.bin").write_bytes(b"0" * (20 * MiB + 1))

    def too_large():
        with httpx.Client(base_url=limited_api, headers=bearer(admin_token), timeout=60) as client:
            with pytest.raises(UploadError, match="limit per file"):
                upload_folder(client, tiny.path, name, "draft")
    await asyncio.to_thread(too_large)
    (tiny.path / "extra.bin").unlink()

    # The command itself, with S3 credentials that would not work: it never uses them.
    env = {"BUD_API_URL": limited_api, "BUD_TOKEN": admin_token, "BUD_S3_ACCESS_KEY": "nobody",
           "BUD_S3_SECRET_KEY": "wrong", "BUD_S3_ENDPOINT": "http://127.0.0.1:9"}
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, models_app, ["upload", str(tiny.path), "--name", name,
                                                                 "--license", "apache-2.0"], env=env)
    assert result.exit_code == 0, result.output
    assert f"uploaded {len(tiny.files)} file(s)" in result.output and "AVAILABLE" in result.output
    model = next(m for m in (await api.get("/api/models", params={"limit": 200})).json()["items"] if m["name"] == name)
    assert model["source_path"] == f"s3://{settings.models_bucket}/default/{name}/1"

    # A read-only token is refused with the reason, before anything is written.
    project = (await api.get("/api/projects")).json()[0]
    reader = (await api.post(f"/api/projects/{project['id']}/tokens",
                             json={"name": unique("ro"), "role": "read-only"})).json()["token"]
    refused = await asyncio.to_thread(runner.invoke, models_app, ["upload", str(tiny.path), "--name", unique("ro")],
                                      env={**env, "BUD_TOKEN": reader})
    assert refused.exit_code == 1 and "read-only" in refused.output, refused.output
