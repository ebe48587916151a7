"""External OpenAI-compatible providers (a hosted API) that routes may send traffic to, beside or behind the
project's own endpoints. The provider's API key is sealed at rest and never returned: responses say api_key_set."""

from __future__ import annotations

import asyncio
from datetime import datetime
from uuid import UUID

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field

from api.deps import PoolDep, PrincipalDep, SettingsDep
from api.errors import not_found
from control.errors import Conflict, invalid_field
from control.payloads.providers import PricePerMtok, ProviderCreate
from control.store import providers
from control.store.providers import ProviderRow
from core.provider_urls import UnsafeProviderUrl, check_base_url

router = APIRouter(prefix="/api/providers", tags=["providers"])


class ProviderOut(BaseModel):
    id: UUID
    project_id: UUID
    name: str
    kind: str
    base_url: str
    models: list[str]
    price_per_mtok: PricePerMtok
    api_key_set: bool = Field(description="the API key is stored (encrypted); it is never shown")
    created_at: datetime
    updated_at: datetime


def _out(row: ProviderRow) -> dict:
    fields = row.model_dump(exclude={"price_input_per_mtok", "price_output_per_mtok"})
    return {**fields, "price_per_mtok": {"input": row.price_input_per_mtok, "output": row.price_output_per_mtok},
            "api_key_set": True}


@router.post("", response_model=ProviderOut, status_code=status.HTTP_201_CREATED,
             responses={409: {"description": "the project has a provider by that name"}})
async def create_provider(body: ProviderCreate, pool: PoolDep, settings: SettingsDep, principal: PrincipalDep) -> dict:
    """Register a provider. base_url must be https and reach a public address unless the administrator set
    BUD_PROVIDER_ALLOW_PRIVATE_URLS; names are resolved now (and again by the gateway before it connects)."""
    try:
        base_url = await asyncio.to_thread(check_base_url, body.base_url,
                                           allow_private=settings.provider_allow_private_urls)
    except UnsafeProviderUrl as error:
        raise invalid_field("base_url", str(error)) from None
    sealed = settings.secret_box().seal(body.api_key.get_secret_value())
    async with pool.acquire() as conn:
        row = await providers.create_provider(conn, principal.project_id, body.name, body.kind, base_url, sealed,
                                              body.models, body.price_per_mtok.input, body.price_per_mtok.output)
    if row is None:
        raise Conflict(f"provider {body.name!r} already exists", "name")
    return _out(row)


@router.get("", response_model=list[ProviderOut])
async def list_providers(pool: PoolDep, principal: PrincipalDep) -> list[dict]:
    async with pool.acquire() as conn:
        return [_out(row) for row in await providers.list_providers(conn, principal.project_id)]


@router.get("/{provider_id}", response_model=ProviderOut)
async def get_provider(provider_id: UUID, pool: PoolDep, principal: PrincipalDep) -> dict:
    async with pool.acquire() as conn:
        row = await providers.get_provider(conn, provider_id, principal.project_id)
    if row is None:
        raise not_found("provider", provider_id)
    return _out(row)


@router.delete("/{provider_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={409: {"description": "a route still sends traffic to it"}})
async def delete_provider(provider_id: UUID, pool: PoolDep, principal: PrincipalDep) -> Response:
    """Delete a provider no route uses (take it out of the routes first)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await providers.get_provider(conn, provider_id, principal.project_id)
        if row is None:
            raise not_found("provider", provider_id)
        await conn.execute("SELECT 1 FROM providers WHERE id = $1 FOR UPDATE", provider_id)
        using = await providers.routes_using(conn, provider_id)
        if using:
            raise Conflict(f"provider {row.name} is a backend of route(s) {', '.join(using)}: "
                           "take it out of them first", "provider_id", routes=using)
        await providers.delete_provider(conn, provider_id, principal.project_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
