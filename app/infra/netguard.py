"""User-given URLs that the service calls must reach public addresses only (SSRF guard).

A job's ``webhook_url`` comes from the user, but the worker POSTs to it from inside the
operator's network, where it could reach the cloud metadata service (169.254.169.254), a
database on loopback or any private host. The API checks the URL when the job is submitted; the
worker checks it again at delivery and connects to the address it checked, so a name whose DNS
answer changes after the check (DNS rebinding) gains nothing. Operators whose receivers live
inside their network set ``HARDEN_WEBHOOK_ALLOW_PRIVATE=true``.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HINT = (
    "use a public https URL, or set HARDEN_WEBHOOK_ALLOW_PRIVATE=true for a receiver inside "
    "your network"
)
# IPv6 ranges whose last 32 bits are an IPv4 address that a gateway or the host's own stack
# forwards to: NAT64's well-known prefix and the deprecated IPv4-compatible addresses.
_CARRY_IPV4 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"))


class NonPublicAddressError(ValueError):
    """The host is, or resolves to, an address that is not globally routable."""


class UnresolvableHostError(ValueError):
    """The host name does not resolve (at the moment)."""


def is_public(ip: IPAddress) -> bool:
    """True for a globally routable unicast address; an IPv4 address inside IPv6 must be too."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            # ::ffff:a.b.c.d is a.b.c.d on a dual-stack socket; Python versions disagree on the
            # mapped form's own flags, so judge the IPv4 address alone.
            return is_public(ip.ipv4_mapped)
        carried = ip.sixtofour
        if carried is None and any(ip in network for network in _CARRY_IPV4):
            carried = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if carried is not None and not is_public(carried):
            return False
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int | None = None) -> list[IPAddress]:
    """The addresses ``host`` stands for: itself when it is an IP literal, else its A/AAAA."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnresolvableHostError(f"the host name {host!r} does not resolve ({exc})") from exc
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def public_addresses(host: str, port: int | None = None) -> list[IPAddress]:
    """The addresses of ``host``, every one of them public, in resolver order.

    Raises NonPublicAddressError when the host is 'localhost' or any address is not public
    (a name with one private address among public ones could be steered to it), and
    UnresolvableHostError when the name does not resolve.
    """
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise NonPublicAddressError(f"{host!r} is the service's own machine (loopback)")
    addresses = resolve(name, port)
    for address in addresses:
        if not is_public(address):
            where = host if str(address) == name else f"{host} resolves to {address}, which"
            raise NonPublicAddressError(
                f"{where} is not a public address (loopback, private, link-local or reserved)"
            )
    if not addresses:
        raise UnresolvableHostError(f"the host name {host!r} has no address")
    return addresses


@dataclass(frozen=True)
class GuardedTarget:
    """Where to send a request to a user-given URL: ``url`` is the checked address (or the URL
    itself where no check applies), ``headers`` and ``extensions`` keep the name in Host and in
    TLS (SNI, certificate), ``trust_env`` whether httpx may read proxy settings."""

    url: httpx.URL
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)
    trust_env: bool = True


def guarded_target(url: httpx.URL, *, allow_private: bool) -> GuardedTarget:
    """The target of a request to ``url`` whose host must be public (unless ``allow_private``);
    raises NonPublicAddressError or UnresolvableHostError. Send it with redirects off: a
    redirect's target is a new URL to check."""
    if allow_private:
        return GuardedTarget(url)
    addresses = public_addresses(url.host, url.port)
    if _env_proxy_applies(url):
        return GuardedTarget(url)  # the proxy resolves the name
    # Connect to the address just checked: letting httpx resolve the name again would let a DNS
    # server that alternates its answers pass the check and then point the connection elsewhere.
    return GuardedTarget(
        url.copy_with(host=str(addresses[0])),
        {"Host": url.netloc.decode("ascii")},
        {"sni_hostname": url.host} if url.scheme == "https" else {},
        trust_env=False,
    )


def _env_proxy_applies(url: httpx.URL) -> bool:
    """Whether httpx would send ``url`` through a proxy from HTTP(S)_PROXY / ALL_PROXY."""
    proxies = urllib.request.getproxies()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(url.host)
