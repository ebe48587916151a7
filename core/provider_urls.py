"""Which base URLs an external provider may have: the rules against a provider URL that points the gateway (or the
control plane) at itself or at the private network it runs in (server-side request forgery).

A base URL is refused unless it is https, names no user and no fragment or query, stays within MAX_URL_LENGTH, and
its host — a literal address, or every address its name resolves to — is a public unicast address: not loopback,
private, shared (CGNAT), link-local (169.254.169.254, the cloud metadata service, among them), multicast, reserved
or unspecified, for IPv4 and IPv6, IPv4 inside IPv6 (::ffff:127.0.0.1, 64:ff9b::/96) included. Legacy IPv4 spellings
(2130706433, 0x7f000001, 0177.0.0.1, 127.1) are refused whatever they point to.

An administrator may allow private addresses and plain http (`BUD_PROVIDER_ALLOW_PRIVATE_URLS`, for a provider on
the same network); the other rules still hold. A name checked at registration may later resolve elsewhere (DNS
rebinding): `resolve_allowed` is the same check for a connection, for a client to run before each new connection.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$")
# IPv4 embedded in IPv6 by translation prefixes: the embedded address is what a connection reaches.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[[str, int], list[str]]


class UnsafeProviderUrl(ValueError):
    """A provider URL (or the address it resolves to) that the rules refuse; the message says which rule."""


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_refusal(address: str) -> str | None:
    """Why a connection to this IP address is refused (None when it is a public unicast address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
                                                      if ip in _NAT64 else None)
        if ip.teredo:
            embedded = ip.teredo[1]
        if embedded is not None:
            reason = address_refusal(str(embedded))
            return f"{address} embeds {embedded}: {reason}" if reason else None
    for flag, what in (("is_unspecified", "unspecified"), ("is_loopback", "loopback"),
                       ("is_link_local", "link-local"), ("is_multicast", "multicast"), ("is_private", "private"),
                       ("is_reserved", "reserved")):
        if getattr(ip, flag):
            return f"{address} is {'an' if what[0] in 'aeiou' else 'a'} {what} address"
    if not ip.is_global:
        return f"{address} is not a public address"
    return None


def _host_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_base_url(url: str, allow_private: bool = False, resolver: Resolver | None = None) -> str:
    """The URL (without a trailing slash) when every rule holds; UnsafeProviderUrl naming the rule otherwise.

    With allow_private, plain http and private or loopback hosts are accepted and the name is not resolved."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeProviderUrl(f"longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url) or not url.isascii():
        raise UnsafeProviderUrl("only printable ASCII without spaces (write international names in punycode)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeProviderUrl(f"not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_private and scheme == "http"):
        raise UnsafeProviderUrl("must be an https:// URL")
    if "@" in parts.netloc or parts.username is not None:
        raise UnsafeProviderUrl("must not carry a user or password (send the key as api_key)")
    if "#" in url:
        raise UnsafeProviderUrl("must not have a fragment")
    if "?" in url:
        raise UnsafeProviderUrl("must not have a query")
    if "\\" in url:
        raise UnsafeProviderUrl("must not contain backslashes")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeProviderUrl("must name a host")
    bracketed = parts.netloc.rsplit("@", 1)[-1].startswith("[")
    literal = _host_literal(host)
    if bracketed and not isinstance(literal, ipaddress.IPv6Address):
        raise UnsafeProviderUrl(f"[{host}] is not an IPv6 address")
    if literal is None:
        if _LEGACY_IPV4.match(host):
            raise UnsafeProviderUrl(f"{host} is not a dotted-decimal IPv4 address or a host name")
        labels = host.split(".")
        if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
            raise UnsafeProviderUrl(f"{host!r} is not a valid host name")
        if labels[-1] == "localhost" and not allow_private:
            raise UnsafeProviderUrl(f"{host} is a loopback name")
    elif isinstance(literal, ipaddress.IPv4Address) and str(literal) != host:
        raise UnsafeProviderUrl(f"{host} is not a dotted-decimal IPv4 address")
    if not allow_private:
        if literal is not None:
            reason = address_refusal(str(literal))
            if reason:
                raise UnsafeProviderUrl(reason)
        else:
            resolve_allowed(host, port or 443, allow_private=False, resolver=resolver)
    return url.rstrip("/")


def resolve_allowed(host: str, port: int, allow_private: bool = False, resolver: Resolver | None = None) -> list[str]:
    """The addresses `host` resolves to now, when a connection may go to every one of them; UnsafeProviderUrl when
    it does not resolve or one address is refused. For a client to call before each new connection."""
    try:
        addresses = (resolver or _system_resolver)(host, port)
    except (OSError, UnicodeError) as error:
        raise UnsafeProviderUrl(f"{host} does not resolve: {error}") from None
    if not addresses:
        raise UnsafeProviderUrl(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = address_refusal(address)
            if reason:
                raise UnsafeProviderUrl(f"{host} resolves to {reason}")
    return addresses
