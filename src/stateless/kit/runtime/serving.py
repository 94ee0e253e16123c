"""What `stateless serve` tells a person: where it listens, where the docs are, why it cannot.

The log redacts IP addresses (they identify clients), which used to hide the server's own bind
address too. uvicorn's "running on" line is replaced by a `serving` event whose two URL fields
the redaction lets through (kit/observe/logging.py: server URLs only, no user part, no other path).
A port already taken is caught before uvicorn starts, so the operator gets one line naming
PORT instead of a stack of shutdown messages.
"""

from __future__ import annotations

import errno
import logging
import socket

import structlog

log = structlog.get_logger("stateless.serve")

_WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - names, not a bind


class PortUnavailable(RuntimeError):
    """The address cannot be bound; the message says what to change."""


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def server_urls(host: str, port: int, scheme: str = "http") -> tuple[str, str]:
    """(where it listens, where a browser on this machine finds the interactive docs)."""
    listening = f"{scheme}://{url_host(host)}:{port}"
    local = "127.0.0.1" if host in _WILDCARD_HOSTS else host
    return listening, f"{scheme}://{url_host(local)}:{port}/docs"


def check_port_available(host: str, port: int) -> None:
    """Bind and release the address the way uvicorn will; raise PortUnavailable if it can't."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        where = f"{url_host(host)}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise PortUnavailable(
                f"port {port} is already in use on {host} (another server listens there): "
                f"stop it, or set PORT to a free port, e.g. PORT={port + 1} make run "
                f"(or stateless serve --port {port + 1})"
            ) from None
        if exc.errno == errno.EACCES:
            raise PortUnavailable(
                f"not allowed to listen on {where}; ports below 1024 need privileges: set PORT "
                "to 1024 or above"
            ) from None
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise PortUnavailable(
                f"cannot listen on {where}: {host!r} is not an address of this machine; "
                "check HOST (127.0.0.1 for this machine only, 0.0.0.0 for every interface)"
            ) from None
        raise PortUnavailable(f"cannot listen on {where} (check HOST and PORT): {exc}") from None


class AnnounceAddress(logging.Filter):
    """On uvicorn's "running on" record: log `serving` with the real URLs instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Uvicorn running on ") or not record.args:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) != 3:
            return True
        scheme, host, port = args
        if not isinstance(port, int):
            return True
        listening, docs = server_urls(str(host), port, str(scheme))
        log.info(
            "serving: open the docs URL in a browser; Ctrl+C stops",
            listening_on=listening,
            docs=docs,
        )
        return False


def announce_address_on(logger_name: str = "uvicorn.error") -> None:
    """Install the replacement once on uvicorn's logger (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, AnnounceAddress) for f in logger.filters):
        logger.addFilter(AnnounceAddress())
