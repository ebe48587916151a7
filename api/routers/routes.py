"""Routes (the seed's Versioning): the model name clients send, spread over endpoints by weight; blue-green swaps
and gradual A/B rollouts on it run as the TrafficShift workflow."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, status
from pydantic import BaseModel
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.deps import PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.errors import ApiError, not_found
from control.payloads.deployments import EndpointStatus
from control.payloads.traffic import RouteUpdate, ShiftRequest, TrafficShiftInput
from control.store import endpoints, routes
from workflows.ids import traffic_shift_workflow_id
from workflows.traffic_shift import TrafficShift

router = APIRouter(prefix="/api/routes", tags=["routes"])


class Backend(BaseModel):
    endpoint_id: UUID
    endpoint_name: str
    weight: int
    status: str


class RouteOut(BaseModel):
    name: str
    project_id: UUID
    backends: list[Backend]
    shift: dict[str, Any] | None
    updated_at: datetime


class ShiftAbort(BaseModel):
    reason: str = "aborted by request"


async def owned_route(conn, name: str, project_id: UUID):
    route = await routes.get_route(conn, name, project_id)
    if route is None:
        raise not_found("route", name)
    return route


async def shift_running(temporal, name: str) -> bool:
    try:
        description = await temporal.get_workflow_handle(traffic_shift_workflow_id(name)).describe()
    except RPCError:
        return False
    return description.status == WorkflowExecutionStatus.RUNNING


@router.get("", response_model=list[RouteOut])
async def list_routes(pool: PoolDep, principal: PrincipalDep) -> list[dict]:
    async with pool.acquire() as conn:
        return [dict(row) for row in await routes.list_routes(conn, principal.project_id)]


@router.get("/{name}", response_model=RouteOut)
async def get_route(name: str, pool: PoolDep, principal: PrincipalDep) -> dict:
    async with pool.acquire() as conn:
        return dict(await owned_route(conn, name, principal.project_id))


@router.put("/{name}", response_model=RouteOut)
async def put_route(name: str, body: RouteUpdate, pool: PoolDep, temporal: TemporalDep,
                    principal: PrincipalDep) -> dict:
    """Set the endpoints behind `name` and their weights (creates the route). Endpoints with traffic must be
    RUNNING; the change is one transaction, so the gateway never serves a half-applied split."""
    async with pool.acquire() as conn:
        owner = await routes.name_owner(conn, name)
        if owner is not None and owner != principal.project_id:
            raise ApiError(409, f"the model name {name} belongs to another project", {"field": "name"})
        if await shift_running(temporal, name):
            raise ApiError(409, f"a traffic shift is moving route {name}: abort it first")
        for index, backend in enumerate(body.backends):
            endpoint = await endpoints.get_endpoint(conn, backend.endpoint_id, principal.project_id)
            if endpoint is None or endpoint["status"] == EndpointStatus.DELETED:
                raise ApiError(422, f"endpoint {backend.endpoint_id} does not exist",
                               [{"field": f"backends.{index}.endpoint_id"}])
            if backend.weight > 0 and endpoint["status"] != EndpointStatus.RUNNING:
                raise ApiError(409, f"endpoint {endpoint['name']} is {endpoint['status']}: only RUNNING endpoints "
                                    "take traffic", {"field": f"backends.{index}.weight"})
        try:
            await routes.set_weights(conn, name, principal.project_id, {b.endpoint_id: b.weight for b in body.backends})
        except routes.RouteTaken:
            raise ApiError(409, f"the model name {name} belongs to another project", {"field": "name"}) from None
        return dict(await routes.get_route(conn, name))


@router.post("/{name}/shift", response_model=RouteOut, status_code=status.HTTP_202_ACCEPTED)
async def start_shift(name: str, body: ShiftRequest, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep,
                      principal: PrincipalDep) -> dict:
    """Move the route's traffic to `to_endpoint_id`: blue-green (validate, swap) or gradual (SLO-gated steps)."""
    async with pool.acquire() as conn:
        await owned_route(conn, name, principal.project_id)
        target = await endpoints.get_endpoint(conn, body.to_endpoint_id, principal.project_id)
        if target is None or target["status"] == EndpointStatus.DELETED:
            raise ApiError(422, f"endpoint {body.to_endpoint_id} does not exist", [{"field": "to_endpoint_id"}])
        if target["status"] != EndpointStatus.RUNNING:
            raise ApiError(409, f"endpoint {target['name']} is {target['status']}, not RUNNING",
                           {"field": "to_endpoint_id"})
        if await shift_running(temporal, name):
            raise ApiError(409, f"a traffic shift is already moving route {name}")
        # Shown before the workflow starts, so its own first record is never overwritten by this one.
        await routes.set_shift(conn, name, {"status": "RUNNING", "step": "starting", "strategy": body.strategy,
                                            "workflow_id": traffic_shift_workflow_id(name)})
        try:
            await temporal.start_workflow(
                TrafficShift.run, TrafficShiftInput(route_name=name, project_id=principal.project_id, request=body),
                id=traffic_shift_workflow_id(name), task_queue=settings.control_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE, id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
        except WorkflowAlreadyStartedError:
            raise ApiError(409, f"a traffic shift is already moving route {name}") from None
        return dict(await routes.get_route(conn, name))


@router.post("/{name}/shift/abort", response_model=RouteOut, status_code=status.HTTP_202_ACCEPTED)
async def abort_shift(name: str, body: ShiftAbort, pool: PoolDep, temporal: TemporalDep,
                      principal: PrincipalDep) -> dict:
    """Roll the shift back: every weight returns to where it was before it started."""
    async with pool.acquire() as conn:
        await owned_route(conn, name, principal.project_id)
        if not await shift_running(temporal, name):
            raise ApiError(409, f"no traffic shift is running on route {name}")
        try:
            await temporal.get_workflow_handle(traffic_shift_workflow_id(name)).signal(TrafficShift.abort, body.reason)
        except RPCError:  # it finished between the check and the signal
            raise ApiError(409, f"no traffic shift is running on route {name}") from None
        return dict(await routes.get_route(conn, name))
