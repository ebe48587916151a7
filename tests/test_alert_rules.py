"""The shipped alert rules (monitoring/rules/bud-alerts.yml) under `promtool`: they parse, each alert fires on series
that break its threshold for long enough and stays quiet otherwise, and the thresholds are the API's."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from control import monitoring
from devstack.services import ALERT_RULES

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
