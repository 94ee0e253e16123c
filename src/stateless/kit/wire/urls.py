"""The rules for URLs in settings: https, or plain http only towards a loopback address (where
the tests' local peers listen) for services we send credentials to; a known scheme and a host
for the rest. Each refusal is one line naming what the URL needs."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback_host(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _shown(url: str) -> str:
    """The URL for an error message: no user or password, at most 100 characters."""
    try:
        parts = urlsplit(url)
        if parts.username or parts.password:
            netloc = parts.netloc.rsplit("@", 1)[1]
            url = parts._replace(netloc=f"***@{netloc}").geturl()
    except ValueError:
        return "an unreadable URL"
    return repr(url[:100])


def require_https_or_loopback(url: str) -> str:
    """The URL without a trailing slash; ValueError naming what it needs otherwise."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise ValueError(f"must be an https:// URL, got {_shown(url)}") from None
    if not host or parts.scheme not in ("https", "http"):
        raise ValueError(f"must be an https:// URL, got {_shown(url)}")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ValueError(
            f"must be https:// (plain http:// only towards a loopback address), got {_shown(url)}"
        )
    return url.rstrip("/")


def require_url(url: str, schemes: Collection[str], example: str) -> str:
    """A URL with one of `schemes` and a host; ValueError naming what it needs otherwise."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host, parts = None, None
    if parts is None or parts.scheme not in schemes or not host:
        wanted = " or ".join(f"{scheme}://" for scheme in schemes)
        raise ValueError(f"must be a {wanted} URL with a host (e.g. {example}), got {_shown(url)}")
    return url
