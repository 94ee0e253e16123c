"""The one rule for URLs of services we send credentials to (store APIs): https, or plain http
only towards a loopback address, where the tests' local peers listen."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback_host(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_https_or_loopback(url: str) -> str:
    """The URL without a trailing slash; ValueError naming what it needs otherwise."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or parts.scheme not in ("https", "http"):
        raise ValueError(f"must be an https:// URL, got {url[:100]!r}")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ValueError(
            f"must be https:// (plain http:// only towards a loopback address), got {url[:100]!r}"
        )
    return url.rstrip("/")
