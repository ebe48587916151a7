"""The one Temporal client factory: every client in the project uses the pydantic data converter."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

if TYPE_CHECKING:
    from core.settings import Settings

DATA_CONVERTER = pydantic_data_converter


def temporal_tls(settings: Settings) -> TLSConfig | bool:
    """The TLS settings for Temporal's frontend: False (plaintext, the dev server), or a TLSConfig read from the
    BUD_TEMPORAL_TLS_* files (a CA bundle, a client certificate and key for mutual TLS, the name to check)."""
    if not settings.temporal_tls:
        return False

    def read(path: str) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return TLSConfig(
        server_root_ca_cert=read(settings.temporal_tls_ca_file),
        client_cert=read(settings.temporal_tls_cert_file),
        client_private_key=read(settings.temporal_tls_key_file),
        domain=settings.temporal_tls_server_name or None,
    )


async def connect_temporal(
    address: str, namespace: str = "default", runtime: Runtime | None = None, tls: TLSConfig | bool = False
) -> Client:
    return await Client.connect(address, namespace=namespace, data_converter=DATA_CONVERTER, runtime=runtime, tls=tls)
