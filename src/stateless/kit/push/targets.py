"""Where outbound requests to tenant-given URLs may go (webhooks, Mastodon, Web Push endpoints).

The host is resolved once and every address is checked: private, loopback, link-local
(169.254.169.254 included), multicast, reserved and unspecified addresses are refused unless
the caller allows private networks. The caller connects to the checked address itself, so a
second DNS answer cannot redirect it. Here, not in a domain: the task runner and Web Push both
need it, and neither may import the other.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetError(Exception):
    """The target cannot be used; `detail` is safe to show (no address, no key)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TargetUnresolvable(TargetError):
    """The host name does not resolve (may be transient)."""


class TargetNotAllowed(TargetError):
    """The host resolves to an address outbound requests must not reach."""


def address_allowed(ip: IPAddress) -> bool:
    """Only globally routable unicast addresses are reachable by default."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_allowed(ip.ipv4_mapped)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


async def resolve_checked(host: str, port: int, allow_private: bool) -> IPAddress:
    """Resolve `host` once and return an address we may connect to, or raise a TargetError."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        candidates = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (OSError, UnicodeError):
            raise TargetUnresolvable("the target host name does not resolve") from None
        candidates = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not candidates:
            raise TargetUnresolvable("the target host name does not resolve")
    # Every answer must be public: a mixed answer is how DNS rebinding slips through.
    if not allow_private and any(not address_allowed(ip) for ip in candidates):
        raise TargetNotAllowed(
            "the target resolves to a private, loopback, link-local or reserved address; "
            "refused (WEBHOOK_ALLOW_PRIVATE_NETWORKS is off)"
        )
    return candidates[0]
