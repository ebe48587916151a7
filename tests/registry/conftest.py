"""A real clamd for the registry tests, with small limits so the policies are exercised with small files.

The limit is the same number on both sides (clamd's StreamMaxLength and the client's stream_max_bytes), as in the
dev stack, where both come from registry.clamd.DEFAULT_STREAM_MAX_BYTES.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.clamd import clamd_process
from core.processes import ManagedProcess, free_port
from registry.clamd import ClamdClient
from tests.model_files import TinyModel, write_tiny_llama

TEST_STREAM_MAX_BYTES = 2 * 1024 * 1024
TEST_OVERLAP_BYTES = 64 * 1024
TEST_MAX_SCAN_BYTES = 16 * 1024 * 1024


@pytest.fixture(scope="session")
def clamd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    state = tmp_path_factory.mktemp("clamd")
    process = clamd_process(state, free_port(), stream_max_bytes=TEST_STREAM_MAX_BYTES,
                            max_scan_bytes=TEST_MAX_SCAN_BYTES).start()
    try:
        yield process.wait_healthy()
    finally:
        process.stop()


def client_for(process: ManagedProcess, **overrides) -> ClamdClient:
    port = int(process.url.rsplit(":", 1)[1])
    options = {"stream_max_bytes": TEST_STREAM_MAX_BYTES, "window_overlap_bytes": TEST_OVERLAP_BYTES,
               "chunk_bytes": 256 * 1024, "reply_timeout_s": 60.0, **overrides}
    return ClamdClient("127.0.0.1", port, **options)


@pytest.fixture
def clamd_client(clamd_server: ManagedProcess) -> ClamdClient:
    return client_for(clamd_server)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
