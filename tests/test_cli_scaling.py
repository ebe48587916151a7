"""`bud endpoints autoscale|load|metrics|benchmark` against the API as `python -m api` serves it, the real gateway,
simulated replicas and Prometheus: the autoscaler handed a queue-depth target, bounded streaming load through the
gateway whose progress lines show the replicas rising, the monitoring printed as measured or "not measured", a
benchmark sweep's measured-vs-predicted table; `--json` equal to the API's JSON; exit codes 0, 1 and 2."""

from __future__ import annotations

import json
import re

import pytest

from cli.endpoints import METRIC_ROWS
from tests.deploy_helpers import available_model, local_cluster_id, running_endpoint, wait_endpoint, wait_for_route
from tests.model_files import write_tiny_llama
from tests.test_cli_endpoints import api_url, runner_for  # noqa: F401 (api_url is a fixture)


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("cli-scaling") / "m"))


@pytest.mark.timeout(1200)  # a deploy, a minute of load, a sweep: minutes on a loaded machine
async def test_autoscale_watch_the_load_then_metrics_and_a_benchmark(
        api, api_url, admin_token, control_worker, optimizer_worker, gateway, prometheus, model, state_dir):
    endpoint = await running_endpoint(api, model["id"], await local_cluster_id(api))
    name, endpoint_id = endpoint["name"], endpoint["id"]
    cli = runner_for(api_url, admin_token)
    key = (state_dir / "inference-key").read_text().strip()
    try:
        # The autoscaler gets the queue-depth target, a short scale-down window, 1..3 replicas.
        on = await cli("endpoints", "autoscale", name, "--min", "1", "--max", "3", "--target-queue-depth", "4",
                       "--scale-down-window", "3", "--json")
        assert on.exit_code == 0, on.output
        spec = json.loads(on.stdout)["autoscaling"]
        assert spec == (await api.get(f"/api/endpoints/{endpoint_id}")).json()["autoscaling"]
        assert (spec["enabled"], spec["min_replicas"], spec["max_replicas"]) == (True, 1, 3)
        assert spec["metrics"] == [{"type": "External", "external": {
            "metric": {"name": "inference_queue_depth", "selector": None},
            "target": {"type": "Value", "averageUtilization": None, "value": 4.0, "averageValue": None}},
            "resource": None}]
        assert (await cli("endpoints", "autoscale", name, "--off", "--target-cpu", "50")).exit_code == 2
        too_many = await cli("endpoints", "autoscale", name, "--max", "50")
        assert too_many.exit_code == 1 and "max_replicas" in too_many.output, too_many.output

        # Load through the gateway: the progress lines show requests and the replicas rising to 3.
        await wait_for_route(gateway, name, {"Authorization": f"Bearer {key}"})
        loaded = await cli("endpoints", "load", name, "--concurrency", "12", "--duration", "60", "--max-tokens", "200",
                           "--every", "2", "--key", key)
        assert loaded.exit_code == 0, loaded.output
        lines = [line for line in loaded.output.splitlines() if "replicas" in line and " sent " in line]
        ready = [int(re.search(r"replicas (\d+)/\d+ ready", line).group(1)) for line in lines]
        assert len(lines) >= 20 and max(ready) >= 2, loaded.output
        sent = [int(re.search(r"sent +(\d+)", line).group(1)) for line in lines]
        assert sent == sorted(sent) and sent[-1] > 12
        assert all(re.search(r"failed +0 ", line) for line in lines), loaded.output
        assert any(re.search(r"TTFT p99 +\d+ ms", line) for line in lines)

        summary = await cli("endpoints", "load", name, "--concurrency", "2", "--duration", "2", "--every", "1",
                            "--max-tokens", "8", "--key", key, "--json")
        assert summary.exit_code == 0, summary.output
        totals = json.loads(summary.stdout)
        assert totals["ok"] >= 2 and totals["failed"] == 0 and totals["ttft_p99_ms"] > 0 and totals["samples"]
        refused = await cli("endpoints", "load", name, "--concurrency", "1", "--duration", "2", "--key", "bud-sk-wrong")
        assert refused.exit_code == 1 and "every request failed" in refused.output and "401" in refused.output

        # Monitoring observed now: the same JSON as the API's, each figure measured or "not measured".
        observed = await cli("endpoints", "metrics", name, "--refresh", "--window", "60", "--json")
        assert observed.exit_code == 0, observed.output
        metrics = json.loads(observed.stdout)
        stored = ("endpoint_id", "status", "monitoring")  # beside what Prometheus says now, which moves on
        api_metrics = (await api.get(f"/api/endpoints/{endpoint_id}/metrics")).json()
        assert {k: metrics[k] for k in stored} == {k: api_metrics[k] for k in stored}
        assert set(metrics) == set(api_metrics)
        assert metrics["monitoring"] is not None
        readable = await cli("endpoints", "metrics", name)
        assert readable.exit_code == 0 and "alerts firing" in readable.output and "ready" in readable.output
        live = metrics["monitoring"]["metrics"]
        for label, field, unit, digits in METRIC_ROWS:
            line = next(line for line in readable.output.splitlines() if f" {label} " in line)
            expected = "not measured" if live[field] is None else f"{live[field]:.{digits}f} {unit}"
            assert expected in line, (label, line)
        assert live["ttft_p99_ms"] is not None  # the load above was measured

        # A benchmark sweep: per level measured beside predicted; the JSON is the run the API stores.
        swept = await cli("endpoints", "benchmark", name, "--input-tokens", "32", "--output-tokens", "8",
                          "--concurrency", "1,2", "--json")
        assert swept.exit_code == 0, swept.output
        run = json.loads(swept.stdout)
        assert run["status"] == "COMPLETED" and [level["concurrency"] for level in run["levels"]] == [1, 2]
        assert run == (await api.get(f"/api/endpoints/{endpoint_id}/benchmarks/{run['id']}")).json()
        table = await cli("endpoints", "benchmark", name, "--input-tokens", "32", "--output-tokens", "8",
                          "--concurrency", "2")
        assert table.exit_code == 0 and "COMPLETED" in table.output and "predicted" in table.output, table.output
        assert (await cli("endpoints", "benchmark", name, "--concurrency", "1,two")).exit_code == 2
        too_deep = await cli("endpoints", "benchmark", name, "--concurrency", "100000")
        assert too_deep.exit_code == 1 and "concurrency" in too_deep.output, too_deep.output

        off = await cli("endpoints", "autoscale", name, "--off", "--json")
        assert off.exit_code == 0 and json.loads(off.stdout)["autoscaling"]["enabled"] is False, off.output
    finally:
        await api.delete(f"/api/endpoints/{endpoint_id}")
        await wait_endpoint(api, endpoint_id, lambda e: False, timeout=120)
