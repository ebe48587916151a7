"""The dashboard in a real browser (Debian's chromium, headless, 1400 px wide) against the API served over HTTP,
the workers, the gateway and Prometheus: sign in with the one-time link, read a model's scan report, create,
configure and deploy an endpoint from the page until it is RUNNING, see its Pareto plot and charts, start a shift of
a route and abort it, read usage, and follow a rolling update (UPDATING, the pending configuration, the plan and
its steps). Screenshots of each page go to $BUD_TEST_ARTIFACTS (else the test's tmp_path); the path is printed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from core.login_links import issue_code
from tests.deploy_helpers import (available_model, configure_manual, inference_key_headers, local_cluster_id,
                                  running_endpoint, wait_endpoint, wait_for_route)
from tests.helpers import unique
from tests.model_files import write_tiny_llama

WIDTH = 1400


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("dashboard") / "m"))


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("BUD_TEST_ARTIFACTS") or tmp_path) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots in {folder}")
    return folder


class Page:
    """Blocking browser calls; the test runs each through asyncio.to_thread so the in-process workers keep going."""

    def __init__(self, base: str, shots: Path):
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={WIDTH},1000", "--lang=en-US"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
        self.base, self.shots = base, shots

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str, timeout: float = 20):
        return WebDriverWait(self.driver, timeout).until(lambda d: d.find_element(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return self.driver.find_element(By.CSS_SELECTOR, css).text

    def wait_text(self, css: str, wanted: str, timeout: float = 30) -> str:
        """Until the element's text holds `wanted` (the page re-renders it on each poll)."""
        def holds(driver):
            try:
                found = driver.find_element(By.CSS_SELECTOR, css).text
            except Exception:  # absent or re-rendered between the find and the read
                return False
            return found if wanted in found else False
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.3).until(holds)
        except Exception:
            self.shot("failed-wait")
            raise AssertionError(f"{css} never showed {wanted!r}; message: {self.text('#message')!r}") from None

    def click(self, css: str, timeout: float = 20) -> None:
        def clicked(driver):
            try:
                driver.find_element(By.CSS_SELECTOR, css).click()
                return True
            except StaleElementReferenceException:
                return False
        WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(clicked)

    def fill(self, form: str, values: dict[str, str]) -> None:
        def filled(driver):
            try:
                for name, value in values.items():
                    element = driver.find_element(By.CSS_SELECTOR, f'{form} [name="{name}"]')
                    if element.tag_name == "select":
                        Select(element).select_by_value(value)
                    else:
                        element.clear()
                        element.send_keys(value)
                return True
            except (NoSuchElementException, StaleElementReferenceException):  # the form is (re)rendering
                return False
        WebDriverWait(self.driver, 20, poll_frequency=0.2).until(filled)

    def hover(self, css: str) -> None:
        ActionChains(self.driver).move_to_element(self.find(css)).perform()

    def shot(self, name: str, css: str | None = None) -> Path:
        if css:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", self.find(css))
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def full_shot(self, name: str) -> Path:
        """The whole page: the window grown to the document's height for the shot."""
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(WIDTH, min(max(height + 140, 1000), 6000))
        path = self.shot(name)
        self.driver.set_window_size(WIDTH, 1000)
        return path

    def close(self) -> None:
        self.driver.quit()


@pytest.mark.timeout(900)
async def test_sign_in_deploy_shift_and_abort_from_the_browser(
        api, api_url, settings, state_dir, control_worker, optimizer_worker, gateway, prometheus, model, shots):
    await local_cluster_id(api)
    page = await asyncio.to_thread(Page, api_url, shots)
    browser = lambda method, *args, **kwargs: asyncio.to_thread(getattr(page, method), *args, **kwargs)  # noqa: E731
    name, other = unique("ui-ep"), None
    endpoint_id = None
    try:
        # Signed out: the page says how to sign in; a wrong token is refused with a message.
        await browser("open", "/ui")
        assert "bud dev up" in await browser("wait_text", "#welcome", "Sign in")
        await browser("fill", "#signin", {"token": "bud-wrong-token"})
        await browser("click", '#signin button[type="submit"]')
        await browser("wait_text", "#message", "not valid")

        # The one-time link signs in and leaves the address bar; the same link a second time is refused.
        code = issue_code(settings.state_dir)
        await browser("open", f"/ui/login?code={code}")
        await browser("wait_text", "#who", "project default")
        assert page.driver.current_url == f"{api_url}/ui"
        async with httpx.AsyncClient() as client:
            again = await client.post(f"{api_url}/ui/login", json={"code": code})
        assert again.status_code == 401 and "used already or has expired" in again.json()["error"]["message"]

        # Models: readable sizes and the scan report listing each file's checks.
        await browser("click", '#tabs [data-tab="models"]')
        row = await browser("wait_text", "#model-rows", model["name"])
        count = model["effective_parameter_count"]
        assert 100_000 <= count < 1_000_000 and f"{count / 1000:.0f} k" in row and "0.00 B" not in row, row
        await browser("click", f'#model-rows tr[data-id="{model["id"]}"]')
        report = await browser("wait_text", "#model-detail", "Scan report")
        assert "model.safetensors" in report and "config.json" in report and "clamav" in report.lower(), report
        await browser("full_shot", "01-models")

        # Endpoints: create, configure with targets, see the optimizer's Pareto plot, deploy to RUNNING.
        await browser("click", '#tabs [data-tab="endpoints"]')
        await browser("fill", '[data-form="create-endpoint"]', {"name": name, "model_id": model["id"]})
        await browser("click", '[data-form="create-endpoint"] button[type="submit"]')
        await browser("wait_text", "#ep-live", "PENDING")
        endpoint_id = next(e["id"] for e in (await api.get("/api/endpoints")).json() if e["name"] == name)
        await browser("fill", '[data-form="configure"]', {
            "max_latency_ms": "2000", "min_throughput_tps": "100", "input_tokens": "256", "output_tokens": "64",
            "concurrency": "8"})
        await browser("click", '[data-form="configure"] button[type="submit"]')
        await browser("wait_text", "#ep-recommendation", "chosen", timeout=120)
        await browser("hover", "#ep-recommendation g.point.chosen circle")
        assert "capacity" in await browser("wait_text", "#pareto-detail", "TP")
        axes = await browser("text", "#ep-recommendation svg")
        assert "end-to-end latency per request (ms)" in axes and "capacity (output tokens/s)" in axes
        assert "per hour" in await browser("text", "#ep-recommendation")

        await browser("click", '#ep-live [data-action="deploy"]')
        await browser("wait_text", "#ep-live h3", "RUNNING", timeout=180)
        progress = await browser("text", "#ep-live ol.progress")
        assert "DEPLOYING" in progress and "RUNNING" in progress, progress
        assert (await api.get(f"/api/endpoints/{endpoint_id}")).json()["status"] == "RUNNING"
        await browser("shot", "02-endpoint-running", "#endpoint-detail")

        # Traffic through the gateway, then the charts draw it from Prometheus.
        headers = inference_key_headers(state_dir)
        await wait_for_route(gateway, name, headers)
        async with httpx.AsyncClient(timeout=60, headers=headers) as client:
            for _ in range(6):
                answer = await client.post(f"{gateway}/chat/completions", json={
                    "model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
                assert answer.status_code == 200, answer.text
        await browser("wait_text", '#ep-monitoring figure[data-metric="replicas"] figcaption', "1 replicas", timeout=60)
        await browser("wait_text", '#ep-monitoring figure[data-metric="throughput"] figcaption', "tokens/s", timeout=60)
        monitoring = await browser("wait_text", "#ep-monitoring", "Alerts now")
        assert "from Prometheus's rules" in monitoring and "not read" not in monitoring, monitoring
        await browser("shot", "03-endpoint-monitoring", "#ep-monitoring")
        await browser("full_shot", "04-endpoint-page")

        # Traffic tab: a route on the endpoint, a gradual shift to a second one, aborted from the page.
        other = await running_endpoint(api, model["id"], await local_cluster_id(api))
        route = unique("ui-route")
        await browser("click", '#tabs [data-tab="routes"]')
        await browser("fill", '[data-form="new-route"]', {"name": route, "endpoint_id": endpoint_id})
        await browser("click", '[data-form="new-route"] button[type="submit"]')
        await browser("wait_text", f'#route-cards [data-route="{route}"]', "100 %")
        await browser("fill", '[data-form="shift"]', {"to_endpoint_id": other["id"], "steps": "50,100",
                                                      "step_interval_s": "600"})
        await browser("click", '[data-form="shift"] button[type="submit"]')
        card = await browser("wait_text", f'#route-cards [data-route="{route}"]', "50 % to", timeout=60)
        assert "RUNNING" in card and "Abort shift" in card, card
        assert (await api.get(f"/api/routes/{route}")).json()["shift"]["status"] == "RUNNING"
        await browser("full_shot", "05-shift-running")
        await browser("click", f'#route-cards [data-action="abort"][data-route="{route}"]')
        card = await browser("wait_text", f'#route-cards [data-route="{route}"]', "ROLLED_BACK", timeout=60)
        assert "aborted from the dashboard" in card and "Abort shift" not in card, card
        after = (await api.get(f"/api/routes/{route}")).json()
        assert [(b["endpoint_id"], b["weight"]) for b in after["backends"]] == [(endpoint_id, 100)], after
        await browser("full_shot", "06-shift-aborted")

        # A blue-green shift that completes, then Revert puts the weights back to where they were before it.
        await browser("fill", '[data-form="shift"]', {"to_endpoint_id": other["id"], "strategy": "blue-green",
                                                      "drain_s": "0"})
        await browser("click", '[data-form="shift"] button[type="submit"]')
        card = await browser("wait_text", f'#route-cards [data-route="{route}"]', "COMPLETED", timeout=90)
        assert "Revert to the weights before the shift" in card, card
        moved = (await api.get(f"/api/routes/{route}")).json()
        assert [(b["endpoint_id"], b["weight"]) for b in moved["backends"]] == [(other["id"], 100)], moved
        await browser("click", f'#route-cards [data-action="revert"][data-route="{route}"]')
        await browser("wait_text", "#message", "back on its weights from before the shift")
        reverted = (await api.get(f"/api/routes/{route}")).json()
        assert [(b["endpoint_id"], b["weight"]) for b in reverted["backends"]] == [(endpoint_id, 100)], reverted
        card = await browser("wait_text", f'#route-cards [data-route="{route}"]', name)  # the first endpoint again
        assert "100 %" in card and "Revert to the weights" not in card, card

        # Usage: the requests sent above, under the endpoint's route.
        await browser("click", '#tabs [data-tab="usage"]')
        usage = await browser("wait_text", "#usage-tables", name, timeout=60)
        assert "Per project" in usage and "total" in usage
        await browser("full_shot", "07-usage")
    finally:
        await asyncio.to_thread(page.close)
        for endpoint in [endpoint_id, other and other["id"]]:
            if endpoint:
                await api.delete(f"/api/endpoints/{endpoint}")
        for endpoint in [endpoint_id, other and other["id"]]:
            if endpoint:  # the stack tests after this one need the local GPUs back
                await wait_endpoint(api, endpoint, lambda e: False, timeout=120)


@pytest.mark.timeout(600)
async def test_a_rolling_update_shows_updating_its_pending_config_and_its_plan_in_the_browser(
        api, api_url, settings, control_worker, optimizer_worker, gateway, model, shots):
    endpoint = await running_endpoint(api, model["id"], await local_cluster_id(api))
    endpoint_id = endpoint["id"]
    page = await asyncio.to_thread(Page, api_url, shots)
    browser = lambda method, *args, **kwargs: asyncio.to_thread(getattr(page, method), *args, **kwargs)  # noqa: E731
    try:
        await configure_manual(api, endpoint_id, replicas=2, max_num_seqs=16)
        await browser("open", f"/ui/login?code={issue_code(settings.state_dir)}")
        await browser("wait_text", "#who", "project default")
        await browser("click", '#tabs [data-tab="endpoints"]')
        await browser("click", f'#endpoint-rows tr[data-id="{endpoint_id}"]')
        live = await browser("wait_text", "#ep-live", "max_num_seqs 8 → 16; replicas 1 → 2")
        assert "generation\n1" in live or "generation 1" in live, live
        assert "change pending" in await browser("text", f'#endpoint-rows tr[data-id="{endpoint_id}"]')
        assert await browser("text", '#ep-live [data-action="deploy"]') == "Deploy (rolling update)"

        await browser("click", '#ep-live [data-action="deploy"]')
        await browser("wait_text", "#ep-live h3", "UPDATING")
        rollout = await browser("wait_text", "#ep-rollout", "surge: up to 1 new replica(s)")
        assert "Rolling update" in rollout and "1/" in rollout and "new replicas" in rollout, rollout
        badge = await browser("find", f'#endpoint-rows tr[data-id="{endpoint_id}"] .badge.status-UPDATING')
        assert badge.text == "UPDATING"
        assert badge.value_of_css_property("background-color") != "rgba(236, 238, 244, 1)"  # a colour of its own
        assert not (await browser("find", '#ep-live [data-action="deploy"]')).is_enabled()
        await browser("shot", "08-rolling-update", "#endpoint-detail")

        done = await browser("wait_text", "#ep-rollout", "COMPLETED", timeout=240)
        assert "generation 1 → 2" in done and "not run" not in done and "in progress" not in done, done
        await browser("wait_text", "#ep-live h3", "RUNNING")
        facts = await browser("text", "#ep-live dl.facts")
        assert "none: the replicas run the configuration" in facts and "16 seqs" in facts, facts
        await browser("shot", "09-rolling-update-done", "#endpoint-detail")
    finally:
        await asyncio.to_thread(page.close)
        await api.delete(f"/api/endpoints/{endpoint_id}")
        await wait_endpoint(api, endpoint_id, lambda e: False, timeout=120)
