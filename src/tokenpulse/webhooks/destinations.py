"""Where a webhook may point: by default only at addresses of the public internet, so that no key
can make the service post into the network it runs in (its database, a cloud's metadata
service, anything behind its firewall)."""

import asyncio
import ipaddress
import socket

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def private_address_problem(address: IPAddress) -> str | None:
    """Why `address` is not one a webhook may be sent to, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind, private in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),
    ):
        if private:
            return f"{address} is a {kind} address"
    return None


def literal_problem(url: str) -> str | None:
    """Why the host of `url`, when it names a private address by itself (an address, or
    localhost), may not be sent to."""
    host = httpx.URL(url).host
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is a loopback address"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return private_address_problem(address)


class RefusedDestination(Exception):
    """The host of a webhook's URL resolves to an address it may not be sent to."""


async def public_address(url: str) -> IPAddress:
    """The address to send `url`'s request to: the first its host resolves to now, each of them
    public; or RefusedDestination saying why not."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            parsed.host, port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise RefusedDestination(f"{parsed.host} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(sockaddr[0]) for *_, sockaddr in found]
    for address in addresses:
        if (problem := private_address_problem(address)) is not None:
            raise RefusedDestination(f"{parsed.host} resolves to {problem}")
    if not addresses:
        raise RefusedDestination(f"{parsed.host} resolves to no address")
    return addresses[0]


def pinned(url: str, address: IPAddress) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """The request to `url` sent to `address` itself, so that the host cannot resolve elsewhere
    between the check and the connection: the URL, the Host header, and for TLS the name the
    certificate is checked against."""
    parsed = httpx.URL(url)
    extensions = {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
    host = parsed.netloc.decode("ascii").rpartition("@")[2]
    return parsed.copy_with(host=str(address)), {"host": host}, extensions
