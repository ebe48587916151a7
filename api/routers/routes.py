"""Routes (versioning): the model name clients send, spread over endpoints by weight; blue-green swaps
and gradual A/B rollouts on it run as the TrafficShift workflow."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from api.deps import PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.errors import not_found
from control import capacity, routing
from control.errors import Conflict
from control.payloads.traffic import RouteUpdate, ShiftRequest, TrafficShiftInput
from control.store import canary as canary_store
from control.store import routes
from workflows.ids import traffic_shift_workflow_id
from workflows.starters import abort_traffic_shift, start_traffic_shift, traffic_shift_running

router = APIRouter(prefix="/api/routes", tags=["routes"])


class Backend(BaseModel):
    """A backend of the route: an endpoint (endpoint_id, endpoint_name, status) or a provider's model
    (provider_id, provider_name, model). Fallbacks carry weight 0."""

    kind: Literal["endpoint", "provider"]
    weight: int
    endpoint_id: UUID | None = None
    endpoint_name: str | None = None
    status: str | None = None
    provider_id: UUID | None = None
    provider_name: str | None = None
    model: str | None = None


class RouteOut(BaseModel):
    name: str
    project_id: UUID
    backends: list[Backend] = Field(description="the primaries; their weights add up to 100")
    fallbacks: list[Backend] = Field(description="take traffic when the primaries cannot (spillover), tried in "
                                                 "this order: the first one usable takes the request")
    spill_queue_depth: int | None
    shift: dict[str, Any] | None
    updated_at: datetime


class RoutePublished(RouteOut):
    propagated: bool = Field(description="every running gateway serves the new backends: a call made now is routed "
                                         "by them. false after a bounded wait: lagging_gateways are still behind")
    route_table_version: int = Field(description="the route-table version this change committed")
    lagging_gateways: list[routing.LaggingGateway] = Field(
        description="running gateways still serving an older table when the wait ended (empty when propagated)")


def route_out(route: routes.RouteRow) -> dict:
    def endpoint(backend: routes.RouteBackend) -> dict:
        return {"kind": "endpoint", **backend.model_dump(exclude={"fallback_position"})}

    def provider(backend: routes.ProviderBackend) -> dict:
        return {"kind": "provider", **backend.model_dump(exclude={"fallback", "fallback_position"})}

    def either(backend: routes.RouteBackend | routes.ProviderBackend) -> dict:
        return provider(backend) if isinstance(backend, routes.ProviderBackend) else endpoint(backend)

    return {
        "name": route.name, "project_id": route.project_id, "shift": route.shift, "updated_at": route.updated_at,
        "spill_queue_depth": route.spill_queue_depth,
        "backends": [endpoint(b) for b in route.backends]
                    + [provider(b) for b in route.provider_backends if not b.fallback],
        "fallbacks": [either(b) for b in route.fallbacks],  # in the order they are tried
    }


class ShiftAbort(BaseModel):
    reason: str = Field(default="aborted by request", min_length=1, max_length=500)


async def owned_route(conn, name: str, project_id: UUID):
    route = await routes.get_route(conn, name, project_id)
    if route is None:
        raise not_found("route", name)
    return route


@router.get("", response_model=list[RouteOut])
async def list_routes(pool: PoolDep, principal: PrincipalDep):
    async with pool.acquire() as conn:
        return [route_out(route) for route in await routes.list_routes(conn, principal.project_id)]


@router.get("/{name}", response_model=RouteOut)
async def get_route(name: str, pool: PoolDep, principal: PrincipalDep):
    async with pool.acquire() as conn:
        return route_out(await owned_route(conn, name, principal.project_id))


@router.put("/{name}", response_model=RoutePublished)
async def put_route(name: str, body: RouteUpdate, pool: PoolDep, temporal: TemporalDep, principal: PrincipalDep):
    """Set the backends behind `name` and their weights (creates the route): endpoints of the project, which must
    be RUNNING to take traffic, and models of its external providers; optionally the fallbacks and the queue depth
    that spills to them. The change is one transaction, so the gateway never serves a half-applied split.

    The answer comes once every running gateway serves the change (a call made right after it is routed by the new
    backends), or after a bounded wait (10 s) with `propagated: false` and the gateways still behind: the change is
    committed either way and they pick it up when they can."""
    async with pool.acquire() as conn:
        await capacity.require_name_of_project(conn, name, principal.project_id)
        if await traffic_shift_running(temporal, name):
            raise Conflict(f"a traffic shift is moving route {name}: abort it first")
        await capacity.check_route_backends(conn, body.backends, principal.project_id, body.fallbacks)
        endpoint_weights = {b.endpoint_id: b.weight for b in body.backends if b.endpoint_id is not None}
        provider_weights = {(b.provider_id, b.model): b.weight for b in body.backends if b.provider_id is not None}
        fallbacks = None if body.fallbacks is None else [f.target for f in body.fallbacks]
        extra = {"spill_queue_depth": body.spill_queue_depth} if "spill_queue_depth" in body.model_fields_set else {}
        try:
            await routes.set_backends(conn, name, principal.project_id, endpoint_weights, provider_weights,
                                      fallbacks, **extra)
        except routes.RouteTaken:
            raise Conflict(f"the model name {name!r} belongs to another project", "name") from None
        propagation = await routing.wait_for_gateways(conn)
        return {**route_out(await routes.get_route(conn, name)), "propagated": propagation.propagated,
                "route_table_version": propagation.route_table_version,
                "lagging_gateways": propagation.laggards}


@router.post("/{name}/shift", response_model=RouteOut, status_code=status.HTTP_202_ACCEPTED)
async def start_shift(name: str, body: ShiftRequest, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep,
                      principal: PrincipalDep):
    """Move the route's traffic to `to_endpoint_id`: blue-green (validate, swap) or gradual (steps, each judged by
    a canary analysis against the endpoints it replaces; the decisions and their numbers show in `shift.steps`).
    409 when the endpoint is not RUNNING or is already the canary of another route's running shift."""
    async with pool.acquire() as conn:
        route = await owned_route(conn, name, principal.project_id)
        if any(b.weight > 0 for b in route.provider_backends if not b.fallback):
            raise Conflict(f"route {name} sends traffic to a provider: a shift moves traffic between endpoints; "
                           "PUT the route's backends instead", "to_endpoint_id")
        await capacity.check_shift_target(conn, body.to_endpoint_id, principal.project_id)
        if await traffic_shift_running(temporal, name):
            raise Conflict(f"a traffic shift is already moving route {name}")
        for other in await canary_store.running_shifts_to(conn, body.to_endpoint_id):
            if other != name and await traffic_shift_running(temporal, other):
                raise Conflict(f"endpoint {body.to_endpoint_id} is the canary of a running shift of route {other}",
                               "to_endpoint_id")
        # Shown before the workflow starts, so its own first record is never overwritten by this one.
        await routes.set_shift(conn, name, {"status": "RUNNING", "step": "starting", "strategy": body.strategy,
                                            "to_endpoint_id": str(body.to_endpoint_id),
                                            "workflow_id": traffic_shift_workflow_id(name)})
        await start_traffic_shift(temporal, settings, TrafficShiftInput(route_name=name,
                                                                        project_id=principal.project_id, request=body))
        return route_out(await routes.get_route(conn, name))


@router.post("/{name}/shift/abort", response_model=RouteOut, status_code=status.HTTP_202_ACCEPTED)
async def abort_shift(name: str, pool: PoolDep, temporal: TemporalDep, principal: PrincipalDep,
                      body: ShiftAbort | None = None):
    """Roll the shift back: every weight returns to where it was before it started. The body is optional."""
    async with pool.acquire() as conn:
        await owned_route(conn, name, principal.project_id)
        await abort_traffic_shift(temporal, name, (body or ShiftAbort()).reason)
        return route_out(await routes.get_route(conn, name))
