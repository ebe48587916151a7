"""Bounded streaming load through the gateway for `bud endpoints load`: CONCURRENCY clients send streamed chat
completions back to back for DURATION seconds, timing each one's first token on the client; every few seconds a
line says what was sent, what failed and the TTFT p99 of the requests finished since the last line."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

STOP_GRACE_S = 30.0  # after the duration, requests in flight may finish this long before they are cut


@dataclass
class Counts:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    in_flight: int = 0
    ttft_ms: list[float] = field(default_factory=list)  # since the last report
    all_ttft_ms: list[float] = field(default_factory=list)
    error_sample: str | None = None


def p99(values: list[float]) -> float | None:
    """The nearest-rank 99th percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


async def _one_request(client: httpx.AsyncClient, url: str, body: dict, counts: Counts) -> None:
    counts.sent += 1
    counts.in_flight += 1
    started = time.perf_counter()
    first: float | None = None
    try:
        async with client.stream("POST", url, json=body) as reply:
            if reply.status_code != 200:
                text = (await reply.aread()).decode(errors="replace")[:300]
                raise RuntimeError(f"HTTP {reply.status_code}: {text}")
            async for line in reply.aiter_lines():
                if first is None and line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                    chunk = json.loads(line[5:])
                    if chunk.get("error"):
                        raise RuntimeError(str(chunk["error"])[:300])
                    if any((choice.get("delta") or {}).get("content") for choice in chunk.get("choices") or []):
                        first = time.perf_counter()  # the first token (a role-only chunk may come before it)
        if first is None:
            raise RuntimeError("the stream ended without a token")
        counts.ok += 1
        counts.ttft_ms.append((first - started) * 1000)
        counts.all_ttft_ms.append((first - started) * 1000)
    except (httpx.HTTPError, RuntimeError, ValueError) as error:
        counts.failed += 1
        counts.error_sample = counts.error_sample or f"{type(error).__name__}: {error}"
    finally:
        counts.in_flight -= 1


async def run_load(inference_url: str, key: str, model: str, concurrency: int, duration_s: float, max_tokens: int,
                   every_s: float, report: Callable[[str], None], replicas: Callable[[], str]) -> dict:
    """Run the load; `report` gets each progress line, `replicas()` (blocking, run in a thread) the endpoint's
    ready/desired replicas for it. Returns the totals and every progress sample."""
    counts = Counts()
    url = f"{inference_url.rstrip('/')}/chat/completions"
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": max_tokens, "stream": True}
    deadline = time.monotonic() + duration_s
    started = time.monotonic()
    samples: list[dict] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            await _one_request(client, url, body, counts)
            if counts.failed and not counts.ok and counts.failed >= concurrency:
                await asyncio.sleep(1)  # the gateway refuses: back off instead of spinning

    async def sample() -> None:
        try:
            ready = await asyncio.to_thread(replicas)
        except Exception as error:  # noqa: BLE001 (the API's answer is extra information; the load goes on)
            ready = f"? ({type(error).__name__})"
        window = p99(counts.ttft_ms)
        counts.ttft_ms = []
        row = {"elapsed_s": round(time.monotonic() - started, 1), "sent": counts.sent, "ok": counts.ok,
               "failed": counts.failed, "in_flight": counts.in_flight,
               "ttft_p99_ms": None if window is None else round(window, 1), "replicas": ready}
        samples.append(row)
        report(f"{row['elapsed_s']:>6.1f} s  sent {row['sent']:>6}  failed {row['failed']:>4}  in flight "
               f"{row['in_flight']:>4}  TTFT p99 "
               f"{'-' if window is None else f'{window:.0f} ms':>8}  replicas {ready} ready")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(connect=10, read=120, write=30, pool=None)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=timeout) as client:
        clients = [asyncio.create_task(client_loop(client)) for _ in range(concurrency)]
        while time.monotonic() < deadline:
            await asyncio.sleep(min(every_s, max(0.0, deadline - time.monotonic())))
            await sample()
        done, cut = await asyncio.wait(clients, timeout=STOP_GRACE_S)
        for task in cut:
            task.cancel()
        await asyncio.gather(*cut, return_exceptions=True)
    whole = p99(counts.all_ttft_ms)
    return {"model": model, "concurrency": concurrency, "duration_s": duration_s, "sent": counts.sent,
            "ok": counts.ok, "failed": counts.failed, "ttft_p99_ms": None if whole is None else round(whole, 1),
            "error_sample": counts.error_sample, "samples": samples}
