"""A user's kubeconfig is hostile input: refuse everything in it that would run a program or read our files.

The Kubernetes client and helm both honour a kubeconfig's `exec` credential plugin (they run its command, as the
worker's user) and its `auth-provider` (which can run a helper too), and they read any local path it names
(client-certificate, client-key, certificate-authority, tokenFile). A project member registering a cluster must
not be able to make our workers run a command or read a key off their disk, so such kubeconfigs are refused unless
an administrator turns the allowance on (`BUD_KUBECONFIG_ALLOW_PLUGINS`, `BUD_KUBECONFIG_ALLOW_LOCAL_FILES`).
Credentials must be inline: `client-certificate-data`, `client-key-data`, `certificate-authority-data`, `token`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

MAX_KUBECONFIG_BYTES = 256 * 1024
MAX_ENTRIES = 64  # clusters, users or contexts in one document

# keys whose value is a path on the machine that reads the kubeconfig
LOCAL_FILE_KEYS = {
    "cluster": ("certificate-authority",),
    "user": ("client-certificate", "client-key", "tokenFile", "token-file"),
}
PLUGIN_KEYS = ("exec", "auth-provider")


class KubeconfigRejected(ValueError):
    """The kubeconfig cannot be used; `field` is where in the document, `message` says why and what to do."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class KubeconfigPolicy:
    allow_plugins: bool = False
    allow_local_files: bool = False


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases: a kubeconfig never needs them, and aliases are how a 'billion laughs'
    document grows to gigabytes once something walks it."""

    def compose_node(self, parent, index):  # noqa: D102 (yaml's hook)
        if self.check_event(yaml.events.AliasEvent):
            raise KubeconfigRejected("kubeconfig", "YAML aliases (*name) are not accepted in a kubeconfig")
        return super().compose_node(parent, index)


def parse_kubeconfig(text: str, policy: KubeconfigPolicy = KubeconfigPolicy()) -> dict[str, Any]:
    """The kubeconfig as a dict, once every rule above holds; KubeconfigRejected otherwise."""
    if len(text.encode("utf-8", errors="replace")) > MAX_KUBECONFIG_BYTES:
        raise KubeconfigRejected("kubeconfig", f"larger than {MAX_KUBECONFIG_BYTES // 1024} KiB")
    try:
        document = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except KubeconfigRejected:
        raise
    except (yaml.YAMLError, RecursionError) as error:
        raise KubeconfigRejected("kubeconfig", f"not valid YAML: {str(error)[:200]}") from None
    if not isinstance(document, dict) or not isinstance(document.get("clusters"), list) or not document["clusters"]:
        raise KubeconfigRejected("kubeconfig", "must be a kubeconfig YAML document with a 'clusters:' list")
    for section, inner in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
        entries = document.get(section) or []
        if not isinstance(entries, list):
            raise KubeconfigRejected(section, "must be a list")
        if len(entries) > MAX_ENTRIES:
            raise KubeconfigRejected(section, f"more than {MAX_ENTRIES} entries")
        for index, entry in enumerate(entries):
            where = f"{section}[{index}]"
            if not isinstance(entry, dict) or not isinstance(entry.get(inner, {}), dict):
                raise KubeconfigRejected(where, f"must be a mapping with a '{inner}' mapping")
            _check_entry(where, inner, entry.get(inner) or {}, policy)
    return document


def _check_entry(where: str, kind: str, body: dict[str, Any], policy: KubeconfigPolicy) -> None:
    if kind == "user" and not policy.allow_plugins:
        for key in PLUGIN_KEYS:
            if key in body:
                raise KubeconfigRejected(
                    f"{where}.user.{key}",
                    f"credential plugins ({key}) run a program on the machine that uses the kubeconfig; use an "
                    "inline token or client-certificate-data/client-key-data (an administrator can allow plugins "
                    "with BUD_KUBECONFIG_ALLOW_PLUGINS=true)",
                )
    if not policy.allow_local_files:
        for key in LOCAL_FILE_KEYS.get(kind, ()):
            if key in body:
                raise KubeconfigRejected(
                    f"{where}.{kind}.{key}",
                    f"names a file on the machine that uses the kubeconfig; put the content inline ({key}-data, "
                    "or token) instead (an administrator can allow local files with "
                    "BUD_KUBECONFIG_ALLOW_LOCAL_FILES=true)",
                )
