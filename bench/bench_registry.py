"""Upload + scan of generated models (default 0.5 GB and 2 GB): throughput and the worker's peak memory.

Target: streaming, constant memory — the worker's peak RSS must not grow with the model.

    .venv/bin/python bench/bench_registry.py [--sizes-gb 0.5 2]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from bench.harness import bench_stack
from devstack.s3_seed import upload_folder
from tests.model_files import spec_for_total_bytes, write_tiny_llama


async def sample_rss(pid: int, samples: list[float], stop: asyncio.Event) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        samples.append(process.memory_info().rss / 1e6)
        await asyncio.sleep(0.1)


async def one_size(stack, size_gb: float, workdir: Path) -> dict:
    folder = workdir / f"model-{size_gb}gb"
    model = write_tiny_llama(folder, spec_for_total_bytes(int(size_gb * 1e9)))
    prefix = f"default/bench-{size_gb}gb"
    started = time.perf_counter()
    await asyncio.to_thread(upload_folder, stack.settings, folder, stack.settings.models_bucket, prefix)
    upload_s = time.perf_counter() - started
    worker_pid = stack.workers[0].pid
    samples: list[float] = [psutil.Process(worker_pid).memory_info().rss / 1e6]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(worker_pid, samples, stop))
    started = time.perf_counter()
    response = await stack.api.post("/api/models", json={
        "name": prefix.removeprefix("default/"), "architecture": "llama", "parameter_count": model.parameter_count,
        "context_length": model.spec.max_position_embeddings, "source_path": f"s3://models/{prefix}"})
    model_id = response.json()["id"]
    while (status := (await stack.api.get(f"/api/models/{model_id}")).json()["status"]) == "SCANNING":
        await asyncio.sleep(0.2)
    scan_s = time.perf_counter() - started
    stop.set()
    await sampler
    shutil.rmtree(folder)
    return {"size_gb": model.total_bytes / 1e9, "status": status, "upload_mb_s": model.total_bytes / 1e6 / upload_s,
            "scan_mb_s": model.total_bytes / 1e6 / scan_s, "scan_s": scan_s, "worker_baseline_mb": samples[0],
            "worker_peak_mb": max(samples)}


async def main(sizes: list[float]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bud-bench-models-"))
    try:
        async with bench_stack(queues=("bud-control",)) as stack:
            rows = [await one_size(stack, size, workdir) for size in sizes]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nupload + scan (checksums, ClamAV windows, safetensors, config) on this machine")
    print(f"{'size GB':>8} {'status':>10} {'upload MB/s':>12} {'scan MB/s':>10} {'scan s':>7} {'worker RSS MB (start/peak)':>27}")
    for r in rows:
        print(f"{r['size_gb']:8.2f} {r['status']:>10} {r['upload_mb_s']:12.0f} {r['scan_mb_s']:10.0f} {r['scan_s']:7.1f} "
              f"{r['worker_baseline_mb']:13.0f} / {r['worker_peak_mb']:.0f}")
    growth = rows[-1]["worker_peak_mb"] - rows[0]["worker_peak_mb"]
    print(f"peak RSS growth from {rows[0]['size_gb']:.1f} GB to {rows[-1]['size_gb']:.1f} GB: {growth:+.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[0.5, 2.0])
    asyncio.run(main(parser.parse_args().sizes_gb))
