"""The embedded stack behind `make up` / `bud dev up|status|down`: every part on 127.0.0.1, state under .bud/.

PostgreSQL and Redis ask for passwords the stack generates once into .bud/postgres-password and .bud/redis-password
(mode 600, like .bud/secret-key); its children get them inside BUD_DATABASE_URL and BUD_REDIS_URL. A URL given
with a password of its own (BUD_DATABASE_URL=postgresql://bud:...@...) keeps it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from urllib.parse import urlparse

from clusters.local import LocalBackend
from core.secrets import ensure_password_file
from core.settings import Settings, redacted, url_password, url_with_password
from devstack import services
from devstack.clamd import clamd_process
from core.paths import TOOLS_BIN
from devstack.kube_stack import DevKube
from devstack.pidfiles import PidFiles
from core.processes import ManagedProcess, StartupError

Printer = Callable[[str], None]


def _port(url: str, default: int) -> int:
    parsed = urlparse(url if "://" in url else f"tcp://{url}")
    return parsed.port or default


class Stack:
    def __init__(self, settings: Settings, kube: bool = False):
        self.settings = settings
        self.state = settings.state_dir
        self.pid_dir = self.state / "pids"
        self.with_kube = kube  # `bud dev up --kube`: also the local Kubernetes cluster (devstack/kube_stack.py)
        self.pids = PidFiles(self.pid_dir)
        self.kube = DevKube(self.state, self.pid_dir)

    # -- passwords ---------------------------------------------------------------------------------------------
    def _password(self, url: str, file_name: str, create: bool) -> str:
        """The password in `url`, else the generated one in the state folder (created by `up` only: `status` and
        `down` never write into a stack that was never started)."""
        if given := url_password(url):
            return given
        path = self.state / file_name
        if create:
            return ensure_password_file(path)
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            return ""

    def database_url(self) -> str:
        """BUD_DATABASE_URL for the children: the settings' URL with the password."""
        password = self.postgres_password()
        return url_with_password(self.settings.database_url, password) if password else self.settings.database_url

    def redis_url(self) -> str:
        """BUD_REDIS_URL for the children: the settings' URL with the password."""
        password = self.redis_password()
        return url_with_password(self.settings.redis_url, password) if password else self.settings.redis_url

    def postgres_password(self, create: bool = False) -> str:
        return self._password(self.settings.database_url, "postgres-password", create)

    def redis_password(self, create: bool = False) -> str:
        return self._password(self.settings.redis_url, "redis-password", create)

    # -- definitions -------------------------------------------------------------------------------------------
    def child_env(self) -> dict[str, str]:
        s = self.settings
        return {
            "BUD_STATE_DIR": str(self.state),
            "BUD_DATABASE_URL": self.database_url(),
            "BUD_REDIS_URL": self.redis_url(),
            "BUD_TEMPORAL_ADDRESS": s.temporal_address,
            "BUD_S3_ENDPOINT": s.s3_endpoint,
            "BUD_S3_ACCESS_KEY": s.s3_access_key,
            "BUD_S3_SECRET_KEY": s.s3_secret_key,
            "BUD_CLAMD_PORT": str(s.clamd_port),
            "BUD_PROMETHEUS_URL": s.prometheus_url,
            "BUD_API_PORT": str(s.api_port),
            "BUD_GATEWAY_PORT": str(s.gateway_port),
            "PATH": f"{TOOLS_BIN}:{os.environ.get('PATH', '')}",
        }

    def worker_metrics_port(self, index: int) -> int:
        return self.settings.worker_metrics_base_port + index  # scraped by Prometheus

    def _worker(self, queue: str, env: dict[str, str]) -> ManagedProcess:
        """A worker is ready once it polls its task queue: it then writes its pid into a file that the check compares
        with the pid we started (its metrics port answering would not prove it: any process may hold that port)."""
        name = f"worker-{queue}"
        ready_file = self.pid_dir / f"{name}.ready"
        return services.python_service(
            name, ["worker", "--queue", queue, "--ready-file", str(ready_file)], self.state, env, health_url=None,
            ready_file=ready_file, started_pid=lambda: self.pids.running_pid(name), url=f"task queue {queue}")

    def definitions(self) -> list[ManagedProcess]:
        s, state = self.settings, self.state
        pg_port = _port(s.database_url, 55432)
        temporal_port = _port(s.temporal_address, 7233)
        env = self.child_env()
        workers = [self._worker(queue, {**env, "BUD_WORKER_METRICS_PORT": str(self.worker_metrics_port(i))})
                   for i, queue in enumerate((s.control_queue, s.optimizer_queue))]
        return [
            services.postgres_server(state, pg_port, self.postgres_password()),
            services.redis_server(state, _port(s.redis_url, 56379), self.redis_password()),
            services.temporal_dev_server(state, temporal_port, s.temporal_ui_port),
            services.s3_server(state, _port(s.s3_endpoint, 9000), s.s3_access_key, s.s3_secret_key, (s.models_bucket,)),
            clamd_process(state, s.clamd_port),
            services.prometheus_server(
                state, _port(s.prometheus_url, 9090),
                {"api": [f"127.0.0.1:{s.api_port}"],
                 "workers": [f"127.0.0.1:{self.worker_metrics_port(i)}" for i in range(len(workers))],
                 "gateway": [f"127.0.0.1:{s.gateway_port}"]},
            ),
            services.python_service("api", ["api"], state, env, health_url=f"http://127.0.0.1:{s.api_port}/readyz",
                                    url=f"http://127.0.0.1:{s.api_port} (docs /docs)"),
            *workers,
            services.python_service(
                "gateway", ["gateway", "--port", str(s.gateway_port), "--route-source",
                            "gateway.postgres_source:from_environment"], state,
                {**env, "BUD_GATEWAY_ADVERTISE_URL": f"http://127.0.0.1:{s.gateway_port}"},
                health_url=f"http://127.0.0.1:{s.gateway_port}/healthz", url=s.gateway_url),
        ]

    def summary(self) -> list[str]:
        """What `bud dev up` prints once everything is healthy: where each part a user opens lives."""
        s = self.settings
        api = f"http://127.0.0.1:{s.api_port}"
        return [
            f"API        {api}  (OpenAPI docs: /docs)",
            f"Dashboard  {api}/ui  (paste the admin token)",
            f"Temporal   http://127.0.0.1:{s.temporal_ui_port}  (Web UI)",
            f"Gateway    {s.gateway_url}  (OpenAI-compatible)",
            f"Prometheus {s.prometheus_url}",
            f"S3         {s.s3_endpoint}  (bucket {s.models_bucket})",
            f"PostgreSQL {redacted(s.database_url)}{self._password_note(s.database_url, 'postgres-password')}",
            f"Redis      {redacted(s.redis_url)}{self._password_note(s.redis_url, 'redis-password')}",
        ]

    def _password_note(self, url: str, file_name: str) -> str:
        """Where the password is kept, when it is the generated one (a URL given with its own says nothing)."""
        path = self.state / file_name
        generated = path.read_text().strip() if path.exists() else None
        return f"  (password in {path})" if url_password(url) in (None, generated) else ""

    def running_pid(self, name: str) -> int | None:
        return self.pids.running_pid(name)

    # -- commands ----------------------------------------------------------------------------------------------
    def up(self, echo: Printer) -> list[ManagedProcess]:
        """Start every part not already running, in dependency order, each waited healthy."""
        self.state.mkdir(parents=True, exist_ok=True)
        self._private_state()
        self.postgres_password(create=True)
        self.redis_password(create=True)
        started: list[ManagedProcess] = []
        for proc in self.definitions():
            if (pid := self.running_pid(proc.name)) is not None:
                echo(f"  {proc.name:<22} already running (pid {pid})  {proc.url}")
                continue
            t0 = time.monotonic()
            try:
                proc.start()
                self.pids.record(proc.name, proc.pid)
                proc.wait_healthy()
            except (StartupError, OSError) as error:
                echo(f"  {proc.name:<22} FAILED: {error}")
                for done in reversed(started + [proc]):
                    done.stop()
                    self.pids.forget(done.name)
                raise
            started.append(proc)
            if proc.name == "postgres":
                services.ensure_database(_port(self.settings.database_url, 55432), self.postgres_password())
                self._private_state()  # PostgreSQL's set-up opens the folders above its data folder for reading
            echo(f"  {proc.name:<22} ready in {time.monotonic() - t0:4.1f}s  {proc.url}")
        if self.with_kube:
            self._up_kube(echo, started)
        return started

    def _private_state(self) -> None:
        """Others may pass through the state folder (PostgreSQL runs as its own system user and needs its data
        folder inside) but not list it; each file inside is private (core.processes.PRIVATE_UMASK)."""
        self.state.chmod(0o711)

    def _up_kube(self, echo: Printer, started: list[ManagedProcess]) -> None:
        """Start the Kubernetes cluster once the API is up, and register it through the API as kube-local."""
        try:
            self.kube.up(echo)
            token = self.settings.admin_token_path.read_text().strip()
            self.kube.register(f"http://127.0.0.1:{self.settings.api_port}", token, echo)
        except (StartupError, OSError) as error:
            echo(f"  {'kubernetes':<22} FAILED: {error}")
            self.kube.down(echo)
            for done in reversed(started):
                done.stop()
                self.pids.forget(done.name)
            raise

    def status(self) -> list[tuple[str, str, str]]:
        rows = []
        for proc in self.definitions():
            pid = self.running_pid(proc.name)
            if pid is None:
                rows.append((proc.name, "stopped", proc.url))
            else:
                rows.append((proc.name, f"healthy (pid {pid})" if proc.healthy() else f"unhealthy (pid {pid})", proc.url))
        if self.with_kube or self.kube.was_started():
            rows += self.kube.status_rows()
        return rows

    def down(self, echo: Printer, timeout_s: float = 20.0) -> None:
        """Stop the parts recorded in our pid files, in reverse order: SIGTERM, then SIGKILL after timeout_s."""
        if self.kube.was_started():
            self.kube.down(echo, timeout_s)
        for proc in reversed(self.definitions()):
            if self.pids.stop(proc.name, proc.stop_signal, timeout_s):
                echo(f"  {proc.name:<22} stopped")
            if proc.name == f"worker-{self.settings.control_queue}":
                # Its supervisor is gone: stop the local cluster's replicas too; the next `up` starts them again.
                replicas = LocalBackend(self.state).stop_all_replicas()
                if replicas:
                    echo(f"  {'local replicas':<22} {replicas} stopped (restarted by the next `bud dev up`)")
