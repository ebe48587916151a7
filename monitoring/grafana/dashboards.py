"""Grafana dashboards for Bud Foundry, generated here and kept as reviewed JSON beside this file.
`python -m monitoring.grafana.dashboards` rewrites monitoring/grafana/dashboards/*.json and copies them and the alert
rules into charts/bud-runtime/files/ (the chart must hold real files: its folder is copied alone into the image);
tests check that every copy matches.

- bud-endpoint: one endpoint's serving metrics (vLLM's names, the simulated runtime's too), replicas and GPUs (DCGM),
  with the alert rules' recording series and the endpoint's throughput target.
- bud-platform: deploys and API latency, workflow latency (the Temporal SDK's worker metrics), gateway requests and
  tokens by route.
Every panel's PromQL uses only `$release` and `$__rate_interval`, which `concrete_query` fills in for tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MONITORING_DIR = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = MONITORING_DIR / "grafana" / "dashboards"
ALERT_RULES = MONITORING_DIR / "rules" / "bud-alerts.yml"
CHART_FILES = MONITORING_DIR.parent / "charts" / "bud-runtime" / "files"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RELEASE = 'release=~"$release"'


def concrete_query(expr: str, release: str = ".+", rate_interval: str = "1m") -> str:
    """A panel's PromQL as Prometheus itself takes it: Grafana's variables replaced."""
    return expr.replace("$release", release).replace("$__rate_interval", rate_interval)


def _panel(panel_id: int, title: str, unit: str, targets: list[tuple[str, str]], x: int, y: int,
           width: int = 12, description: str = "") -> dict[str, Any]:
    return {
        "id": panel_id, "type": "timeseries", "title": title, "description": description, "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": width, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)],
    }


def _grid(panels: list[tuple[str, str, list[tuple[str, str]], str]]) -> list[dict[str, Any]]:
    """Two panels a row, in the order given."""
    return [_panel(i + 1, title, unit, targets, x=12 * (i % 2), y=8 * (i // 2), description=description)
            for i, (title, unit, targets, description) in enumerate(panels)]


def _dashboard(uid: str, title: str, panels: list[dict[str, Any]], variables: list[dict[str, Any]]) -> dict[str, Any]:
    datasource_variable = {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                           "current": {}, "hide": 0}
    return {
        "uid": uid, "title": title, "tags": ["bud-foundry"], "timezone": "browser", "schemaVersion": 39,
        "version": 1, "editable": True, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [datasource_variable, *variables]},
        "panels": panels, "annotations": {"list": []},
    }


def _quantile(q: float, histogram: str) -> str:
    return f"histogram_quantile({q}, sum by (release, le) (rate({histogram}_bucket{{{RELEASE}}}[$__rate_interval])))"


def endpoint_dashboard() -> dict[str, Any]:
    release_variable = {
        "name": "release", "label": "Endpoint release", "type": "query", "datasource": DATASOURCE,
        "query": {"query": "label_values(vllm:num_requests_running, release)", "refId": "release"},
        "definition": "label_values(vllm:num_requests_running, release)", "refresh": 2, "multi": True,
        "includeAll": True, "allValue": ".+", "current": {}, "hide": 0, "sort": 1,
    }
    panels = _grid([
        ("Time to first token", "s", [
            (_quantile(0.5, "vllm:time_to_first_token_seconds"), "p50 {{release}}"),
            (f"bud:ttft_seconds:p99{{{RELEASE}}}", "p99 (5m, alert > 0.5 s) {{release}}")],
         "TTFTP99High fires when p99 stays above 500 ms for 5 minutes."),
        ("Time per output token", "s", [
            (_quantile(0.5, "vllm:time_per_output_token_seconds"), "p50 {{release}}"),
            (f"bud:tpot_seconds:p99{{{RELEASE}}}", "p99 (5m) {{release}}")], ""),
        ("End-to-end request latency", "s", [
            (_quantile(0.5, "vllm:e2e_request_latency_seconds"), "p50 {{release}}"),
            (f"bud:inference_latency_seconds:p99{{{RELEASE}}}", "p99 (5m, alert > 2 s) {{release}}")],
         "InferenceLatencyP99High fires when p99 stays above 2 s for 5 minutes."),
        ("Throughput", "tps", [
            (f"sum by (release) (rate(vllm:generation_tokens_total{{{RELEASE}}}[$__rate_interval]))",
             "generated tokens/s {{release}}"),
            (f"max by (release) (bud_endpoint_target_throughput_tps{{{RELEASE}}})", "target {{release}}")],
         "Generated tokens per second over all replicas, and the endpoint's min_throughput_tps target."),
        ("Requests", "reqps", [
            (f"sum by (release) (rate(vllm:request_success_total{{{RELEASE}}}[$__rate_interval]))",
             "finished/s {{release}}")], ""),
        ("Queue depth and running requests", "short", [
            (f"bud:queue_depth{{{RELEASE}}}", "waiting (alert > 100) {{release}}"),
            (f"sum by (release) (vllm:num_requests_running{{{RELEASE}}})", "running {{release}}")],
         "QueueDepthHigh fires when more than 100 requests wait for 2 minutes."),
        ("Replicas", "short", [
            (f"count by (release) (vllm:num_requests_running{{{RELEASE}}})", "replicas reporting {{release}}")],
         "Replicas whose metrics Prometheus scrapes."),
        ("KV cache usage", "percentunit", [
            (f"avg by (release) (vllm:gpu_cache_usage_perc{{{RELEASE}}})", "{{release}}")], ""),
        ("GPU utilization", "percent", [
            (f"bud:gpu_utilization_percent{{{RELEASE}}}", "average (alert > 95 % for 5m) {{release}}"),
            (f"max by (release) (DCGM_FI_DEV_GPU_UTIL{{{RELEASE}}})", "busiest GPU {{release}}")],
         "DCGM exporter's DCGM_FI_DEV_GPU_UTIL (the simulated runtime exports it from its busy time)."),
        ("GPU memory", "decmbytes", [
            (f"sum by (release) (DCGM_FI_DEV_FB_USED{{{RELEASE}}})", "used {{release}}"),
            (f"sum by (release) (DCGM_FI_DEV_FB_FREE{{{RELEASE}}})", "free {{release}}")],
         "Framebuffer over the release's GPUs (DCGM, MiB)."),
    ])
    panels.append({"id": len(panels) + 1, "type": "alertlist", "title": "Alerts", "datasource": DATASOURCE,
                   "gridPos": {"x": 0, "y": 8 * ((len(panels) + 1) // 2), "w": 24, "h": 6},
                   "options": {"alertListOptions": {"stateFilter": {"firing": True, "pending": True},
                                                    "dashboardAlerts": False},
                               "alertName": "", "maxItems": 20, "sortOrder": 1, "showInstances": True}})
    return _dashboard("bud-endpoint", "Bud Foundry / Endpoint", panels, [release_variable])


def platform_dashboard() -> dict[str, Any]:
    panels = _grid([
        ("Deploys requested", "short", [
            ('sum by (status) (increase(bud_api_requests_total{method="POST", '
             'route="/api/endpoints/{endpoint_id}/deploy"}[$__rate_interval]))', "HTTP {{status}}")],
         "POST /api/endpoints/{id}/deploy answered, by status (202: a deploy workflow started)."),
        ("API latency p99 by route", "s", [
            ("histogram_quantile(0.99, sum by (route, le) (rate(bud_api_request_seconds_bucket[$__rate_interval])))",
             "{{route}}")], ""),
        ("Workflow latency p95 by type", "ms", [
            ("histogram_quantile(0.95, sum by (workflow_type, le) "
             "(rate(temporal_workflow_endtoend_latency_bucket[$__rate_interval])))", "{{workflow_type}}")],
         "Start to close of each workflow the workers completed (Temporal SDK metrics, milliseconds)."),
        ("Workflows completed and failed", "short", [
            ("sum by (workflow_type) (increase(temporal_workflow_completed[$__rate_interval]))",
             "completed {{workflow_type}}"),
            # 0 for the types that completed without failures, rather than no line at all
            ("sum by (workflow_type) (increase(temporal_workflow_failed[$__rate_interval])) or "
             "0 * sum by (workflow_type) (increase(temporal_workflow_completed[$__rate_interval]))",
             "failed {{workflow_type}}")], ""),
        ("Gateway requests by route", "reqps", [
            ("sum by (route, status) (rate(bud_gateway_project_requests_total[$__rate_interval]))",
             "{{route}} {{status}}")], ""),
        ("Gateway tokens by route", "tps", [
            ("sum by (route) (rate(bud_gateway_prompt_tokens_total[$__rate_interval]))", "prompt {{route}}"),
            ("sum by (route) (rate(bud_gateway_completion_tokens_total[$__rate_interval]))", "completion {{route}}")],
         ""),
        ("Gateway upstream latency p99 (TTFT of streams)", "s", [
            ("histogram_quantile(0.99, sum by (model, le) "
             "(rate(bud_gateway_upstream_latency_seconds_bucket[$__rate_interval])))", "{{model}}")], ""),
        ("Gateway requests in flight", "short", [
            ("sum by (model) (bud_gateway_requests_in_flight)", "{{model}}")], ""),
    ])
    return _dashboard("bud-platform", "Bud Foundry / Platform", panels, [])


DASHBOARDS = {"bud-endpoint.json": endpoint_dashboard, "bud-platform.json": platform_dashboard}


def render(build) -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query the dashboard runs."""
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def chart_copies() -> dict[Path, Path]:
    """Chart file -> its source."""
    copies = {CHART_FILES / "grafana" / name: DASHBOARD_DIR / name for name in DASHBOARDS}
    copies[CHART_FILES / ALERT_RULES.name] = ALERT_RULES
    return copies


def main() -> int:
    DASHBOARD_DIR.mkdir(exist_ok=True)
    for name, build in DASHBOARDS.items():
        (DASHBOARD_DIR / name).write_text(render(build))
        print(DASHBOARD_DIR / name)
    for copy, source in chart_copies().items():
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(source.read_text())
        print(copy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
