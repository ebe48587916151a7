"""Model transfer (S3 -> local model storage, streamed, verified) against a plain file copy of the same bytes.

Target: transfer >= 80 % of a plain file copy's throughput on loopback; memory constant. The copy is
made as durable as the transfer (fsync) and both run interleaved several times: this VM's disk writeback swings
by a factor of several between runs. The object is uploaded through S3 (multipart, as `bud models upload` does), so
the same bench measures either S3 server the stack can run.

    .venv/bin/python -m bench.bench_transfer [--size-gb 1] [--object-store seaweedfs|rclone]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from temporalio.testing import ActivityEnvironment

from activities.transfer import TransferActivities
from core.objectstore import ObjectStore
from control.payloads.deployments import TransferFileInput
from core.settings import Settings
from devstack import services
from devstack.s3_seed import upload_folder
from core.processes import free_port


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


def plain_copy(source: Path, target: Path) -> float:
    """Seconds for a plain file copy made as durable as the transfer makes its files (fsync before it counts)."""
    started = time.perf_counter()
    shutil.copyfile(source, target)
    descriptor = os.open(target, os.O_RDONLY)
    os.fsync(descriptor)
    os.close(descriptor)
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


async def main(size_gb: float, rounds: int, object_store: str | None) -> None:
    state = Path(tempfile.mkdtemp(prefix="bud-bench-transfer-"))
    size = int(size_gb * 1e9)
    port = free_port()
    kind = services.object_store_kind(object_store)
    server = services.s3_server(state, port, "benchkey", "benchsecret", store=kind).start().wait_healthy()
    try:
        source = state / "source" / "model.safetensors"
        source.parent.mkdir(parents=True)
        sha = write_random(source, size)
        settings = Settings(s3_endpoint=f"http://127.0.0.1:{port}", s3_access_key="benchkey", s3_secret_key="benchsecret")
        upload_folder(settings, source.parent, "models", "bench")  # the object models/bench/model.safetensors
        os.sync()  # the source's and the upload's writeback must not land in either measurement

        process, peak = psutil.Process(), [0.0]

        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], process.memory_info().rss / 1e6)
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        copy_times, transfer_times = [], []
        async with ObjectStore(settings) as store:
            await store.head("models", "bench/model.safetensors")
            started = time.perf_counter()
            async for _ in store.stream("models", "bench/model.safetensors"):
                pass  # what the S3 server alone delivers: the ceiling for any transfer through it
            read_only_s = time.perf_counter() - started
            for _ in range(rounds):  # interleaved: the VM's disk writeback varies a lot from minute to minute
                copy_times.append(plain_copy(source, state / "plain-copy.bin"))
                request = TransferFileInput(bucket="models", key="bench/model.safetensors", path="model.safetensors",
                                            size=size, sha256=sha, model_id=uuid.uuid4())
                activities = TransferActivities(store, state / "cache")
                started = time.perf_counter()
                result = await ActivityEnvironment().run(activities.transfer_model_file, request)
                transfer_times.append(time.perf_counter() - started)
                assert result.bytes_copied == size
                started = time.perf_counter()
                cached = await ActivityEnvironment().run(activities.transfer_model_file, request)
                cached_s = time.perf_counter() - started
                shutil.rmtree(state / "cache")
        sampler.cancel()
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)
    mb = size / 1e6
    copy_s, transfer_s = statistics.median(copy_times), statistics.median(transfer_times)
    print(f"\n{kind} S3 server, {size_gb:.1f} GB, median of {rounds}: plain file copy + fsync {mb / copy_s:.0f} MB/s "
          f"({', '.join(f'{mb / t:.0f}' for t in copy_times)}); transfer S3 -> model storage with SHA-256 "
          f"verification + fsync {mb / transfer_s:.0f} MB/s ({', '.join(f'{mb / t:.0f}' for t in transfer_times)}): "
          f"{100 * copy_s / transfer_s:.0f} % of the copy (target >= 80 %)")
    print(f"reading the object without writing or hashing: {mb / read_only_s:.0f} MB/s "
          f"({100 * copy_s / read_only_s:.0f} % of the copy): the S3 server's ceiling on this machine")
    print(f"second run skipped={cached.skipped} in {cached_s * 1000:.0f} ms; peak RSS of this process {peak[0]:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--object-store", choices=services.OBJECT_STORES, default=None,
                        help="the S3 server to measure (default: BUD_OBJECT_STORE, else the stack's default)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.size_gb, arguments.rounds, arguments.object_store))
