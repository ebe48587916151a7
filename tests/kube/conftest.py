"""The local Kubernetes control plane (devstack.kube) as a session fixture.

The binaries are built (or found in the cache) once, right after collection and before any test runs, so the
first build on a fresh machine, which takes many minutes, is not charged to a single test's timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.kube import KubeCluster, ensure_binaries

KUBE_TESTS = Path(__file__).resolve().parent
_bin_dir: Path | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    global _bin_dir
    if session.config.option.collectonly:
        return
    if not any(KUBE_TESTS in Path(item.path).parents for item in session.items):
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # let the build show its progress and time
        started = time.monotonic()
        _bin_dir = ensure_binaries()
        print(f"\nkube binaries ready in {time.monotonic() - started:.1f}s: {_bin_dir}")


@pytest.fixture(scope="session")
def kube_bin_dir() -> Path:
    return _bin_dir or ensure_binaries()


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory, kube_bin_dir: Path) -> Iterator[KubeCluster]:
    """Two nodes of 8 H100 and one of 4 L40S (devstack.kube.DEFAULT_NODE_POOLS), Ready."""
    with KubeCluster(tmp_path_factory.mktemp("kube"), kube_bin_dir) as cluster:
        yield cluster
