"""Failed authentications, counted per client address: past a burst, an address is answered
429 at once, and the keys it presents cost the database nothing."""

import ipaddress

from tokenpulse.clock import Monotonic
from tokenpulse.ratelimit import TokenBuckets

FAILURES_PER_SECOND = 1.0
"""How fast one address earns back a failed authentication, on each worker."""
FAILURE_BURST = 50
"""Failed authentications one address may have in a row before it is answered 429."""
MAX_ADDRESSES = 10_000
"""Addresses remembered at once; the one that failed least recently is forgotten first."""


def client_address(host: str | None) -> str:
    """Whom a request's failures count against: its peer's IPv4 address, or the /64 network of
    its IPv6 address, since one IPv6 host commonly holds a whole /64 to pick addresses from."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return host or ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def failed_authentications(clock: Monotonic) -> TokenBuckets:
    """A bucket per address: each failed authentication spends one token."""
    return TokenBuckets(FAILURES_PER_SECOND, FAILURE_BURST, clock=clock, max_keys=MAX_ADDRESSES)
