"""Connections to external providers go only where a provider URL may point (core.provider_urls).

The API checks a provider's base URL when it is registered, but a host name may resolve elsewhere later (DNS
rebinding): the provider connection pool resolves names through `GuardedResolver`, which drops every address the
rules refuse (loopback, private, link-local such as the metadata service, ...) and fails the connection when none is
left, which the gateway treats like a refused connection. Literal IP addresses never reach a resolver, so
`literal_host_refusal` checks them when the route table is loaded. `allow_private`
(BUD_PROVIDER_ALLOW_PRIVATE_URLS, the administrator's choice the API also follows) turns both checks off.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from core.provider_urls import address_refusal


class GuardedResolver(AbstractResolver):
    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:  # fmt: skip
        results = await self._inner.resolve(host, port, family)
        allowed = [result for result in results if address_refusal(result["host"]) is None]
        if not allowed:
            raise OSError(f"provider host {host} resolves only to addresses a provider may not use")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def literal_host_refusal(base_url: str) -> str | None:
    """Why a provider base URL whose host is a literal IP address is refused (None for names and allowed IPs)."""
    host = urlsplit(base_url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return address_refusal(host)
