"""Activities of BenchmarkEndpoint: plan the sweep, run one level through the gateway, record what it measured.

A level is a closed loop of `concurrency` clients sending streamed completions through the gateway (the prompt as
token ids, so its length is exact; `ignore_eos` and `min_tokens` so every answer is `output_tokens` long), timing
on the client the first token and every token after it. Each level mints its own inference key of the endpoint's
project (restricted to the endpoint's route, expiring soon after the level's budget) and revokes it when done; a
retried level revokes the key of the attempt before it first, so no key is ever in the workflow's history.

Progress (every finished request's timings) is heartbeated; a level retried after its worker died goes on from
the requests the dead attempt finished.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone

import asyncpg
import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeats import heartbeating
from budsim.errors import InvalidRequest
from control import benchmarks as judge
from control.measurements import group_calibration
from control.payloads.benchmarks import (
    BenchmarkInput,
    BenchmarkPlan,
    LevelInput,
    LevelPlan,
    LevelRecord,
    LevelResult,
    RunProgress,
)
from control.payloads.deployments import EndpointStatus
from control.payloads.measurements import MeasurementCreate, MeasurementSource, SourceKind
from control.store import benchmarks as runs
from control.store import endpoints, inference_keys, measurements, models
from core.logging import get_logger
from core.model_facts import ModelArchitecture
from core.settings import Settings

log = get_logger(__name__)
HEARTBEAT_S = 1.0
KEY_VISIBLE_TIMEOUT_S = 30.0
MAX_ERROR_CHARS = 300


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type="BenchmarkInvalid", non_retryable=True)


class BenchmarkActivities:
    def __init__(self, pool: asyncpg.Pool, http: httpx.AsyncClient, settings: Settings):
        self.pool = pool
        self.http = http  # short calls (is the key live yet); each level opens its own streaming client
        self.settings = settings

    @activity.defn
    async def load_benchmark_plan(self, request: BenchmarkInput) -> BenchmarkPlan:
        """The endpoint as it runs now, each level's size and the optimizer's prediction for it (calibrated on the
        group's measurements so far, as the optimizer's would be)."""
        async with self.pool.acquire() as conn:
            endpoint = await endpoints.get_endpoint(conn, request.endpoint_id, request.project_id)
            if endpoint is None or endpoint.status != EndpointStatus.RUNNING:
                raise _invalid(f"the endpoint is {endpoint.status if endpoint else 'gone'}, not RUNNING")
            model = await models.get_model(conn, endpoint.model_id)
            config = judge.measured_config(endpoint, model)
            try:
                calibration = await group_calibration(conn, endpoint.project_id, model.id, model.name,
                                                      ModelArchitecture.model_validate(model.facts), config.gpu_type,
                                                      endpoint.runtime)
            except (InvalidRequest, ValueError):
                calibration = None  # the benchmark still measures; its prediction is the cold one
        sweep = request.request
        levels = [LevelPlan(index=index, concurrency=concurrency, requests=sweep.requests_for(concurrency),
                            predicted=judge.predicted(endpoint, model, sweep.input_tokens, sweep.output_tokens,
                                                      concurrency, calibration))
                  for index, concurrency in enumerate(sweep.concurrency)]
        return BenchmarkPlan(run_id=request.run_id, endpoint_id=endpoint.id, project_id=endpoint.project_id,
                             endpoint_name=endpoint.name, input_tokens=sweep.input_tokens,
                             output_tokens=sweep.output_tokens, max_duration_s=sweep.max_duration_s,
                             config=config, levels=levels)

    @activity.defn
    async def set_benchmark_status(self, progress: RunProgress) -> None:
        async with self.pool.acquire() as conn:
            await runs.set_status(conn, progress.run_id, progress.status, progress.step, progress.error)

    @activity.defn
    async def revoke_benchmark_keys(self, progress: RunProgress) -> None:
        """Every key the run minted, whatever became of its levels."""
        async with self.pool.acquire() as conn:
            await runs.revoke_keys_named(conn, progress.project_id, runs.key_name(progress.run_id))

    @activity.defn
    async def record_benchmark_level(self, record: LevelRecord) -> LevelResult:
        """The level's measurement (once per run and level) and its place in the run's results."""
        plan, config = record.plan, record.plan.config
        result = record.result.model_copy(update={"predicted": plan.levels[record.result.index].predicted})
        async with self.pool.acquire() as conn:
            if result.ttft_p50_ms is not None and result.tpot_p50_ms is not None:
                measurement = MeasurementCreate(
                    model_id=config.model_id, model_name=config.model_name[:200], architecture=config.architecture,
                    parameter_count=config.parameter_count, gpu_type=config.gpu_type, runtime=config.runtime,
                    precision=config.precision, tp=config.tp, pp=config.pp, max_num_seqs=config.max_num_seqs,
                    max_num_batched_tokens=config.max_num_batched_tokens, input_tokens=plan.input_tokens,
                    output_tokens=plan.output_tokens, concurrency=result.concurrency,
                    ttft_p50_ms=result.ttft_p50_ms, ttft_p99_ms=result.ttft_p99_ms, tpot_p50_ms=result.tpot_p50_ms,
                    tpot_p99_ms=result.tpot_p99_ms, throughput_tps=result.throughput_tps,
                    request_count=result.completed,
                    source=MeasurementSource(kind=SourceKind.BENCHMARK, id=str(plan.run_id)))
                row = await measurements.record_measurement(conn, plan.project_id, measurement,
                                                            f"benchmark:{plan.run_id}:{result.index}")
                result = result.model_copy(update={"measurement_id": row.id})
            await runs.record_level(conn, plan.run_id, result.model_dump(mode="json"))
        return result

    # ------------------------------------------------------------------------------------------ one level
    async def _mint_key(self, level: LevelInput) -> str:
        name = runs.key_name(level.run_id, level.index)
        expires = datetime.now(timezone.utc) + timedelta(seconds=level.budget_s + 300)
        async with self.pool.acquire() as conn, conn.transaction():
            await runs.revoke_keys_named(conn, level.project_id, name)  # an earlier attempt's
            _, plaintext = await inference_keys.create_key(conn, level.project_id, name, routes=[level.endpoint_name],
                                                           expires_at=expires)
        return plaintext

    async def _revoke_key(self, level: LevelInput) -> None:
        async with self.pool.acquire() as conn:
            await runs.revoke_keys_named(conn, level.project_id, runs.key_name(level.run_id, level.index))

    async def _wait_until_served(self, base: str, headers: dict, endpoint_name: str) -> None:
        """The gateway reloads keys and routes on its own clock: wait until it lists the endpoint for this key."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KEY_VISIBLE_TIMEOUT_S
        last = ""
        while loop.time() < deadline:
            try:
                reply = await self.http.get(f"{base}/models", headers=headers, timeout=5)
                if reply.status_code == 200 and endpoint_name in [m.get("id") for m in reply.json().get("data", [])]:
                    return
                last = f"HTTP {reply.status_code}"
            except (httpx.HTTPError, ValueError) as error:
                last = str(error) or type(error).__name__
            await asyncio.sleep(0.2)
        raise ApplicationError(f"the gateway at {base} did not serve {endpoint_name} with the run's key within "
                               f"{KEY_VISIBLE_TIMEOUT_S:g} s ({last})", type="GatewayUnavailable")

    @activity.defn
    async def run_benchmark_level(self, level: LevelInput) -> LevelResult:
        info = activity.info()
        resumed = info.heartbeat_details[0] if info.heartbeat_details else {}
        progress = {"samples": list(resumed.get("samples", [])), "errors": int(resumed.get("errors", 0)),
                    "error_sample": resumed.get("error_sample"), "elapsed_s": float(resumed.get("elapsed_s", 0.0)),
                    "tokens": int(resumed.get("tokens", 0))}
        if resumed:
            log.info("benchmark level %d resumes after %d finished requests", level.index, len(progress["samples"]))
        base = self.settings.gateway_url.rstrip("/")
        key = await self._mint_key(level)
        headers = {"Authorization": f"Bearer {key}"}
        try:
            async with heartbeating(progress, every_s=HEARTBEAT_S):
                await self._wait_until_served(base, headers, level.endpoint_name)
                timed_out = await self._load(level, base, headers, progress)
        finally:
            await self._revoke_key(level)
        result = self._summary(level, progress, timed_out, info.attempt)
        inherited = len(resumed.get("samples", [])) + int(resumed.get("errors", 0))
        return result.model_copy(update={"resumed_requests": inherited})

    async def _load(self, level: LevelInput, base: str, headers: dict, progress: dict) -> bool:
        """Run the level's remaining requests with `concurrency` clients; True if the budget ran out first."""
        done_before = len(progress["samples"]) + progress["errors"]
        remaining = max(level.requests - done_before, 0)
        budget = max(level.budget_s - progress["elapsed_s"], 0.0)
        if remaining == 0:
            return False
        if budget <= 0:
            return True
        body = {"model": level.endpoint_name, "prompt": [1000 + i % 20_000 for i in range(level.input_tokens)],
                "max_tokens": level.output_tokens, "min_tokens": level.output_tokens, "ignore_eos": True,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        queue = iter(range(remaining))
        started = time.perf_counter()
        elapsed_before = progress["elapsed_s"]
        limits = httpx.Limits(max_connections=level.concurrency, max_keepalive_connections=level.concurrency)
        timeout = httpx.Timeout(connect=10, read=120, write=30, pool=budget + 10)

        async def client(http: httpx.AsyncClient) -> None:
            for _ in queue:
                sample = await self._one_request(http, f"{base}/completions", headers, body)
                if isinstance(sample, str):
                    progress["errors"] += 1
                    progress["error_sample"] = progress["error_sample"] or sample[:MAX_ERROR_CHARS]
                else:
                    progress["samples"].append(sample[:2])
                    progress["tokens"] += sample[2]
                progress["elapsed_s"] = elapsed_before + time.perf_counter() - started

        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            try:
                async with asyncio.timeout(budget):
                    await asyncio.gather(*(client(http) for _ in range(level.concurrency)))
            except TimeoutError:
                progress["elapsed_s"] = elapsed_before + time.perf_counter() - started
                return True
        progress["elapsed_s"] = elapsed_before + time.perf_counter() - started
        return False

    @staticmethod
    async def _one_request(http: httpx.AsyncClient, url: str, headers: dict,
                           body: dict) -> tuple[float, float | None, int] | str:
        """(ttft_ms, tpot_ms, tokens) of one streamed completion, or why it failed."""
        sent = time.perf_counter()
        token_times: list[float] = []
        usage_tokens = None
        try:
            async with http.stream("POST", url, json=body, headers=headers) as reply:
                if reply.status_code != 200:
                    text = (await reply.aread()).decode("utf-8", "replace")
                    return f"HTTP {reply.status_code}: {text[:MAX_ERROR_CHARS]}"
                async for line in reply.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    now = time.perf_counter()
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        return f"stream error: {str(chunk['error'])[:MAX_ERROR_CHARS]}"
                    if any(choice.get("text") or (choice.get("delta") or {}).get("content")
                           for choice in chunk.get("choices") or []):
                        token_times.append(now)
                    usage = chunk.get("usage")
                    if usage and isinstance(usage.get("completion_tokens"), int):
                        usage_tokens = usage["completion_tokens"]
        except (httpx.HTTPError, ValueError, AttributeError) as error:
            return f"{type(error).__name__}: {str(error)[:MAX_ERROR_CHARS]}"
        if not token_times:
            return "the stream ended without a token"
        tokens = usage_tokens or len(token_times)
        ttft_ms = (token_times[0] - sent) * 1000
        tpot_ms = ((token_times[-1] - token_times[0]) * 1000 / (len(token_times) - 1)
                   if len(token_times) > 1 else None)
        return ttft_ms, tpot_ms, tokens

    @staticmethod
    def _summary(level: LevelInput, progress: dict, timed_out: bool, attempt: int) -> LevelResult:
        samples = progress["samples"]
        ttfts = [sample[0] for sample in samples]
        tpots = [sample[1] for sample in samples if sample[1] is not None]
        elapsed = progress["elapsed_s"]
        return LevelResult(
            index=level.index, concurrency=level.concurrency, requests=level.requests, completed=len(samples),
            errors=progress["errors"], error_sample=progress["error_sample"], timed_out=timed_out, attempts=attempt,
            duration_s=round(elapsed, 3), ttft_p50_ms=judge.percentile(ttfts, 50),
            ttft_p99_ms=judge.percentile(ttfts, 99), tpot_p50_ms=judge.percentile(tpots, 50),
            tpot_p99_ms=judge.percentile(tpots, 99),
            throughput_tps=(progress["tokens"] / elapsed) if elapsed > 0 and samples else None)

