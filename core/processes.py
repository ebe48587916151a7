"""A child process of the dev stack or the test session: started, health-checked, stopped by pid.

Every server the project runs for itself (Temporal, PostgreSQL, the S3 server, clamd, Prometheus, the API,
workers, simulated runtimes) goes through this one class so that start-up, readiness, logs and shutdown behave
the same everywhere.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def die_with_parent() -> None:
    """Linux: deliver SIGKILL to this child when the process that started it dies (even by SIGKILL), so a killed
    worker never leaves a helm or a server running on its own."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PRIVATE_UMASK = 0o077  # files our servers create are readable by their owner alone


class StartupError(RuntimeError):
    """A managed process exited or did not become healthy in time; the message carries its log tail."""


# Below Linux's ephemeral range (32768-60999): a port the kernel hands out for outgoing connections can be taken
# again between our check and the server's bind, which made parallel start-ups collide.
_PORT_RANGE = (20000, 32000)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the ephemeral range."""
    for _ in range(200):
        port = random.randrange(*_PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # crowded: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False


@dataclass
class ManagedProcess:
    """One long-running server. `healthy` decides readiness; logs go to `log_path`."""

    name: str
    argv: Sequence[str]
    log_path: Path
    healthy: Callable[[], bool]
    url: str = ""
    env: dict[str, str] | None = None
    cwd: Path | None = None
    user: str | None = None
    startup_timeout_s: float = 60.0
    stop_timeout_s: float = 15.0
    stop_signal: int = signal.SIGTERM
    die_with_parent: bool = False  # for short-lived helpers: no orphan if the parent is killed
    prepare: Callable[[], None] | None = None  # one-time set-up run by start() (not by status or down)
    popen: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> "ManagedProcess":
        if self.prepare is not None:
            self.prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Logs and whatever the child writes (Temporal's database, objects, Prometheus' data) are the owner's only.
        log = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        full_env = {**os.environ, **(self.env or {})}
        self.popen = subprocess.Popen(
            list(self.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=self.cwd,
            user=self.user,
            start_new_session=True,  # Ctrl-C in the parent's terminal reaches us, not the children directly
            preexec_fn=die_with_parent if self.die_with_parent else None,
            umask=PRIVATE_UMASK,
        )
        log.close()
        return self

    def wait_healthy(self) -> "ManagedProcess":
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise StartupError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.1)
        raise StartupError(f"{self.name} not healthy after {self.startup_timeout_s:.0f}s:\n{self.log_tail()}")

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        """Stop gracefully, then kill: only our own child, by pid."""
        if not self.running():
            return
        assert self.popen is not None
        self.popen.send_signal(self.stop_signal)
        try:
            self.popen.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL, as a crash would; used by tests that prove durability."""
        if self.running():
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
