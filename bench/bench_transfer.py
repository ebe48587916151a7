"""Model transfer (S3 -> local model storage, streamed, verified) against a plain file copy of the same bytes.

Target (DESIGN.md): transfer >= 80 % of a plain file copy's throughput on loopback; memory constant.

    .venv/bin/python -m bench.bench_transfer [--size-gb 1]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from temporalio.testing import ActivityEnvironment

from activities.transfer import TransferActivities
from core.objectstore import ObjectStore
from core.payloads.deployments import TransferFileInput
from core.settings import Settings
from devstack import services
from devstack.process import free_port


def write_random(path: Path, size: int) -> str:
    digest, block = hashlib.sha256(), os.urandom(8 * 1024 * 1024)
    with open(path, "wb") as out:
        written = 0
        while written < size:
            piece = block[: min(len(block), size - written)]
            out.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


async def main(size_gb: float) -> None:
    state = Path(tempfile.mkdtemp(prefix="bud-bench-transfer-"))
    size = int(size_gb * 1e9)
    port = free_port()
    server = services.s3_server(state, port, "benchkey", "benchsecret").start().wait_healthy()
    try:
        source = state / "s3" / "models" / "bench" / "model.safetensors"
        source.parent.mkdir(parents=True)
        sha = write_random(source, size)  # rclone serves the folder: this file is the object models/bench/model.safetensors

        copy_target = state / "plain-copy.bin"
        started = time.perf_counter()
        shutil.copyfile(source, copy_target)
        os.sync()
        copy_s = time.perf_counter() - started
        copy_target.unlink()

        settings = Settings(s3_endpoint=f"http://127.0.0.1:{port}", s3_access_key="benchkey", s3_secret_key="benchsecret")
        process, peak = psutil.Process(), [0.0]

        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], process.memory_info().rss / 1e6)
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        async with ObjectStore(settings) as store:
            activities = TransferActivities(store, state / "cache")
            request = TransferFileInput(bucket="models", key="bench/model.safetensors", path="model.safetensors",
                                        size=size, sha256=sha, model_id=uuid.uuid4())
            started = time.perf_counter()
            result = await ActivityEnvironment().run(activities.transfer_model_file, request)
            transfer_s = time.perf_counter() - started
            started = time.perf_counter()
            cached = await ActivityEnvironment().run(activities.transfer_model_file, request)
            cached_s = time.perf_counter() - started
        sampler.cancel()
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)
    mb = size / 1e6
    print(f"\n{size_gb:.1f} GB: plain file copy {mb / copy_s:.0f} MB/s; transfer S3 -> model storage with SHA-256 "
          f"verification {mb / transfer_s:.0f} MB/s ({100 * copy_s / transfer_s:.0f} % of the copy; target >= 80 %)")
    print(f"copied {result.bytes_copied} bytes; second run skipped={cached.skipped} in {cached_s * 1000:.0f} ms; "
          f"peak RSS of this process {peak[0]:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gb", type=float, default=1.0)
    asyncio.run(main(parser.parse_args().size_gb))
