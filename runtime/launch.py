"""Starting simulated runtime processes: the command line, and a supervised process for tests and the dev stack."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from core.processes import ManagedProcess, free_port, http_ok


def sim_runtime_argv(model: str, port: int, extra_args: Sequence[str] = (), host: str = "127.0.0.1") -> list[str]:
    """`python -m runtime serve MODEL --host H --port P ...`, the simulated twin of `vllm serve MODEL ...`."""
    return [sys.executable, "-m", "runtime", "serve", model, "--host", host, "--port", str(port), *extra_args]


def sim_runtime_process(
    model: str,
    log_dir: Path,
    extra_args: Sequence[str] = (),
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    startup_timeout_s: float = 60.0,
) -> ManagedProcess:
    """A ManagedProcess (not started) whose `url` is the base URL and which is healthy once /health answers 200."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    name = name or f"sim-runtime-{port}"

    return ManagedProcess(
        name=name,
        argv=sim_runtime_argv(model, port, extra_args),
        log_path=log_dir / f"{name}.log",
        healthy=lambda: http_ok(f"{url}/health"),  # 503 while loading counts as not healthy
        url=url,
        env=dict(env or {}),
        startup_timeout_s=startup_timeout_s,
    )
