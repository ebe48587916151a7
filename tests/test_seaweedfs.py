"""SeaweedFS as the stack's S3 server (devstack/seaweedfs.py): the S3 behaviour the platform relies on, against a
real `weed server` built from the Go module proxy."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import boto3
import httpx
import psutil
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from core.processes import free_port
from devstack import services

KEY = "bud-key"


def _s3(port: int, key: str, secret: str):
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=key,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                      retries={"max_attempts": 1}))


@pytest.fixture
def weed(tmp_path: Path):
    """A SeaweedFS S3 server holding the buckets `models` and `other`, and how to restart it on the same data."""
    secret = "sec-" + os.urandom(8).hex() + '",quoted'  # commas and quotes are fine in a JSON config
    port = free_port()

    def start():
        return services.s3_server(tmp_path, port, KEY, secret, ("models", "other"), store="seaweedfs").start().wait_healthy()

    server = start()
    state = {"server": server}
    yield port, secret, tmp_path, state, start
    state["server"].stop()


def test_the_secret_is_on_no_command_line_and_only_signed_requests_with_it_are_served(weed):
    port, secret, state_dir, state, _ = weed
    server = state["server"]
    process = psutil.Process(server.pid)
    for member in [process, *process.children(recursive=True)]:
        assert secret not in " ".join(member.cmdline())
        assert all(c.laddr.ip == "127.0.0.1" for c in member.net_connections("inet") if c.status == psutil.CONN_LISTEN)
    config = state_dir / "seaweedfs" / "s3-identities.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["identities"][0]["credentials"] == [{"accessKey": KEY, "secretKey": secret}]

    right = _s3(port, KEY, secret)
    right.put_object(Bucket="models", Key="p/weights.bin", Body=b"weights")
    for key, wrong in ((KEY, secret + "x"), (KEY, "x"), ("someone", secret)):
        with pytest.raises(ClientError) as refused:
            _s3(port, key, wrong).put_object(Bucket="models", Key="p/weights.bin", Body=b"forged")
        assert refused.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "InvalidAccessKeyId")
        with pytest.raises(ClientError):
            _s3(port, key, wrong).get_object(Bucket="models", Key="p/weights.bin")
    for method in ("PUT", "GET"):
        unsigned = httpx.request(method, f"http://127.0.0.1:{port}/models/p/weights.bin", content=b"forged")
        assert unsigned.status_code in (400, 403), (method, unsigned.status_code)
    assert httpx.get(f"http://127.0.0.1:{port}/models?list-type=2").status_code in (400, 403)
    assert right.get_object(Bucket="models", Key="p/weights.bin")["Body"].read() == b"weights"
    # As S3 does, a bucket nobody created is not made by writing into it.
    with pytest.raises(ClientError) as missing:
        right.put_object(Bucket="typo-bucket", Key="x", Body=b"x")
    assert missing.value.response["Error"]["Code"] == "NoSuchBucket"


def test_multipart_listing_ranges_checksums_and_a_restart_keep_the_objects(weed):
    port, secret, _, state, start = weed
    s3 = _s3(port, KEY, secret)
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(5 * 1024 * 1024), os.urandom(12345)]
    upload = s3.create_multipart_upload(Bucket="models", Key="m/1/model.safetensors", Metadata={"sha256": "ab" * 32})
    etags = [s3.upload_part(Bucket="models", Key="m/1/model.safetensors", UploadId=upload["UploadId"],
                            PartNumber=number, Body=body)["ETag"] for number, body in enumerate(parts, start=1)]
    s3.complete_multipart_upload(Bucket="models", Key="m/1/model.safetensors", UploadId=upload["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                                            for n, e in enumerate(etags, start=1)]})
    whole = b"".join(parts)
    # The multipart ETag S3 gives: the MD5 of the parts' MD5s, then the part count (clients skip matching files).
    expected_etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    head = s3.head_object(Bucket="models", Key="m/1/model.safetensors")
    assert head["ContentLength"] == len(whole) and head["ETag"].strip('"') == expected_etag
    assert head["Metadata"] == {"sha256": "ab" * 32}
    ranged = s3.get_object(Bucket="models", Key="m/1/model.safetensors", Range="bytes=5242870-5242889")
    assert ranged["Body"].read() == whole[5242870:5242890]  # a resumed copy reads across a part boundary

    aborted = s3.create_multipart_upload(Bucket="models", Key="m/1/aborted.bin")
    s3.upload_part(Bucket="models", Key="m/1/aborted.bin", UploadId=aborted["UploadId"], PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket="models", Key="m/1/aborted.bin", UploadId=aborted["UploadId"])

    small = {f"m/1/config-{i}.json": f'{{"i": {i}}}'.encode() for i in range(3)}
    for key, body in small.items():
        assert s3.put_object(Bucket="models", Key=key, Body=body)["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    s3.put_object(Bucket="other", Key="m/1/elsewhere.json", Body=b"{}")
    s3.put_object(Bucket="other", Key="m/1/weights\\evil.bin", Body=b"x")  # a backslash stays part of the name
    assert [item["Key"] for item in s3.list_objects_v2(Bucket="other", Prefix="m/1/")["Contents"]] == [
        "m/1/elsewhere.json", "m/1/weights\\evil.bin"]
    s3.copy_object(Bucket="models", Key="m/2/config-0.json", CopySource={"Bucket": "models", "Key": "m/1/config-0.json"})

    def listing() -> list[str]:
        keys, token = [], None
        while True:  # two keys a page: the continuation token is followed to the end
            page = s3.list_objects_v2(Bucket="models", Prefix="m/1/", MaxKeys=2,
                                      **({"ContinuationToken": token} if token else {}))
            keys += [item["Key"] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = page["NextContinuationToken"]

    expected = sorted([*small, "m/1/model.safetensors"])
    assert listing() == expected  # the aborted upload left nothing, the other bucket is its own

    state["server"].stop()
    state["server"] = start()
    assert listing() == expected
    assert s3.get_object(Bucket="models", Key="m/1/model.safetensors")["Body"].read() == whole
    assert s3.get_object(Bucket="models", Key="m/2/config-0.json")["Body"].read() == small["m/1/config-0.json"]


def test_an_unknown_object_store_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("BUD_OBJECT_STORE", "minio")
    with pytest.raises(ValueError, match="BUD_OBJECT_STORE"):
        services.s3_server(tmp_path, free_port(), KEY, "secret")
