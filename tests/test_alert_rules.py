"""The shipped alert rules (monitoring/rules/bud-alerts.yml): under `promtool` they parse, each alert fires on series
that break its threshold for long enough and stays quiet otherwise, and the thresholds are the API's; evaluated by a
real Prometheus over a deployed endpoint, a fault switch of the simulated runtime fires them into the endpoint's view."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml

from api.live_monitoring import prometheus_view
from control import monitoring
from core.processes import free_port
from devstack import services
from devstack.services import ALERT_RULES
from tests.deploy_helpers import (
    MANUAL_CONFIG,
    available_model,
    create_endpoint,
    local_cluster_id,
    settled,
    wait_endpoint,
)
from tests.model_files import write_tiny_llama

RULES_DIR = ALERT_RULES.parent
RULE_TESTS = RULES_DIR / "bud-alerts.test.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_rules_parse() -> None:
    result = promtool("check", "rules", str(ALERT_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 12 rules found" in result.stdout


def test_each_alert_fires_and_stays_quiet_in_promtool() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == set(alert_rules()), "every shipped alert has a promtool test"


@pytest.mark.parametrize(("alert", "threshold", "changed"), [
    ("InferenceLatencyP99High", "> 2", "> 3"),
    ("TTFTP99High", "> 0.5", "> 0.8"),
    ("GPUUtilizationSustainedHigh", "> 95", "> 99"),
    ("QueueDepthHigh", "> 100", "> 200"),
])
def test_promtool_catches_a_changed_threshold(tmp_path: Path, alert: str, threshold: str, changed: str) -> None:
    """The promtool tests bite: raising one alert's threshold above what its firing series reach fails them."""
    rules = yaml.safe_load(ALERT_RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                assert rule["expr"].endswith(threshold)
                rule["expr"] = rule["expr"].removesuffix(threshold) + changed
    (tmp_path / ALERT_RULES.name).write_text(yaml.safe_dump(rules))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert f"alertname: {alert}" in result.stdout + result.stderr


def test_thresholds_are_the_ones_the_api_judges_with() -> None:
    rules = alert_rules()
    assert rules["InferenceLatencyP99High"]["expr"] == \
        f"bud:inference_latency_seconds:p99 > {monitoring.LATENCY_P99_ALERT_MS / 1000:g}"
    assert rules["TTFTP99High"]["expr"] == f"bud:ttft_seconds:p99 > {monitoring.TTFT_P99_ALERT_MS / 1000:g}"
    assert rules["GPUUtilizationSustainedHigh"]["expr"] == \
        f"bud:gpu_utilization_percent > {monitoring.GPU_UTILIZATION_ALERT:g}"
    assert rules["QueueDepthHigh"]["expr"] == f"bud:queue_depth > {monitoring.QUEUE_DEPTH_ALERT:g}"
    assert "bud_endpoint_target_throughput_tps" in rules["ThroughputBelowTarget"]["expr"]
    # Sustained, not a blip: every alert waits minutes before it fires.
    assert all(rule["for"].endswith("m") and int(rule["for"][:-1]) >= 2 for rule in rules.values())


def test_every_replica_series_is_read_through_the_release_matcher() -> None:
    """The chart scopes the rules to one release by rewriting `release!=""`: a raw series read without it would
    mix every release of the cluster into each release's rules."""
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        for name in re.findall(r"(vllm:\w+|DCGM_FI_\w+)", rule["expr"]):
            assert f'{name}{{release!=""}}' in rule["expr"], (rule.get("record") or rule["alert"], name)


# ---- evaluated by a real Prometheus over a real endpoint ----------------------------------------------------------


def fast_rules(path: Path) -> Path:
    """The shipped rules with every `for` cut to 1 s, so a stack test sees them fire within seconds."""
    rules = yaml.safe_load(ALERT_RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path.write_text(yaml.safe_dump(rules))
    return path


def replica_urls(state_dir: Path, release: str) -> list[str]:
    records = [json.loads(p.read_text()) for p in sorted((state_dir / "replicas" / release).glob("replica-*.json"))]
    return [f"http://127.0.0.1:{record['port']}" for record in records]


async def keep_replica_busy(url: str, model_name: str, stop: asyncio.Event) -> None:
    body = {"model": model_name, "prompt": "hello there", "max_tokens": 3}
    async with httpx.AsyncClient(timeout=60) as client:
        while not stop.is_set():
            assert (await client.post(f"{url}/v1/completions", json=body)).status_code == 200


@asynccontextmanager
async def served_api(api_settings) -> AsyncIterator[str]:
    """A second API over the same stack with other settings, served over HTTP on a free port in this process
    (uvicorn, as `python -m api` runs it): Prometheus scrapes its /metrics, the test calls its routes."""
    from api.app import create_app

    application = create_app(api_settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    async with application.router.lifespan_context(application):
        serving = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(30):
                while not server.started:
                    await asyncio.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await serving


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("alerts") / "tiny"))


async def test_a_slowed_replica_fires_alerts_that_the_endpoint_view_lists(
    api, control_worker, optimizer_worker, prometheus, model, settings, state_dir, admin_token, tmp_path
):
    endpoint = await create_endpoint(api, model["id"], await local_cluster_id(api))
    release = f"ep-{endpoint['id'][:8]}"
    response = await api.put(f"/api/endpoints/{endpoint['id']}/config", json={
        "runtime": "vllm", "optimization_method": "MANUAL", "config": MANUAL_CONFIG, "replicas": 1,
        "performance_targets": {"min_throughput_tps": 1_000_000}})  # no tiny replica makes this many tokens/s
    assert response.status_code == 202, response.text
    await wait_endpoint(api, endpoint["id"], lambda e: e["optimization_status"] != "RUNNING")
    assert (await api.post(f"/api/endpoints/{endpoint['id']}/deploy")).status_code == 202
    assert (await wait_endpoint(api, endpoint["id"], settled))["status"] == "RUNNING"
    [replica] = replica_urls(state_dir, release)

    # A Prometheus evaluating the rules with 1 s `for`s, scraping the same replicas and an API process reading it.
    fast_port = free_port()
    fast_settings = settings.model_copy(update={"prometheus_url": f"http://127.0.0.1:{fast_port}"})
    headers = {"Authorization": f"Bearer {admin_token}"}
    stop = asyncio.Event()
    load: list[asyncio.Task] = []
    async with served_api(fast_settings) as api_url:
        fast = services.prometheus_server(
            tmp_path, fast_port, {"api": [api_url.removeprefix("http://")]}, scrape_interval_s=1,
            rule_files=[fast_rules(tmp_path / "fast-rules.yml")], targets_dir=state_dir / "prometheus" / "targets")
        await asyncio.to_thread(lambda: fast.start().wait_healthy())
        try:
            async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as client:
                async def view() -> dict:
                    answer = await client.get(f"/api/endpoints/{endpoint['id']}/metrics")
                    assert answer.status_code == 200, answer.text
                    return answer.json()

                async def wait_firing(names: set[str], timeout: float = 120) -> dict:
                    try:
                        async with asyncio.timeout(timeout):
                            while True:
                                current = await view()
                                if names <= {alert["name"] for alert in current["alerts"]["firing"]}:
                                    return current
                                await asyncio.sleep(1)
                    except TimeoutError:
                        rules = (await client.get(f"{fast_settings.prometheus_url}/api/v1/rules")).json()
                        targets = (await client.get(f"{fast_settings.prometheus_url}/api/v1/targets")).json()
                        raise AssertionError(f"{names} not firing: {current}\nrules: {rules}\ntargets: {targets}")

                # Served at its own pace, the replica breaks only the throughput target.
                load = [asyncio.create_task(keep_replica_busy(replica, endpoint["name"], stop)) for _ in range(3)]
                healthy = await wait_firing({"ThroughputBelowTarget"})
                assert "TTFTP99High" not in {a["name"] for a in healthy["alerts"]["firing"]}
                [throughput] = [a for a in healthy["alerts"]["firing"] if a["name"] == "ThroughputBelowTarget"]
                assert throughput["release"] == release and throughput["severity"] == "warning"
                assert f"tokens/s below the target of {release}" in throughput["summary"]
                assert 0 < throughput["value"] < 1_000_000
                gpu = healthy["gpu"]
                assert gpu["gpus"] == 1 and 0 <= gpu["utilization_percent"] <= 100
                assert gpu["memory_used_mib"] > 0 and gpu["memory_free_mib"] > 0
                assert gpu["power_w"] == "not measured"  # the simulated GPUs report no power

                # The fault switch: every prefill and token 2000 x slower, so the first token takes over 0.5 s.
                faults = await client.post(f"{replica}/sim/faults", json={"slowdown": 2000}, headers={})
                assert faults.status_code == 200, faults.text
                slowed = await wait_firing({"TTFTP99High", "ThroughputBelowTarget"})
                [ttft] = [a for a in slowed["alerts"]["firing"] if a["name"] == "TTFTP99High"]
                assert ttft["release"] == release and ttft["value"] > 0.5 and ttft["active_since"]
                assert "QueueDepthHigh" not in {a["name"] for a in slowed["alerts"]["firing"] + slowed["alerts"]["pending"]}
        finally:
            stop.set()
            await asyncio.gather(*load, return_exceptions=True)
            await asyncio.to_thread(fast.stop)

    # The test stack's own Prometheus loads the shipped rules, with their minutes-long `for`: at most pending here.
    async with httpx.AsyncClient(timeout=10) as client:
        groups = (await client.get(f"{prometheus}/api/v1/rules")).json()["data"]["groups"]
        shipped = {rule["name"]: rule for group in groups for rule in group["rules"]}
        assert {"TTFTP99High", "ThroughputBelowTarget", "bud:ttft_seconds:p99"} <= set(shipped)
        assert all(rule["health"] == "ok" for rule in shipped.values()), shipped
        assert shipped["TTFTP99High"]["duration"] == 300
        alerts = (await client.get(f"{prometheus}/api/v1/alerts")).json()["data"]["alerts"]
        assert not [a for a in alerts if a["labels"].get("release") == release and a["state"] == "firing"]
        # Its API view (the session's API reads this Prometheus) therefore lists none firing.
        view = (await api.get(f"/api/endpoints/{endpoint['id']}/metrics")).json()
        assert view["alerts"]["firing"] == [] and view["alerts"]["error"] is None

    await api.delete(f"/api/endpoints/{endpoint['id']}")
    await wait_endpoint(api, endpoint["id"], lambda e: False)


async def test_an_unreachable_prometheus_is_named_and_nothing_is_measured() -> None:
    view = await prometheus_view(f"http://127.0.0.1:{free_port()}", uuid.uuid4())
    assert view["alerts"].firing == [] and "did not answer" in view["alerts"].error
    assert set(view["gpu"].model_dump().values()) == {"not measured"}
