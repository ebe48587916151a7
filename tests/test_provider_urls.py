"""Provider base URLs: what may not point the gateway at itself or at the network it runs in."""

from __future__ import annotations

import pytest

from core.provider_urls import MAX_URL_LENGTH, UnsafeProviderUrl, address_refusal, check_base_url, resolve_allowed


def public_resolver(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


@pytest.mark.parametrize("url", [
    "http://api.example.com/v1",                 # not https
    "ftp://api.example.com/v1",
    "https://127.0.0.1/v1",                      # loopback
    "https://127.8.9.10/v1",
    "https://[::1]/v1",
    "https://[::ffff:127.0.0.1]/v1",             # IPv4-mapped loopback
    "https://[64:ff9b::a00:1]/v1",               # NAT64 of 10.0.0.1
    "https://[2002:7f00:1::]/v1",                # 6to4 of 127.0.0.1
    "https://0.0.0.0/v1",                        # unspecified
    "https://[::]/v1",
    "https://169.254.169.254/latest/meta-data",  # link-local: the cloud metadata service
    "https://[fe80::1]/v1",
    "https://10.1.2.3/v1",                       # private
    "https://172.16.0.1/v1",
    "https://192.168.1.1/v1",
    "https://[fd00::1]/v1",
    "https://100.64.0.1/v1",                     # shared address space
    "https://224.0.0.251/v1",                    # multicast
    "https://[ff02::1]/v1",
    "https://240.0.0.1/v1",                      # reserved
    "https://255.255.255.255/v1",
    "https://2130706433/v1",                     # 127.0.0.1 as one decimal number
    "https://0x7f000001/v1",                     # ... in hex
    "https://0177.0.0.1/v1",                     # ... in octal
    "https://127.1/v1",                          # ... shortened
    "https://0x7f.0.0.1/v1",
    "https://localhost/v1",
    "https://api.localhost/v1",
    "https://user:pass@api.example.com/v1",      # userinfo
    "https://api.example.com@127.0.0.1/v1",
    "https://api.example.com/v1#frag",           # fragment
    "https://api.example.com/v1?x=1",            # query
    "https://api.example.com:99999/v1",          # bad port
    "https://[not-ipv6]/v1",
    "https://exa mple.com/v1",                   # whitespace
    "https://example.com/v1\n",
    "https://ex\\ample.com/v1",
    "https://bücher.example/v1",                 # non-ASCII (punycode is accepted)
    "https://-bad-.example.com/v1",
    "https:///v1",                               # no host
    "https://api.example.com/" + "a" * MAX_URL_LENGTH,
])
def test_hostile_urls_are_refused(url):
    with pytest.raises(UnsafeProviderUrl):
        check_base_url(url, resolver=public_resolver)


@pytest.mark.parametrize("url, normalized", [
    ("https://api.example.com/v1", "https://api.example.com/v1"),
    ("https://api.example.com/v1/", "https://api.example.com/v1"),
    ("https://8.8.8.8/v1", "https://8.8.8.8/v1"),
    ("https://[2001:4860:4860::8888]:8443/v1", "https://[2001:4860:4860::8888]:8443/v1"),
    ("https://xn--bcher-kva.example/v1", "https://xn--bcher-kva.example/v1"),
])
def test_public_https_urls_are_accepted(url, normalized):
    assert check_base_url(url, resolver=public_resolver) == normalized


@pytest.mark.parametrize("addresses", [["127.0.0.1"], ["93.184.215.14", "10.0.0.7"], ["::ffff:169.254.169.254"]])
def test_a_name_resolving_to_a_private_address_is_refused(addresses):
    with pytest.raises(UnsafeProviderUrl, match="resolves to"):
        check_base_url("https://rebind.example.com/v1", resolver=lambda host, port: addresses)


def test_a_name_that_does_not_resolve_is_refused():
    def failing(host, port):
        raise OSError("Name or service not known")

    with pytest.raises(UnsafeProviderUrl, match="does not resolve"):
        check_base_url("https://nowhere.example.com/v1", resolver=failing)


def test_the_administrator_may_allow_private_http_urls():
    assert check_base_url("http://127.0.0.1:9999/v1", allow_private=True) == "http://127.0.0.1:9999/v1"
    assert check_base_url("https://10.0.0.5/v1", allow_private=True) == "https://10.0.0.5/v1"
    for still_refused in ("http://u:p@127.0.0.1/v1", "http://127.0.0.1/v1#x", "http://2130706433/v1",
                          "ftp://127.0.0.1/v1"):
        with pytest.raises(UnsafeProviderUrl):
            check_base_url(still_refused, allow_private=True)


def test_a_connection_is_checked_against_what_the_name_resolves_to_now():
    assert resolve_allowed("api.example.com", 443, resolver=public_resolver) == ["93.184.215.14"]
    with pytest.raises(UnsafeProviderUrl):
        resolve_allowed("api.example.com", 443, resolver=lambda host, port: ["169.254.169.254"])
    assert resolve_allowed("api.example.com", 443, allow_private=True,
                           resolver=lambda host, port: ["127.0.0.1"]) == ["127.0.0.1"]


def test_address_refusal_names_the_reason():
    assert "loopback" in address_refusal("127.0.0.1")
    assert "link-local" in address_refusal("169.254.169.254")
    assert address_refusal("1.1.1.1") is None
    assert address_refusal("not an address") is not None
