"""The SSRF guard: which addresses count as public, and how host names are judged."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from app.infra import netguard
from app.infra.netguard import (
    NonPublicAddressError,
    UnresolvableHostError,
    is_public,
    public_addresses,
)

NOT_PUBLIC = [
    "127.0.0.1",  # loopback
    "127.53.0.1",
    "10.1.2.3",  # private
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local: cloud metadata services
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "192.0.2.10",  # documentation
    "::1",
    "::",
    "fe80::1",  # link-local
    "fc00::1",  # unique local
    "ff02::1",  # multicast
    "ff0e::1",
    "::ffff:127.0.0.1",  # IPv4-mapped: the IPv4 address decides
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2001:db8::1",  # documentation
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:93.184.216.34"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_global_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_global_unicast_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def no_dns(*args: object, **kwargs: object) -> object:
    raise AssertionError("an IP literal must not be looked up")


def test_a_public_literal_passes_without_a_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    assert public_addresses("93.184.216.34", 443) == [ipaddress.ip_address("93.184.216.34")]
    assert public_addresses("[2606:4700:4700::1111]") == [
        ipaddress.ip_address("2606:4700:4700::1111")
    ]


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "[::1]", "::ffff:10.0.0.1"])
def test_a_private_literal_is_refused_without_a_lookup(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(NonPublicAddressError, match="not a public address"):
        public_addresses(host)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "api.localhost"])
def test_localhost_names_are_refused_by_name(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(NonPublicAddressError, match="loopback"):
        public_addresses(host)


def fake_dns(answers: dict[str, list[str]]):
    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port or 0),
            )
            for a in answers[host]
        ]

    return getaddrinfo


def test_a_name_with_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        fake_dns({"mixed.example": ["93.184.216.34", "10.0.0.7"], "ok.example": ["8.8.8.8"]}),
    )
    with pytest.raises(NonPublicAddressError, match=r"mixed\.example resolves to 10\.0\.0\.7"):
        public_addresses("mixed.example", 443)
    assert public_addresses("OK.example.", 443) == [ipaddress.ip_address("8.8.8.8")]


def test_a_name_that_does_not_resolve_is_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_dns({}))
    with pytest.raises(UnresolvableHostError, match="does not resolve"):
        public_addresses("nowhere.example")


def test_resolve_keeps_resolver_order_without_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        socket, "getaddrinfo", fake_dns({"two.example": ["8.8.8.8", "1.1.1.1", "8.8.8.8"]})
    )
    assert [str(a) for a in netguard.resolve("two.example")] == ["8.8.8.8", "1.1.1.1"]
