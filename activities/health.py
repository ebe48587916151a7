"""Health checks of a deployed release, speaking the runtime's API as a client would."""

from __future__ import annotations

import json
import time

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from control.payloads.deployments import HealthProbeInput, HealthReport

PROMPT = [{"role": "user", "content": "Reply with one short sentence: are you ready?"}]


class HealthActivities:
    def __init__(self, http: httpx.AsyncClient):
        self.http = http

    @activity.defn
    async def check_ready(self, probe: HealthProbeInput) -> None:
        """Readiness (/health 200) and the model is loaded (/v1/models lists it)."""
        try:
            health = await self.http.get(f"{probe.url}/health")
        except httpx.HTTPError as error:
            raise ApplicationError(f"{probe.url}/health unreachable: {error}", type="NotReady") from error
        if health.status_code != 200:
            raise ApplicationError(f"{probe.url}/health answered {health.status_code}", type="NotReady")
        listed = (await self.http.get(f"{probe.url}/v1/models")).json()
        names = [model.get("id") for model in listed.get("data", [])]
        if probe.served_model_name not in names:
            raise ApplicationError(f"the runtime serves {names}, not {probe.served_model_name!r}: the model is not loaded",
                                   type="ModelNotLoaded")

    @activity.defn
    async def test_inference(self, probe: HealthProbeInput) -> HealthReport:
        """A short chat completion, plain and streamed; latency recorded."""
        body = {"model": probe.served_model_name, "messages": PROMPT, "max_tokens": 8}
        started = time.perf_counter()
        plain = await self.http.post(f"{probe.url}/v1/chat/completions", json=body)
        latency_ms = (time.perf_counter() - started) * 1000
        if plain.status_code != 200:
            raise ApplicationError(f"test completion failed: HTTP {plain.status_code} {plain.text[:200]}",
                                   type="InferenceFailed")
        text = plain.json()["choices"][0]["message"]["content"]
        chunks, first_token_ms = 0, None
        started = time.perf_counter()
        async with self.http.stream("POST", f"{probe.url}/v1/chat/completions", json={**body, "stream": True}) as stream:
            if stream.status_code != 200:
                raise ApplicationError(f"streamed test completion failed: HTTP {stream.status_code}", type="InferenceFailed")
            done = False
            async for line in stream.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                json.loads(line[len("data: "):])
                chunks += 1
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - started) * 1000
        if not done or chunks == 0:
            raise ApplicationError("streamed test completion ended without [DONE]", type="InferenceFailed")
        return HealthReport(replicas_ready=1, completion_latency_ms=round(latency_ms, 2),
                            stream_first_token_ms=round(first_token_ms or 0.0, 2), stream_chunks=chunks,
                            sample_text=text[:200])
