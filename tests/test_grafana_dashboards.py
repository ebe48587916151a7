"""The Grafana dashboards (monitoring/grafana): the reviewed JSON is what the generator writes, the chart ships it
(and the alert rules) as a ConfigMap and a PrometheusRule, and every panel's PromQL parses and returns series from a
real Prometheus scraping a deployed endpoint, the gateway, the API and a worker after some traffic."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from clusters.chart_values import CHART_DIR
from clusters.helm import default_helm_binary
from core.processes import free_port
from core.temporal import DATA_CONVERTER
from devstack import services
from monitoring.grafana.dashboards import (
    DASHBOARD_DIR,
    DASHBOARDS,
    chart_copies,
    concrete_query,
    panel_queries,
    render,
)
from tests.deploy_helpers import (
    MANUAL_CONFIG,
    available_model,
    create_endpoint,
    inference_key_headers,
    keep_busy,
    local_cluster_id,
    settled,
    wait_endpoint,
    wait_for_route,
)
from tests.model_files import write_tiny_llama
from tests.test_alert_rules import served_api
from worker.queues import setup_for
from workflows.starters import start_endpoint_reoptimize


def test_reviewed_json_is_what_the_generator_writes() -> None:
    for name, build in DASHBOARDS.items():
        assert (DASHBOARD_DIR / name).read_text() == render(build), "run python -m monitoring.grafana.dashboards"
    for copy, source in chart_copies().items():
        assert copy.read_text() == source.read_text(), f"{copy} is stale: run python -m monitoring.grafana.dashboards"


def test_panels_have_unique_ids_and_only_grafana_variables_we_fill_in() -> None:
    for build in DASHBOARDS.values():
        dashboard = build()
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for title, expr in panel_queries(dashboard):
            assert "$" not in concrete_query(expr), (title, expr)


def helm_template(tmp_path: Path, values: dict) -> dict[str, dict]:
    base = yaml.safe_load((CHART_DIR / "ci" / "vllm-tp4-values.yaml").read_text())
    values_file = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    values_file.write_text(yaml.safe_dump({**base, **values}))
    output = subprocess.run([default_helm_binary(), "template", "ep-1234abcd", str(CHART_DIR), "-n", "bud-endpoints",
                             "-f", str(values_file)], capture_output=True, text=True, check=True).stdout
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in yaml.safe_load_all(output) if doc}


def test_chart_ships_the_rules_scoped_to_its_release_and_the_dashboards(tmp_path: Path) -> None:
    default = helm_template(tmp_path, {})
    assert not [key for key in default if key.startswith(("PrometheusRule/", "ConfigMap/ep-1234abcd-grafana"))]

    manifests = helm_template(tmp_path, {"prometheusRule": {"enabled": True, "labels": {"role": "alert-rules"}},
                                         "grafanaDashboards": {"enabled": True},
                                         "serviceMonitor": {"enabled": True}})
    rule = manifests["PrometheusRule/ep-1234abcd-alerts"]
    assert rule["metadata"]["labels"]["role"] == "alert-rules"
    groups = rule["spec"]["groups"]
    assert [g["name"] for g in groups] == ["bud-endpoint-recording-ep-1234abcd", "bud-endpoint-alerts-ep-1234abcd"]
    exprs = [r["expr"] for g in groups for r in g["rules"]]
    assert not [e for e in exprs if 'release!=""' in e]
    assert all('release="ep-1234abcd"' in e for e in exprs if "vllm:" in e or "DCGM_" in e)
    ttft = next(r for g in groups for r in g["rules"] if r.get("alert") == "TTFTP99High")
    assert ttft["for"] == "5m" and "{{ $labels.release }}" in ttft["annotations"]["summary"]
    # Prometheus takes the rendered groups as a rule file.
    (tmp_path / "rendered.yml").write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rendered.yml")], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    configmap = manifests["ConfigMap/ep-1234abcd-grafana-dashboards"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {json.loads(text)["uid"] for text in configmap["data"].values()} == {"bud-endpoint", "bud-platform"}
    monitor = manifests["ServiceMonitor/ep-1234abcd"]
    assert monitor["spec"]["endpoints"][0]["relabelings"] == [{"targetLabel": "release", "replacement": "ep-1234abcd"}]


# ---- every panel against a real Prometheus -------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("dashboards") / "tiny"))


async def test_every_panel_query_returns_series_after_traffic(
    api, control_worker, optimizer_worker, worker_clients, gateway, prometheus, model, settings, state_dir, tmp_path
):
    endpoint = await create_endpoint(api, model["id"], await local_cluster_id(api))
    response = await api.put(f"/api/endpoints/{endpoint['id']}/config", json={
        "runtime": "vllm", "optimization_method": "MANUAL", "config": MANUAL_CONFIG, "replicas": 1,
        "performance_targets": {"min_throughput_tps": 1_000_000}})
    assert response.status_code == 202, response.text
    await wait_endpoint(api, endpoint["id"], lambda e: e["optimization_status"] != "RUNNING")
    assert (await api.post(f"/api/endpoints/{endpoint['id']}/deploy")).status_code == 202
    assert (await wait_endpoint(api, endpoint["id"], settled))["status"] == "RUNNING"

    # A worker with the SDK's Prometheus metrics (as `python -m worker` runs with BUD_WORKER_METRICS_PORT), on a
    # queue of its own so the workflow below completes there.
    metrics_port, queue = free_port(), f"dashboards-{uuid.uuid4().hex[:6]}"
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{metrics_port}")))
    client = await Client.connect(settings.temporal_address, data_converter=DATA_CONVERTER, runtime=runtime)
    setup = setup_for(settings.control_queue, worker_clients)
    prometheus_port = free_port()
    api_settings = settings.model_copy(update={"prometheus_url": f"http://127.0.0.1:{prometheus_port}"})
    key = inference_key_headers(state_dir)
    stop = asyncio.Event()
    load: list[asyncio.Task] = []
    async with Worker(client, task_queue=queue, workflows=setup.workflows, activities=setup.activities), \
            served_api(api_settings) as api_url:
        prometheus = services.prometheus_server(
            tmp_path, prometheus_port,
            {"api": [api_url.removeprefix("http://")], "gateway": [f"127.0.0.1:{settings.gateway_port}"],
             "workers": [f"127.0.0.1:{metrics_port}"]},
            scrape_interval_s=1, targets_dir=state_dir / "prometheus" / "targets")
        await asyncio.to_thread(lambda: prometheus.start().wait_healthy())
        try:
            async with httpx.AsyncClient(base_url=api_url, timeout=30,
                                         headers=api.headers) as second_api:
                # The deploys panel counts POST .../deploy answers: one more, refused (already running), is traffic.
                await second_api.post(f"/api/endpoints/{endpoint['id']}/deploy")
            await wait_for_route(gateway, endpoint["name"], key)
            load = [asyncio.create_task(keep_busy(gateway, endpoint["name"], stop, max_tokens=8, headers=key))
                    for _ in range(3)]
            handle = await start_endpoint_reoptimize(
                client, settings.model_copy(update={"control_queue": queue}), uuid.UUID(endpoint["id"]), 30)
            await asyncio.wait_for(handle.result(), timeout=120)

            queries = [(name, title, concrete_query(expr)) for name, build in DASHBOARDS.items()
                       for title, expr in panel_queries(build())]
            missing: list = []
            async with httpx.AsyncClient(timeout=10) as http, asyncio.timeout(120):
                while True:
                    missing = []
                    for name, title, query in queries:
                        reply = await http.get(f"{api_settings.prometheus_url}/api/v1/query", params={"query": query})
                        assert reply.status_code == 200, (name, title, query, reply.text)  # it parses
                        if not reply.json()["data"]["result"]:
                            missing.append((name, title, query))
                    if not missing:
                        break
                    await asyncio.sleep(2)
        except TimeoutError:
            raise AssertionError(f"panels without series: {missing}") from None
        finally:
            stop.set()
            await asyncio.gather(*load, return_exceptions=True)
            await asyncio.to_thread(prometheus.stop)

    await api.delete(f"/api/endpoints/{endpoint['id']}")
    await wait_endpoint(api, endpoint["id"], lambda e: False)
