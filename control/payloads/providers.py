"""External OpenAI-compatible providers a route may send traffic to (`POST /api/providers`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator

from control.payloads.common import NAME_PATTERN

MAX_PRICE_PER_MTOK = 1_000_000.0
# A provider's model names as its API spells them (org/model:tag and the like): printable, no spaces.
ProviderModel = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[!-~]+$")]


class PricePerMtok(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, le=MAX_PRICE_PER_MTOK, description="USD per million prompt tokens")
    output: float = Field(ge=0, le=MAX_PRICE_PER_MTOK, description="USD per million completion tokens")


class ProviderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    kind: Literal["openai-compatible"] = "openai-compatible"
    base_url: str = Field(min_length=1, max_length=2048, description=(
        "the provider's API base, e.g. https://api.example.com/v1 (requests go to <base_url>/chat/completions): "
        "https, a public host, no user, query or fragment"))
    api_key: SecretStr = Field(min_length=1, max_length=4096, description=(
        "sent to the provider as a bearer token; stored encrypted, never shown again"))
    models: list[ProviderModel] = Field(min_length=1, max_length=100,
                                        description="the provider's model names a route may use")
    price_per_mtok: PricePerMtok

    @field_validator("api_key")
    @classmethod
    def _header_safe(cls, api_key: SecretStr) -> SecretStr:
        # It travels in an Authorization header: visible ASCII only, so it cannot break the header or add one.
        # The message never repeats the value.
        if not all("!" <= ch <= "~" for ch in api_key.get_secret_value()):
            raise ValueError("must be visible ASCII characters only (no spaces or line breaks)")
        return api_key

    @field_validator("models")
    @classmethod
    def _distinct(cls, models: list[str]) -> list[str]:
        if len(set(models)) != len(models):
            raise ValueError("each model appears once")
        return models
