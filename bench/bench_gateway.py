"""Latency the gateway adds over calling a runtime directly, at 100 concurrent streams (target: p99 < 2 ms), and its
throughput, with everything a production request goes through switched on.

Starts PostgreSQL and Redis of its own, one simulated runtime, and one gateway as the control plane runs it: the
inference key checked against the key table loaded from PostgreSQL, rpm/tpm limits and the project's monthly quota
counted in Redis (limits set high enough never to refuse), every request metered into usage_events. The clients
stream without asking for usage, so the gateway also adds the usage request and strips the usage chunk. Then it
alternates timed phases of N concurrent streaming completions sent straight to the runtime and through the gateway,
and compares time to first token and end-to-end latency percentiles. Alternating phases spreads any background load
on the machine over both sides. At the end it checks that every request through the gateway became a usage row.

The load generator is a minimal HTTP/1.1 client on asyncio streams (keep-alive, one connection per stream) so its
own cost stays small next to what it measures. The same client drives both paths. Each stream's first request of a
phase opens its connection (and, through the gateway, the gateway's connection to the runtime): it is not timed on
either path, since clients keep their connections open. The default 4 rounds of 5 s give each side over 2000
requests, so that p99 rests on 20 or more samples; the figures say when it does not.

At the end the gateway's own counters say whether Redis failed during the run (limits fail open then, and the run
did not measure them).

With --gateways N it runs N gateway processes sharing the key table, the Redis limits and the usage table, as
the chart's gateway replicas do, and spreads the streams over them as a Service would; CPU and counters are
their sums.

    .venv/bin/python -m bench.bench_gateway [--concurrency 100] [--phase-s 5] [--rounds 4] [--plain] [--gateways 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from core.db import apply_migrations, create_pool
from core.inference_keys import generate
from core.processes import ManagedProcess, free_port, http_ok
from devstack import services
from runtime.launch import sim_runtime_process

MODEL = "bench-model"


@dataclass
class Samples:
    ttft_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    errors: int = 0
    untimed: int = 0  # each stream's first request of a phase (it opened the connection)
    wall_s: float = 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class StreamClient:
    """One keep-alive connection that sends streaming completions and times them."""

    def __init__(self, port: int, max_tokens: int, key: str) -> None:
        self.port = port
        body = json.dumps(
            {"model": MODEL, "prompt": "tell me about the ocean", "max_tokens": max_tokens, "stream": True}
        ).encode()
        self.request = (
            b"POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s" % (key.encode(), len(body), body)
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def one(self) -> tuple[float, float]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        start = time.perf_counter()
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        ttft = e2e = None
        tail = b""
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise RuntimeError("connection closed mid-stream")
            now = time.perf_counter()
            window = tail + data
            if ttft is None and b"data: {" in window:
                ttft = now - start
            if e2e is None and b"data: [DONE]" in window:
                e2e = now - start
            if e2e is not None and window.endswith(b"0\r\n\r\n"):  # the terminal chunk of chunked encoding
                break
            tail = window[-32:]
        assert ttft is not None
        return ttft * 1000, e2e * 1000

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


KEY = ""  # the inference key the clients send (the runtime ignores it; the gateway checks it)


async def run_phase(ports: list[int], concurrency: int, seconds: float, max_tokens: int, spread_s: float) -> Samples:
    """`concurrency` closed-loop streams for `seconds`. Stream starts are spread over `spread_s` (one request's
    duration) so the streams do not all arrive, and then tick, in lock-step. Stream i goes to ports[i % len(ports)]
    (several gateway replicas behind a balancer)."""
    samples = Samples()
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        await asyncio.sleep(spread_s * index / concurrency)
        port = ports[index % len(ports)]
        client = StreamClient(port, max_tokens, KEY)
        connecting = True  # the request that opens the connection is not timed (see the module docstring)
        try:
            while time.perf_counter() < deadline:
                try:
                    ttft, e2e = await client.one()
                except (OSError, RuntimeError, asyncio.IncompleteReadError):
                    samples.errors += 1
                    client.close()
                    client = StreamClient(port, max_tokens, KEY)
                    connecting = True
                    continue
                if connecting:
                    connecting = False
                    samples.untimed += 1
                    continue
                samples.ttft_ms.append(ttft)
                samples.e2e_ms.append(e2e)
        finally:
            client.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    samples.wall_s = time.perf_counter() - started
    return samples


def row(name: str, samples: Samples) -> str:
    return (
        f"{name:<10} {len(samples.ttft_ms):>6} {samples.errors:>4}  "
        f"{percentile(samples.ttft_ms, 50):>8.2f} {percentile(samples.ttft_ms, 99):>8.2f}  "
        f"{percentile(samples.e2e_ms, 50):>8.2f} {percentile(samples.e2e_ms, 99):>8.2f}"
    )


@dataclass
class Result:
    totals: dict[str, Samples]
    round_deltas: dict[str, list[float]]  # per round: gateway percentile minus direct percentile, ms
    cpu_percent: dict[str, float]  # share of one core used by each process during the gateway phases


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    args: argparse.Namespace, runtime: ManagedProcess, gateways: list[ManagedProcess], runtime_port: int,
    gateway_ports: list[int],
) -> Result:
    spread_s = (args.ttft_ms + args.max_tokens * args.tpot_ms) / 1000
    # Warm both paths (connections, code paths) before timing anything.
    await run_phase([runtime_port], args.concurrency, 1.0, args.max_tokens, spread_s)
    warm = await run_phase(gateway_ports, args.concurrency, 1.0, args.max_tokens, spread_s)
    args.warm_requests = len(warm.ttft_ms) + warm.errors + warm.untimed
    totals = {"direct": Samples(), "gateway": Samples()}
    deltas: dict[str, list[float]] = {"ttft_p50": [], "ttft_p99": [], "e2e_p50": [], "e2e_p99": []}
    cpu = {"runtime": 0.0, "gateway": 0.0, "client": 0.0}
    gateway_wall = 0.0
    assert runtime.pid is not None and all(gateway.pid is not None for gateway in gateways)

    def gateways_cpu_seconds() -> float:
        return sum(process_cpu_seconds(gateway.pid) for gateway in gateways)  # type: ignore[arg-type]

    for round_index in range(args.rounds):
        phases: dict[str, Samples] = {}
        # Alternate the order each round so neither side always runs right after the other.
        order = [("direct", [runtime_port]), ("gateway", gateway_ports)]
        for name, ports in order if round_index % 2 == 0 else order[::-1]:
            before = (process_cpu_seconds(runtime.pid), gateways_cpu_seconds(), time.process_time())
            started = time.perf_counter()
            phases[name] = phase = await run_phase(ports, args.concurrency, args.phase_s, args.max_tokens, spread_s)
            if name == "gateway":
                gateway_wall += time.perf_counter() - started
                cpu["runtime"] += process_cpu_seconds(runtime.pid) - before[0]
                cpu["gateway"] += gateways_cpu_seconds() - before[1]
                cpu["client"] += time.process_time() - before[2]
            totals[name].ttft_ms += phase.ttft_ms
            totals[name].e2e_ms += phase.e2e_ms
            totals[name].errors += phase.errors
            totals[name].untimed += phase.untimed
            totals[name].wall_s += phase.wall_s
        for key in deltas:
            metric, q = key.split("_")
            values = {name: getattr(phases[name], f"{metric}_ms") for name in phases}
            deltas[key].append(percentile(values["gateway"], int(q[1:])) - percentile(values["direct"], int(q[1:])))
    return Result(totals, deltas, {k: 100 * v / gateway_wall for k, v in cpu.items()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--tpot-ms", type=float, default=20.0)
    parser.add_argument("--phase-s", type=float, default=5.0, help="seconds per timed phase")
    parser.add_argument("--rounds", type=int, default=4, help="direct+gateway phase pairs, alternated")
    parser.add_argument("--plain", action="store_true",
                        help="the proxy alone (--auth none: no keys, limits or metering), to see what those cost")
    parser.add_argument("--gateways", type=int, default=1,
                        help="gateway replicas sharing the keys, limits and usage, the streams spread over them")
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    logs.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    gateway_ports = [free_port() for _ in range(args.gateways)]
    pg_port, redis_port = free_port(), free_port()
    password = secrets.token_urlsafe(24)
    database_url = f"postgresql://bud:{password}@127.0.0.1:{pg_port}/bud"
    redis_url = f"redis://:{password}@127.0.0.1:{redis_port}/0"
    postgres = services.postgres_server(logs, pg_port, password, fast_unsafe=True)
    redis = services.redis_server(logs, redis_port, password)
    runtime_flags = ["--max-num-seqs", "256", "--sim-ttft-ms", str(args.ttft_ms), "--sim-tpot-ms", str(args.tpot_ms)]
    runtime_flags += ["--sim-batch-tpot-factor", "0", "--log-level", "warning"]
    runtime = sim_runtime_process(MODEL, logs, runtime_flags, name="runtime", startup_timeout_s=30)
    runtime_port = int(runtime.url.rsplit(":", 1)[1])
    routes = logs / "routes.json"
    gateway_argv = [sys.executable, "-m", "gateway", "--routes-file", str(routes), "--log-level", "warning"]
    if args.plain:
        gateway_argv += ["--auth", "none"]
    gateways = [
        ManagedProcess(
            f"gateway-{index}",
            [*gateway_argv, "--port", str(port)],
            logs / f"gateway-{index}.log",
            healthy=lambda port=port: http_ok(f"http://127.0.0.1:{port}/healthz"),  # type: ignore[misc]
            env={"BUD_DATABASE_URL": database_url, "BUD_REDIS_URL": redis_url, "BUD_STATE_DIR": str(logs)},
            startup_timeout_s=30,
        )
        for index, port in enumerate(gateway_ports)
    ]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        runtime.start()
        postgres.start()
        redis.start()
        postgres.wait_healthy()
        services.ensure_database(pg_port, password)
        project_id = asyncio.run(_key_and_project(database_url))
        backend = {"endpoint_id": "bench", "weight": 1, "replicas": [runtime.url]}
        routes.write_text(json.dumps({"routes": {MODEL: {"project_id": project_id, "backends": [backend]}}}))
        redis.wait_healthy()
        for gateway in gateways:
            gateway.start()
        runtime.wait_healthy()
        for gateway in gateways:
            gateway.wait_healthy()
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        result = asyncio.run(measure(args, runtime, gateways, runtime_port, gateway_ports))
        counters = gateway_counters(gateway_ports)
        for gateway in gateways:
            gateway.stop()  # SIGTERM: the buffered usage rows are written before it exits
        rows = asyncio.run(_usage_rows(database_url))
    finally:
        for gateway in gateways:
            gateway.stop()
        runtime.stop()
        redis.stop()
        postgres.stop()
        shutil.rmtree(logs, ignore_errors=True)

    direct, via = result.totals["direct"], result.totals["gateway"]
    print(
        f"gateway added latency: {args.concurrency} concurrent streams, {args.max_tokens} tokens each, "
        f"sim ttft {args.ttft_ms:g} ms / tpot {args.tpot_ms:g} ms, {args.rounds}x{args.phase_s:g} s per side, "
        f"{args.gateways} gateway process{'es' if args.gateways > 1 else ''}"
    )
    print(f"{'path':<10} {'reqs':>6} {'errs':>4}  {'ttft p50':>8} {'ttft p99':>8}  {'e2e p50':>8} {'e2e p99':>8}  (ms)")
    print(row("direct", direct))
    print(row("gateway", via))
    print(f"throughput: direct {len(direct.ttft_ms) / direct.wall_s:.0f} req/s, "
          f"gateway {len(via.ttft_ms) / via.wall_s:.0f} req/s ({args.concurrency} streams of {args.max_tokens} tokens)")
    per_request = result.cpu_percent["gateway"] / 100 / (len(via.ttft_ms) / via.wall_s) * 1000
    print(f"gateway cpu per request: {per_request:.2f} ms (less sensitive to other load on the machine than latency)")
    sent = len(via.ttft_ms) + via.errors + via.untimed + args.warm_requests
    fewest = min(len(direct.ttft_ms), len(via.ttft_ms))
    if fewest < 2000:
        print(f"note: p99 over {fewest} requests (under 2000: fewer than 20 samples above it; add --rounds)")
    print(
        f"gateway counters: {counters.get('bud_gateway_limit_store_errors_total', 0):.0f} limit store errors "
        f"(requests admitted without limits meanwhile), "
        f"{counters.get('bud_gateway_upstream_errors_total', 0):.0f} upstream errors"
    )
    if not args.plain:
        print(f"metering: {rows} usage rows for {sent} requests through the gateway (keys, Redis limits and usage on)")
    else:
        rows = sent = 0  # nothing metered
    added = {
        "ttft_p50": percentile(via.ttft_ms, 50) - percentile(direct.ttft_ms, 50),
        "ttft_p99": percentile(via.ttft_ms, 99) - percentile(direct.ttft_ms, 99),
        "e2e_p50": percentile(via.e2e_ms, 50) - percentile(direct.e2e_ms, 50),
        "e2e_p99": percentile(via.e2e_ms, 99) - percentile(direct.e2e_ms, 99),
    }
    print("added by gateway, pooled percentiles (ms):   " + "  ".join(f"{k} {v:+.2f}" for k, v in added.items()))
    spread = {k: (min(v), statistics.median(v), max(v)) for k, v in result.round_deltas.items()}
    print(
        "added by gateway per round, min/median/max (ms): "
        + "  ".join(f"{k} {lo:+.1f}/{mid:+.1f}/{hi:+.1f}" for k, (lo, mid, hi) in spread.items())
    )
    print(
        "cpu during gateway phases (% of one core): "
        + "  ".join(f"{k} {v:.0f}" for k, v in result.cpu_percent.items())
        + f"   load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cpus"
    )
    target_ok = max(added["ttft_p99"], added["e2e_p99"]) < 2.0
    verdict = "met" if target_ok else "NOT met"
    print(f"target p99 added < 2 ms: {verdict}   (run took {time.perf_counter() - started:.0f} s)")
    return 0 if direct.errors == 0 and via.errors == 0 and rows == sent else 1


def gateway_counters(ports: list[int]) -> dict[str, float]:
    """The gateways' Prometheus counters, summed over their labels and the gateways."""
    text = ""
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text += response.read().decode() + "\n"
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_and_labels, _, value = line.rpartition(" ")
        name = name_and_labels.split("{", 1)[0]
        totals[name] = totals.get(name, 0.0) + float(value)
    return totals


async def _key_and_project(database_url: str) -> str:
    """Migrations, a project with a monthly quota and a key with rpm/tpm limits no phase reaches; the key goes into
    KEY for the clients. Returns the project id."""
    global KEY
    pool = await create_pool(database_url)
    try:
        await apply_migrations(pool)
        project_id = await pool.fetchval(
            "INSERT INTO projects (name, monthly_token_quota) VALUES ('bench', 1000000000000) RETURNING id")
        KEY, prefix, digest = generate()
        await pool.execute(
            "INSERT INTO inference_keys (project_id, name, prefix, digest, rpm, tpm) VALUES ($1, 'bench', $2, $3, "
            "100000000, 2000000000)", project_id, prefix, digest)  # fmt: skip
    finally:
        await pool.close()
    return str(project_id)


async def _usage_rows(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval("SELECT count(*) FROM usage_events")
    finally:
        await connection.close()


if __name__ == "__main__":
    sys.exit(main())
