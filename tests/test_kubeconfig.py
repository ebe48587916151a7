"""A registered kubeconfig can neither run a program nor read a file on the worker, unless an administrator allows it."""

from __future__ import annotations

import pytest
import yaml

from core.kubeconfig import MAX_KUBECONFIG_BYTES, KubeconfigPolicy, KubeconfigRejected, parse_kubeconfig


def kubeconfig(user: dict, cluster: dict | None = None) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": cluster or {"server": "https://127.0.0.1:6443",
                                                          "certificate-authority-data": "Q0E="}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    })


def rejected_field(text: str, policy: KubeconfigPolicy = KubeconfigPolicy()) -> str:
    with pytest.raises(KubeconfigRejected) as caught:
        parse_kubeconfig(text, policy)
    return caught.value.field


def test_inline_credentials_are_accepted():
    for user in ({"token": "abc"}, {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"}):
        assert parse_kubeconfig(kubeconfig(user))["users"][0]["user"] == user


def test_an_exec_plugin_is_refused_by_default_and_named(tmp_path):
    plugin = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "sh",
                       "args": ["-c", f"touch {tmp_path / 'pwned'}"]}}
    assert rejected_field(kubeconfig(plugin)) == "users[0].user.exec"
    assert rejected_field(kubeconfig({"auth-provider": {"name": "oidc"}})) == "users[0].user.auth-provider"
    assert not (tmp_path / "pwned").exists()
    assert parse_kubeconfig(kubeconfig(plugin), KubeconfigPolicy(allow_plugins=True))  # the administrator's choice


@pytest.mark.parametrize("user, cluster, field", [
    ({"client-certificate": "/root/.kube/cert.pem", "client-key-data": "S0VZ"}, None, "users[0].user.client-certificate"),
    ({"client-key": "/etc/ssl/private/key.pem"}, None, "users[0].user.client-key"),
    ({"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}, None, "users[0].user.tokenFile"),
    ({"token": "abc"}, {"server": "https://x", "certificate-authority": "/etc/kubernetes/pki/ca.crt"},
     "clusters[0].cluster.certificate-authority"),
])
def test_local_file_references_are_refused_unless_allowed(user, cluster, field):
    text = kubeconfig(user, cluster)
    assert rejected_field(text) == field
    assert parse_kubeconfig(text, KubeconfigPolicy(allow_local_files=True))


def test_hostile_documents_get_a_reason_not_a_crash():
    assert rejected_field("clusters: [") == "kubeconfig"  # not YAML
    assert rejected_field("- just\n- a list\n") == "kubeconfig"
    assert rejected_field("clusters: []\n") == "kubeconfig"
    assert rejected_field("x" * (MAX_KUBECONFIG_BYTES + 1)) == "kubeconfig"
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nclusters: [*b]\n"
    with pytest.raises(KubeconfigRejected, match="aliases"):
        parse_kubeconfig(laughs)
    assert rejected_field("clusters:\n" + "  " + "[" * 50_000 + "]" * 50_000 + "\n") == "kubeconfig"
    assert rejected_field(yaml.safe_dump({"clusters": [{"name": "k", "cluster": "https://x"}]})) == "clusters[0]"
    assert rejected_field(yaml.safe_dump({"clusters": [{"cluster": {}} for _ in range(65)]})) == "clusters"
    assert rejected_field(yaml.safe_dump({"clusters": [{"cluster": {}}], "users": {"u": 1}})) == "users"
