"""The simulated runtime as a client sees it: a real process speaking vLLM's HTTP interface."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.replica_identity import ReplicaIdentity
from runtime.server import CRASH_EXIT_CODE
from runtime.settings import ENV_HEALTH_DELAY_S
from runtime.sse import DONE, parse_sse

VLLM_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:time_to_first_token_seconds",
    "vllm:time_per_output_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:gpu_cache_usage_perc",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
)


def metric(base_url: str, name: str, suffix: str = "") -> float:
    """One sample of a metric family (counters: suffix "_total"; histograms: "_count", "_sum")."""
    text = httpx.get(f"{base_url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name + suffix:
                return sample.value
    raise AssertionError(f"{name}{suffix} not exposed")


@pytest.fixture(scope="module")
def runtime(start_runtime):
    """A shared runtime with fast timings, two served names and a small KV cache."""
    return start_runtime(
        "--served-model-name",
        "sim-a",
        "sim-a-alias",
        "--sim-ttft-ms",
        "30",
        "--sim-tpot-ms",
        "10",
        "--max-model-len",
        "256",
        "--sim-kv-cache-tokens",
        "4096",
    )


def test_health_is_503_while_loading_then_200(start_runtime):
    process = start_runtime("--sim-load-delay-s", "8", wait=False)  # long enough to see 503 on a busy machine
    statuses: list[tuple[float, int]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{process.url}/health", timeout=1).status_code
        except httpx.TransportError:
            time.sleep(0.05)  # not listening yet
            continue
        statuses.append((time.monotonic(), status))
        if status == 503:
            models = httpx.get(f"{process.url}/v1/models")
            if models.status_code == 200:  # loading finished between the two calls (a busy machine)
                assert httpx.get(f"{process.url}/health").status_code == 200
            else:
                assert models.status_code == 503 and models.json()["error"]["type"] == "ServiceUnavailableError"
        if status == 200:
            break
        time.sleep(0.1)
    assert statuses and statuses[0][1] == 503, statuses
    assert statuses[-1][1] == 200, statuses
    first_503 = statuses[0][0]
    assert statuses[-1][0] - first_503 >= 0.5  # loading went on for a while after the port opened
    assert httpx.get(f"{process.url}/v1/models").json()["data"][0]["id"] == "sim-model"


def test_models_lists_every_served_name(runtime):
    body = httpx.get(f"{runtime.url}/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["sim-a", "sim-a-alias"]
    assert all(m["object"] == "model" and m["max_model_len"] == 256 for m in body["data"])


def test_completion_counts_tokens_and_is_deterministic(runtime):
    request = {"model": "sim-a", "prompt": "The capital of France is", "max_tokens": 7}
    first = httpx.post(f"{runtime.url}/v1/completions", json=request).json()
    again = httpx.post(f"{runtime.url}/v1/completions", json=request).json()
    other = httpx.post(f"{runtime.url}/v1/completions", json={**request, "prompt": "Something else"}).json()
    assert first["object"] == "text_completion" and first["model"] == "sim-a"
    choice = first["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["text"].split()) == 7
    assert first["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert again["choices"][0]["text"] == choice["text"]
    assert other["choices"][0]["text"] != choice["text"]
    default = httpx.post(f"{runtime.url}/v1/completions", json={"model": "sim-a", "prompt": "x"}).json()
    assert default["usage"]["completion_tokens"] == 16


def test_chat_completion_answers_as_assistant(runtime):
    started = time.perf_counter()
    response = httpx.post(
        f"{runtime.url}/v1/chat/completions",
        json={
            "model": "sim-a-alias",
            "max_tokens": 5,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
        },
    )
    elapsed = time.perf_counter() - started
    body = response.json()
    assert response.status_code == 200 and body["object"] == "chat.completion"
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant" and len(message["content"].split()) == 5
    assert body["usage"]["completion_tokens"] == 5 and body["usage"]["prompt_tokens"] > 0
    assert elapsed >= 0.07  # 30 ms prefill + 4 x 10 ms between tokens


def test_streamed_completion_matches_unstreamed_text(runtime):
    request = {"model": "sim-a", "prompt": "stream me", "max_tokens": 4}
    plain = httpx.post(f"{runtime.url}/v1/completions", json=request).json()
    response = httpx.post(
        f"{runtime.url}/v1/completions", json={**request, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert events[-1] == DONE
    *tokens, usage = events[:-1]
    assert len(tokens) == 4 and all(e["object"] == "text_completion" for e in tokens)
    assert [e["choices"][0]["finish_reason"] for e in tokens] == [None, None, None, "length"]
    assert len({e["id"] for e in events[:-1]}) == 1
    assert "".join(e["choices"][0]["text"] for e in tokens) == plain["choices"][0]["text"]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4


def test_streamed_chat_sends_role_then_content_deltas(runtime):
    response = httpx.post(
        f"{runtime.url}/v1/chat/completions",
        json={"model": "sim-a", "max_tokens": 3, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    events = parse_sse(response.text)
    assert events[-1] == DONE
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:]]
    assert len(contents) == 3 and all(contents)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in chunks[-1]  # only with stream_options.include_usage, as in OpenAI's API


def test_stream_arrives_token_by_token(runtime):
    arrivals = []
    started = time.perf_counter()
    request = {"model": "sim-a", "prompt": "p", "max_tokens": 20, "stream": True}
    with httpx.stream("POST", f"{runtime.url}/v1/completions", json=request) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.perf_counter() - started)
    assert len(arrivals) == 20
    # 30 ms prefill, then a token every 10 ms: the first token did not wait for the other 19.
    assert arrivals[-1] - arrivals[0] >= 0.15
    assert arrivals[0] < arrivals[-1] / 2


def test_errors_use_openai_error_json(runtime):
    missing = httpx.post(f"{runtime.url}/v1/completions", json={"model": "nope", "prompt": "x"})
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "message": "The model `nope` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
    no_prompt = httpx.post(f"{runtime.url}/v1/completions", json={"model": "sim-a"})
    assert no_prompt.status_code == 400 and "prompt" in no_prompt.json()["error"]["message"]
    not_json = httpx.post(
        f"{runtime.url}/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]["message"]
    too_long = httpx.post(f"{runtime.url}/v1/completions", json={"model": "sim-a", "prompt": "x", "max_tokens": 300})
    assert too_long.status_code == 400 and "maximum context length is 256" in too_long.json()["error"]["message"]


def test_metrics_use_vllm_names_and_count_tokens(runtime):
    text = httpx.get(f"{runtime.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in VLLM_METRICS:
        assert name in families, name
        assert all(s.labels.get("model_name") == "sim-a" for s in families[name].samples)
    assert families["vllm:time_to_first_token_seconds"].type == "histogram"
    assert families["vllm:prompt_tokens"].type == "counter"

    before = {n: metric(runtime.url, n, "_total") for n in ("vllm:prompt_tokens", "vllm:generation_tokens")}
    ttft_count = metric(runtime.url, "vllm:time_to_first_token_seconds", "_count")
    httpx.post(f"{runtime.url}/v1/completions", json={"model": "sim-a", "prompt": "one two three", "max_tokens": 6})
    assert metric(runtime.url, "vllm:prompt_tokens", "_total") == before["vllm:prompt_tokens"] + 3
    assert metric(runtime.url, "vllm:generation_tokens", "_total") == before["vllm:generation_tokens"] + 6
    assert metric(runtime.url, "vllm:time_to_first_token_seconds", "_count") == ttft_count + 1
    assert metric(runtime.url, "vllm:e2e_request_latency_seconds", "_count") >= 1


@pytest.fixture(scope="module")
def small_batch(start_runtime):
    """Two sequences at a time, 40 ms per token."""
    return start_runtime(
        "--max-num-seqs",
        "2",
        "--sim-ttft-ms",
        "20",
        "--sim-tpot-ms",
        "40",
        "--sim-kv-cache-tokens",
        "100000",
        "--max-model-len",
        "4096",
    )


async def test_batch_holds_max_num_seqs_and_queues_the_rest(small_batch):
    body = {"model": "sim-model", "prompt": "a b c d e f g h", "max_tokens": 14}  # ~0.54 s each
    async with httpx.AsyncClient(timeout=30) as client:

        async def timed() -> float:
            started = time.perf_counter()
            response = await client.post(f"{small_batch.url}/v1/completions", json=body)
            assert response.status_code == 200
            return time.perf_counter() - started

        tasks = [asyncio.create_task(timed()) for _ in range(4)]
        deadline = time.monotonic() + 5
        while True:  # until all four have reached the runtime
            running = await asyncio.to_thread(metric, small_batch.url, "vllm:num_requests_running")
            waiting = await asyncio.to_thread(metric, small_batch.url, "vllm:num_requests_waiting")
            if running + waiting == 4 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        cache = await asyncio.to_thread(metric, small_batch.url, "vllm:gpu_cache_usage_perc")
        durations = sorted(await asyncio.gather(*tasks))
    assert (running, waiting) == (2, 2)
    assert 0 < cache < 0.01  # two sequences of ~15 tokens in a 100k-token cache
    assert durations[2] > durations[1] + 0.35  # the queued pair finished a whole request later
    assert await asyncio.to_thread(metric, small_batch.url, "vllm:num_requests_running") == 0
    queue_sum = await asyncio.to_thread(metric, small_batch.url, "vllm:request_queue_time_seconds", "_sum")
    assert queue_sum > 0.7  # two requests each waited ~0.5 s


async def test_client_disconnect_frees_the_batch_slot(small_batch):
    request = {"model": "sim-model", "prompt": "x", "max_tokens": 100, "stream": True}
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("POST", f"{small_batch.url}/v1/completions", json=request) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    break  # read one token, then hang up
        deadline = time.monotonic() + 5
        while await asyncio.to_thread(metric, small_batch.url, "vllm:num_requests_running") != 0:
            assert time.monotonic() < deadline, "slot still held after the client left"
            await asyncio.sleep(0.1)
    # The aborted request counted its tokens but not as a success.
    assert await asyncio.to_thread(metric, small_batch.url, "vllm:request_success", "_total") == 4


def test_fault_switches_fail_health_slow_down_and_crash(start_runtime):
    engine = start_runtime("--sim-ttft-ms", "20", "--sim-tpot-ms", "20")
    request = {"model": "sim-model", "prompt": "x", "max_tokens": 6}

    def timed() -> float:
        started = time.perf_counter()
        assert httpx.post(f"{engine.url}/v1/completions", json=request).status_code == 200
        return time.perf_counter() - started

    normal = min(timed() for _ in range(2))
    state = httpx.post(f"{engine.url}/sim/faults", json={"fail_health": True, "slowdown": 4}).json()
    assert state == {"fail_health": True, "slowdown": 4.0, "crash": False, "health_delay_s": 0.0}
    assert httpx.get(f"{engine.url}/health").status_code == 503
    slowed = timed()  # requests are still served, only slower
    assert slowed >= 0.47 and slowed > 2 * normal  # (20 + 5 x 20 ms) x 4 = 480 ms
    httpx.post(f"{engine.url}/sim/faults", json={"fail_health": False, "slowdown": 1})
    assert httpx.get(f"{engine.url}/health").status_code == 200
    assert httpx.post(f"{engine.url}/sim/faults", json={"slowdown": 0}).status_code == 400

    assert httpx.post(f"{engine.url}/sim/faults", json={"crash": True}).status_code == 200
    assert engine.popen is not None and engine.popen.wait(timeout=10) == CRASH_EXIT_CODE


def test_faults_from_environment_at_start(start_runtime):
    unhealthy = start_runtime(env={"BUD_SIM_FAIL_HEALTH": "1"}, wait=False)
    crashing = start_runtime(env={"BUD_SIM_CRASH": "1"}, wait=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{unhealthy.url}/v1/models").status_code == 200:
                break  # loaded...
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    assert httpx.get(f"{unhealthy.url}/health").status_code == 503  # ...yet reporting unhealthy
    assert crashing.popen is not None and crashing.popen.wait(timeout=30) == CRASH_EXIT_CODE


def test_health_names_the_replica_it_was_launched_as_and_can_answer_slowly(start_runtime):
    identity = ReplicaIdentity.new("ep-1234abcd", 2)
    replica = start_runtime(env={**identity.env(), ENV_HEALTH_DELAY_S: "0.6"})
    started = time.perf_counter()
    answer = httpx.get(f"{replica.url}/health")
    assert time.perf_counter() - started >= 0.6  # an overloaded host's slow answer
    assert answer.status_code == 200 and answer.json() == identity.model_dump()
    httpx.post(f"{replica.url}/sim/faults", json={"health_delay_s": 0, "fail_health": True}).raise_for_status()
    unhealthy = httpx.get(f"{replica.url}/health", timeout=0.5)  # fast again; unhealthy, yet still itself
    assert unhealthy.status_code == 503 and unhealthy.json()["token"] == identity.token
    assert httpx.post(f"{replica.url}/sim/faults", json={"health_delay_s": -1}).status_code == 400


def test_load_failures_exit_with_the_reason_in_the_log(start_runtime, log_text, tmp_path):
    model_dir = tmp_path / "big"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    with open(model_dir / "model.safetensors", "wb") as weights:
        weights.truncate(3 * 10**9)  # sparse: 3 GB of apparent size, no disk used
    missing = start_runtime(model=str(tmp_path / "absent"), wait=False)
    too_big = start_runtime("--sim-gpu-memory-gb", "2", model=str(model_dir), wait=False)
    load_error = start_runtime(env={"BUD_SIM_LOAD_ERROR": "unsupported rope scaling"}, wait=False)
    expected = [
        (missing, "model load failed [path_not_accessible]"),
        (too_big, "model load failed [insufficient_gpu_memory]: weights need 3.00 GB per GPU"),
        (load_error, "model load failed [load_error]: unsupported rope scaling"),
    ]
    for process, message in expected:
        assert process.popen is not None and process.popen.wait(timeout=30) == 1
        assert message in log_text(process)


def test_api_key_and_unknown_vllm_flags(start_runtime, log_text):
    process = start_runtime("--api-key", "s3cret", "--dtype", "bfloat16", "--enforce-eager", "--some-new-flag", "x")
    assert httpx.get(f"{process.url}/v1/models").status_code == 401
    ok = httpx.get(f"{process.url}/v1/models", headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert httpx.get(f"{process.url}/health").status_code == 200  # health stays open for probes
    assert "ignoring flags the simulated runtime does not know: --some-new-flag x" in log_text(process)


def dcgm_samples(base_url: str) -> dict[str, list]:
    text = httpx.get(f"{base_url}/metrics").text
    return {f.name: f.samples for f in text_string_to_metric_families(text) if f.name.startswith("DCGM_")}


def test_simulated_gpus_export_dcgm_metrics(start_runtime):
    """Two GPUs (tensor parallel 2) of 80 GB, half reserved by the engine: DCGM's per-GPU framebuffer figures, and
    utilization that follows whether a batch runs."""
    process = start_runtime("--tensor-parallel-size", "2", "--sim-gpu-memory-gb", "80", "--gpu-memory-utilization",
                            "0.5", "--sim-ttft-ms", "1500", "--sim-tpot-ms", "1")
    idle = dcgm_samples(process.url)
    assert [s.labels["gpu"] for s in idle["DCGM_FI_DEV_GPU_UTIL"]] == ["0", "1"]
    assert {s.value for s in idle["DCGM_FI_DEV_GPU_UTIL"]} == {0}
    total_mib = round(80e9 / 2**20)
    assert {s.value for s in idle["DCGM_FI_DEV_FB_USED"]} == {round(total_mib * 0.5)}
    assert {s.value for s in idle["DCGM_FI_DEV_FB_FREE"]} == {total_mib - round(total_mib * 0.5)}
    assert "DCGM_FI_DEV_POWER_USAGE" not in idle  # not simulated, so not made up

    with httpx.Client(timeout=30) as client:
        request = threading.Thread(target=client.post, args=(f"{process.url}/v1/completions",),
                                   kwargs={"json": {"model": "sim-model", "prompt": "x", "max_tokens": 1}})
        request.start()
        time.sleep(0.3)
        dcgm_samples(process.url)  # a sample begins while the prefill runs
        time.sleep(0.6)
        busy = dcgm_samples(process.url)
        request.join()
    assert all(s.value >= 90 for s in busy["DCGM_FI_DEV_GPU_UTIL"]), busy["DCGM_FI_DEV_GPU_UTIL"]


def test_gpu_memory_unknown_means_no_framebuffer_metrics(runtime):
    samples = dcgm_samples(runtime.url)
    assert len(samples["DCGM_FI_DEV_GPU_UTIL"]) == 1
    assert "DCGM_FI_DEV_FB_USED" not in samples and "DCGM_FI_DEV_FB_FREE" not in samples
