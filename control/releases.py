"""How an endpoint's replicas are named where the cluster and Prometheus see them: the release `ep-<id8>`, and
`ep-<id8>-<color>` for another color or generation of the same endpoint (every replica's metrics carry it as the
`release` label)."""

from __future__ import annotations

from uuid import UUID


def release_name(endpoint_id: UUID, color: str | None = None) -> str:
    return f"ep-{str(endpoint_id)[:8]}" + (f"-{color}" if color else "")


def release_selector(endpoint_id: UUID) -> str:
    """A PromQL label matcher for every release of the endpoint (release names hold only letters, digits and
    dashes: nothing to escape)."""
    return f'release=~"{release_name(endpoint_id)}(-.+)?"'
