"""The client's address, for rate limits and login throttling.

The address is the TCP peer's. `X-Forwarded-For` is read only when the peer is a configured trusted proxy (none by
default): then the client is the right-most address in the header that is not itself a trusted proxy, because
everything to its left was written by the client and can be anything. The app is served with uvicorn's own
proxy-header handling switched off (webapp/server.py), which would otherwise believe the header from loopback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from pydantic import IPvAnyNetwork

UNKNOWN = "unknown"


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address, proxies: Sequence[IPvAnyNetwork]) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_address(peer: str | None, headers: Mapping[str, str], trusted_proxies: Sequence[IPvAnyNetwork]) -> str:
    if not peer:
        return UNKNOWN
    if not trusted_proxies or not _trusted(_address(peer), trusted_proxies):
        return peer
    forwarded = [part for part in headers.get("x-forwarded-for", "").split(",") if part.strip()]
    for hop in reversed(forwarded):
        address = _address(hop)
        if address is None:
            # A hop that is not an address: nothing left of it can be trusted either.
            return peer
        if not _trusted(address, trusted_proxies):
            return str(address)
    return peer


def request_client(request, trusted_proxies: Sequence[IPvAnyNetwork]) -> str:
    """The client of a Starlette request (or of a Gradio request, which wraps one)."""
    client = getattr(request, "client", None)
    headers = getattr(request, "headers", None) or {}
    return client_address(getattr(client, "host", None), headers, trusted_proxies)
