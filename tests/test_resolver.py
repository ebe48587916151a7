"""The worker's one BackendResolver: a backend per cluster, built once, and a clear refusal of what it cannot serve."""

from __future__ import annotations

import uuid

import pytest
from temporalio.exceptions import ApplicationError

from activities.releases import backend_errors
from clusters.kubernetes import KubernetesBackend
from clusters.local import LocalBackend
from clusters.resolver import BackendResolver, UnknownClusterKind
from core.settings import Settings
from tests.test_register_cluster import unreachable_kubeconfig


@pytest.fixture
def resolver(tmp_path) -> BackendResolver:
    return BackendResolver(Settings(state_dir=tmp_path, s3_endpoint="http://127.0.0.1:19000"))


def test_the_same_kubernetes_cluster_gets_the_same_backend(resolver):
    cluster, other = uuid.uuid4(), uuid.uuid4()
    kubeconfig = unreachable_kubeconfig()
    first = resolver.for_cluster(cluster, "kubernetes", kubeconfig)
    assert isinstance(first, KubernetesBackend)
    assert resolver.for_cluster(cluster, "kubernetes", kubeconfig) is first
    assert first.kubeconfig == kubeconfig
    assert first.s3.endpoint_url == "http://127.0.0.1:19000"  # the settings reach every cluster's backend

    second = resolver.for_cluster(other, "kubernetes", unreachable_kubeconfig())
    assert second is not first and second.kubeconfig != kubeconfig


def test_a_changed_kubeconfig_gets_a_backend_with_the_new_credentials(resolver):
    cluster = uuid.uuid4()
    old = resolver.for_cluster(cluster, "kubernetes", unreachable_kubeconfig())
    new_kubeconfig = unreachable_kubeconfig()
    new = resolver.for_cluster(cluster, "kubernetes", new_kubeconfig)
    assert new is not old and new.kubeconfig == new_kubeconfig
    assert resolver.for_cluster(cluster, "kubernetes", new_kubeconfig) is new


def test_every_local_cluster_shares_the_local_backend(resolver, tmp_path):
    local = resolver.for_cluster(uuid.uuid4(), "local")
    assert isinstance(local, LocalBackend) and local is resolver.local
    assert resolver.for_cluster(uuid.uuid4(), "local") is local
    assert local.replicas_dir == tmp_path / "replicas"
    assert local.gpu_memory_gb["nvidia-h100-80gb"] == 80  # replicas are checked against the GPU's memory


def test_an_unknown_kind_is_refused_for_good(resolver):
    cluster = uuid.uuid4()
    with pytest.raises(UnknownClusterKind, match=r"kind 'slurm'; backends exist for local, kubernetes"):
        resolver.for_cluster(cluster, "slurm")
    # What an activity reports: a non-retryable failure naming the cluster and the kind.
    with pytest.raises(ApplicationError) as failure, backend_errors():
        resolver.for_cluster(cluster, "slurm")
    assert failure.value.non_retryable and failure.value.type == "UnknownClusterKind"
    assert str(cluster) in failure.value.message


def test_a_kubernetes_cluster_without_kubeconfig_is_refused(resolver):
    with pytest.raises(ApplicationError) as failure, backend_errors():
        resolver.for_cluster(uuid.uuid4(), "kubernetes", None)
    assert failure.value.non_retryable and failure.value.type == "MissingKubeconfig"
    assert "has no kubeconfig" in failure.value.message


def test_a_sealed_kubeconfig_is_opened_and_checked_again(resolver, tmp_path):
    settings = Settings(state_dir=tmp_path, s3_endpoint="http://127.0.0.1:19000")
    kubeconfig = unreachable_kubeconfig()
    backend = resolver.for_cluster(uuid.uuid4(), "kubernetes", settings.secret_box().seal(kubeconfig))
    assert backend.kubeconfig == kubeconfig
    # A row written around the API (an exec plugin, sealed with our key) still never reaches a client or helm.
    plugin = kubeconfig.replace('user: {token: "x"}', "user: {exec: {command: sh}}")
    with pytest.raises(ApplicationError) as refused, backend_errors():
        resolver.for_cluster(uuid.uuid4(), "kubernetes", settings.secret_box().seal(plugin))
    assert refused.value.non_retryable and "users[0].user.exec" in refused.value.message
    # Sealed with another key: refused for good, with the reason.
    other = Settings(state_dir=tmp_path / "elsewhere").secret_box().seal(kubeconfig)
    with pytest.raises(ApplicationError) as unreadable, backend_errors():
        resolver.for_cluster(uuid.uuid4(), "kubernetes", other)
    assert unreadable.value.non_retryable and "cannot be opened" in unreadable.value.message
