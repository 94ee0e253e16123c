"""Structured logs through one redaction processor: no email, token, key or IP leaves in a log line."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # API keys and webhook secrets of our own format, bearer credentials, JWTs.
    (re.compile(r"\b(?:pk|sk)_[A-Za-z0-9_-]{6,}"), REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]{6,}"), REDACTED),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer " + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"-----BEGIN [A-Z ]+-----.*?(?:-----END [A-Z ]+-----|$)", re.S), REDACTED),
    # Email addresses.
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), REDACTED),
    # Device tokens and other long hex identifiers.
    (re.compile(r"\b[0-9A-Fa-f]{32,}\b"), REDACTED),
    # IPv4 and IPv6 addresses.
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), REDACTED),
    (re.compile(r"(?i)\b(?:[0-9a-f]{1,4}:){2,7}[0-9a-f]{0,4}\b|::1\b|::ffff:[0-9.]+"), REDACTED),
)

_SENSITIVE_KEYS = re.compile(
    r"(?i)(password|secret|token|authorization|api_key|apikey|cookie|receipt|"
    r"signed_transaction|signedpayload|email|device_id|^ip$|client_ip|remote_addr|p8)"
)
_SAFE_KEYS = frozenset(
    {
        "event",
        "level",
        "logger",
        "timestamp",
        "request_id",
        "route",
        "method",
        "status",
        "duration_ms",
        "tenant",
        "task_type",
        "kind",
        "exc_info",
        "error_type",
        "count",
    }
)


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if _SENSITIVE_KEYS.search(str(k)) else _redact_value(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set)):
        return [_redact_value(v) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact_text(repr(value))


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The single redaction point every log record passes through, whatever the caller wrote."""
    for key in list(event_dict):
        if key in _SAFE_KEYS and key not in {"event", "exc_info"}:
            value = event_dict[key]
            if isinstance(value, str):
                event_dict[key] = redact_text(value)
            continue
        if key == "exc_info":
            continue
        if _SENSITIVE_KEYS.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


def _redact_rendered(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    return event_dict


class _RedactingFormatter(logging.Formatter):
    """Last net for stdlib records (uvicorn, libraries): redact the final rendered line."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def configure_logging(level: str, fmt: str) -> None:
    """Process-wide logging setup; idempotent so tests may build many apps."""
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_processor,
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_RedactingFormatter("%(message)s"))
    handler.set_name("stateless")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "stateless":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).disabled = True
