from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from core.processes import ManagedProcess
from runtime.launch import sim_runtime_process

StartRuntime = Callable[..., ManagedProcess]


@pytest.fixture(scope="module")
def start_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartRuntime]:
    """Start real `python -m runtime serve` processes on free ports; all are stopped when the module ends."""
    log_dir = tmp_path_factory.mktemp("runtime-logs")
    started: list[ManagedProcess] = []

    def start(
        *args: str, model: str = "sim-model", env: Mapping[str, str] | None = None, wait: bool = True
    ) -> ManagedProcess:
        process = sim_runtime_process(model, log_dir, args, env=env)
        process.start()
        started.append(process)
        if wait:
            process.wait_healthy()
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def log_text() -> Callable[[ManagedProcess], str]:
    return lambda process: Path(process.log_path).read_text(errors="replace")
