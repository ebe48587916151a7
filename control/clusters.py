"""Rules for registering a cluster: which kubeconfigs are accepted, and what is stored and passed on.

Any project token may register a cluster for its own project; the kubeconfig rules (core.kubeconfig) hold for every
caller, admins included, and only the operator's settings (BUD_KUBECONFIG_ALLOW_PLUGINS,
BUD_KUBECONFIG_ALLOW_LOCAL_FILES) relax them. The kubeconfig is stored sealed (core.secrets) and never travels in a
workflow's input: RegisterCluster gets the spec without it, and the probe reads the sealed copy by cluster id.
"""

from __future__ import annotations

from core.kubeconfig import KubeconfigRejected, parse_kubeconfig
from core.settings import Settings
from control.errors import invalid_field
from control.payloads.clusters import ClusterSpec


def accepted_spec(spec: ClusterSpec, settings: Settings) -> None:
    """Invalid (422 naming the field) unless the spec's kubeconfig may be used by our workers and the spec asks
    only what its kind can do."""
    if spec.kind == "kubernetes" and not spec.kubeconfig:
        raise invalid_field("kubeconfig", "required for kind 'kubernetes'")
    if spec.kind == "local" and spec.kubeconfig:
        raise invalid_field("kubeconfig", "only kind 'kubernetes' takes a kubeconfig")
    if spec.kind == "kubernetes" and spec.simulation is not None:
        raise invalid_field("simulation", "only kind 'local' simulates its GPUs")
    if spec.kubeconfig:
        try:
            parse_kubeconfig(spec.kubeconfig, settings.kubeconfig_policy)
        except KubeconfigRejected as rejected:
            raise invalid_field("kubeconfig", f"{rejected.field}: {rejected.message}") from None


def for_storage(spec: ClusterSpec, settings: Settings) -> ClusterSpec:
    """The spec as the database keeps it: the kubeconfig sealed."""
    if not spec.kubeconfig:
        return spec
    return spec.model_copy(update={"kubeconfig": settings.secret_box().seal(spec.kubeconfig)})


def for_workflow(spec: ClusterSpec) -> ClusterSpec:
    """The spec as a workflow's input carries it (and so Temporal's history): no kubeconfig."""
    return spec.model_copy(update={"kubeconfig": None})
