"""The route table: the one data shape every route source produces and the gateway consumes.

    {"routes": {
        "llama-3-8b": {"project_id": "6f1c...", "spill_queue_depth": 8, "backends": [
            {"endpoint_id": "ep-blue",  "weight": 90, "replicas": ["http://10.0.0.5:8000", "http://10.0.0.6:8000"]},
            {"endpoint_id": "ep-green", "weight": 10, "replicas": ["http://10.0.0.7:8000"], "served_model_name": "m"},
            {"endpoint_id": "ep-spare", "fallback": true, "replicas": ["http://10.0.0.9:8000"]}
        ]},
        "open-route": [{"endpoint_id": "ep-x", "replicas": ["http://10.0.0.8:8000"]}]
    }}

A route name is the model name clients send. Weights are relative (90/10 and 0.9/0.1 mean the same); an endpoint with
weight 0 or no replicas gets no traffic. Replicas are base URLs of runtimes speaking the OpenAI API (a trailing /v1
is dropped); list only replicas that passed their health checks.

Ownership: a route names the project whose inference keys may call it (`project_id`). A route given as a bare list
of backends belongs to no project: a gateway that checks keys (the normal mode) serves it to no key at all; only a
gateway started without key checking (`--auth none`, a private network) serves it. So a routes file for a gateway
with keys writes every route in the object form with its project_id.

Fallback backends (`"fallback": true`) get traffic only when the primaries cannot take it: no usable replica,
refused connections, a 5xx before the first byte, or (with `spill_queue_depth`) every primary replica already has
more than that many of this gateway's requests in flight.

A backend is either an endpoint (replicas of our runtimes) or an external OpenAI-compatible provider (`provider`):
its base_url, its API key (held in memory only, never shown in a repr or a dump), and the model name to ask for.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class ProviderTarget(BaseModel):
    """An external OpenAI-compatible API behind a route."""

    model_config = ConfigDict(frozen=True)

    provider_id: str = Field(min_length=1)
    name: str = Field(min_length=1, description="the provider's name in its project (error messages, x-bud-backend)")
    base_url: str = Field(min_length=1, description="OpenAI base URL, e.g. https://api.example.com/v1")
    api_key: SecretStr = Field(repr=False)
    model: str = Field(min_length=1, description="the model name sent to the provider")

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, url: str) -> str:
        return url.rstrip("/")


class Backend(BaseModel):
    """One endpoint (or provider) behind a route."""

    model_config = ConfigDict(frozen=True)

    endpoint_id: str = Field(min_length=1, description="endpoint id; for a provider, '<provider_id>/<model>'")
    weight: float = Field(1.0, ge=0, description="relative share of the route's traffic")
    replicas: tuple[str, ...] = Field(default=(), description="base URLs, e.g. http://127.0.0.1:8001")
    served_model_name: str | None = Field(
        None, description="the name this endpoint's runtime serves, when it differs from the route name"
    )
    fallback: bool = Field(False, description="used only when the primaries cannot take the request")
    provider: ProviderTarget | None = None

    @field_validator("replicas", mode="before")
    @classmethod
    def _normalize_urls(cls, urls: object) -> object:
        if not isinstance(urls, list | tuple):
            return urls
        normalized = []
        for url in urls:
            if not isinstance(url, str):
                return urls  # let pydantic report the type error
            url = url.rstrip("/")
            normalized.append(url[: -len("/v1")] if url.endswith("/v1") else url)
        return tuple(normalized)

    @model_validator(mode="after")
    def _provider_has_its_url(self) -> Backend:
        if self.provider is not None and self.replicas != (self.provider.base_url,):
            # The balancer tracks a provider like a one-replica endpoint whose replica is its base URL.
            object.__setattr__(self, "replicas", (self.provider.base_url,))
        return self

    @property
    def label(self) -> str:
        """What x-bud-backend says: the endpoint id, or `<provider name>/<model>`."""
        if self.provider is not None:
            return f"{self.provider.name}/{self.provider.model}"
        return self.endpoint_id


class RouteInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    project_id: str | None = None
    spill_queue_depth: int | None = Field(None, ge=0)


class RouteTable(BaseModel):
    """Model name -> the endpoints that serve it, and who owns each route."""

    model_config = ConfigDict(frozen=True)

    routes: dict[str, tuple[Backend, ...]] = Field(default_factory=dict)
    info: dict[str, RouteInfo] = Field(default_factory=dict, description="project and spill settings per route")

    @model_validator(mode="before")
    @classmethod
    def _object_form(cls, data: Any) -> Any:
        """Routes may be written as {"project_id", "spill_queue_depth", "backends"}; split those into `info`."""
        if not isinstance(data, dict) or not isinstance(data.get("routes"), dict):
            return data
        routes: dict[str, Any] = {}
        info: dict[str, Any] = dict(data.get("info") or {})
        for name, route in data["routes"].items():
            if isinstance(route, dict):
                routes[name] = route.get("backends", [])
                info[name] = {k: v for k, v in route.items() if k != "backends"}
            else:
                routes[name] = route
        return {**data, "routes": routes, "info": info}

    def replica_urls(self) -> set[str]:
        return {url for backends in self.routes.values() for backend in backends for url in backend.replicas}

    def project_of(self, route: str) -> str | None:
        info = self.info.get(route)
        return info.project_id if info is not None else None
