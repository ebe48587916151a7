"""SeaweedFS as the stack's S3 server: one `weed server` process (master, volume server, filer and S3 gateway) on
127.0.0.1, its data under the state folder, the key pair in a config file only its owner reads.

`weed` is built from the Go module proxy by scripts/seaweedfs/build.sh into a cache outside git (minutes the first
time, well under a second afterwards); the build runs when the server starts, never when `bud dev status|down` only
list the parts.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from core.paths import PROJECT_ROOT
from core.processes import ManagedProcess, free_port, http_ok

BUILD_SCRIPT = PROJECT_ROOT / "scripts" / "seaweedfs" / "build.sh"
# Volumes are not preallocated: the size bounds one volume file, the count how many this server holds (each bucket
# is a collection that grows several volumes at a time).
VOLUME_SIZE_LIMIT_MB = 1024
MAX_VOLUMES = 64


def ensure_weed(build_script: Path = BUILD_SCRIPT) -> Path:
    """Run the (cached, idempotent) build and return the path of the `weed` binary; progress goes to our stderr."""
    result = subprocess.run(["bash", str(build_script)], stdout=subprocess.PIPE, text=True, check=True)
    weed = Path(result.stdout.strip().splitlines()[-1])
    if not os.access(weed, os.X_OK):
        raise FileNotFoundError(f"{build_script} reported {weed}, which is not an executable")
    return weed


def s3_identities(access_key: str, secret_key: str) -> str:
    """The gateway's -s3.config: one identity with every right on every bucket. No anonymous identity, so an
    unsigned request is refused."""
    for name, value in (("access key", access_key), ("secret key", secret_key)):
        if not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(f"S3 {name}: must be non-empty, without control characters")
    return json.dumps({"identities": [{
        "name": "bud",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]})


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)  # an existing file keeps its mode on open: make sure


def _socket_flag(server: str, path: Path) -> list[str]:
    """The filer's and the gateway's local socket inside the state folder; a path too long for a Unix socket keeps
    weed's default (/tmp/seaweedfs-<server>-<port>.sock: the port is ours alone while we run)."""
    return [f"-{server}.localSocket={path}"] if len(str(path)) < 100 else []


def _buckets_ready(port: int, access_key: str, secret_key: str, buckets: tuple[str, ...]) -> bool:
    """The gateway answers signed requests and every bucket exists (created here, once, when missing)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    if not http_ok(f"http://127.0.0.1:{port}/"):
        return False
    client = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                               retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))
    try:
        existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
        for bucket in buckets:
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)
        return True
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return True
        return False  # the filer or the volume server not up yet
    except BotoCoreError:
        return False
    finally:
        client.close()


def seaweedfs_s3_server(state_dir: Path, port: int, access_key: str, secret_key: str,
                        buckets: tuple[str, ...] = ("models",)) -> ManagedProcess:
    """`weed server` with a filer and the S3 gateway on `port`; its other ports are free ones picked now. Healthy once
    the gateway accepts the key pair and every bucket in `buckets` exists."""
    root = state_dir / "seaweedfs"
    config_path = root / "s3-identities.json"
    identities = s3_identities(access_key, secret_key)  # a bad pair fails here, before anything starts
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc = (free_port() for _ in range(7))
    argv = [
        # Logs to stderr (our log file), not to files in /tmp.
        "weed", "-logtostderr=true", "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-dir={root / 'volume'}", f"-master.dir={root / 'master'}",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.telemetry=false",
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}", f"-volume.max={MAX_VOLUMES}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        *_socket_flag("filer", root / "filer.sock"),
        "-s3", f"-s3.port={port}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config_path}",
        *_socket_flag("s3", root / "s3.sock"), "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.iam=false",
        # As S3 does: writing into a bucket that does not exist fails instead of creating it, and a backslash is
        # part of a key (weed would turn it into a folder separator; the registry refuses such names itself).
        "-s3.autoCreateBucket=false", "-s3.allowBackslashInKey=true",
    ]

    def prepare() -> None:
        for folder in (root / "volume", root / "master"):
            folder.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        _write_private(config_path, identities)
        argv[0] = str(ensure_weed())

    return ManagedProcess(
        # cwd: weed reads master.toml, filer.toml and security.toml from its working folder first; there are none.
        name="s3", argv=argv, log_path=state_dir / "logs" / "s3.log", prepare=prepare, cwd=root,
        healthy=lambda: _buckets_ready(port, access_key, secret_key, buckets),
        url=f"http://127.0.0.1:{port} (SeaweedFS)", startup_timeout_s=90)
