"""The one Temporal client factory: every client in the project uses the pydantic data converter."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.contrib.pydantic import pydantic_data_converter

DATA_CONVERTER = pydantic_data_converter


async def connect_temporal(address: str, namespace: str = "default", runtime: Runtime | None = None) -> Client:
    return await Client.connect(address, namespace=namespace, data_converter=DATA_CONVERTER, runtime=runtime)
