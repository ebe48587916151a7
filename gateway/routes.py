"""The route table: the one data shape every route source produces and the gateway consumes.

    {"routes": {"llama-3-8b": [
        {"endpoint_id": "ep-blue",  "weight": 90, "replicas": ["http://10.0.0.5:8000", "http://10.0.0.6:8000"]},
        {"endpoint_id": "ep-green", "weight": 10, "replicas": ["http://10.0.0.7:8000"], "served_model_name": "m-v2"}
    ]}}

A route name is the model name clients send. Weights are relative (90/10 and 0.9/0.1 mean the same); an endpoint with
weight 0 or no replicas gets no traffic. Replicas are base URLs of runtimes speaking the OpenAI API (a trailing /v1
is dropped); list only replicas that passed their health checks.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Backend(BaseModel):
    """One endpoint behind a route."""

    model_config = ConfigDict(frozen=True)

    endpoint_id: str = Field(min_length=1)
    weight: float = Field(1.0, ge=0, description="relative share of the route's traffic")
    replicas: tuple[str, ...] = Field(default=(), description="base URLs, e.g. http://127.0.0.1:8001")
    served_model_name: str | None = Field(
        None, description="the name this endpoint's runtime serves, when it differs from the route name"
    )

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


class RouteTable(BaseModel):
    """Model name -> the endpoints that serve it."""

    model_config = ConfigDict(frozen=True)

    routes: dict[str, tuple[Backend, ...]] = Field(default_factory=dict)

    def replica_urls(self) -> set[str]:
        return {url for backends in self.routes.values() for backend in backends for url in backend.replicas}
