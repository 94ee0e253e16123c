"""Structured logs through one redaction processor: no email, token, key or IP leaves in a log line.

structlog events and stdlib records (uvicorn, SQLAlchemy, libraries) share one pipeline
(structlog's ProcessorFormatter), so both are rendered the same way (JSON in production) and
both pass `redact_processor` after exceptions are formatted, whatever the caller wrote.
The access log (`AccessLog`, one line per request) skips that pipeline in JSON format: it
writes its orjson line itself, after the same `redact_processor`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

REDACTED = "[redacted]"

_HEX = r"[0-9A-Fa-f]"
_H16 = r"[0-9A-Fa-f]{1,4}"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM blocks (APNs .p8 keys, certificates), whole or cut short.
    (re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|$)", re.S), REDACTED),
    # Credentials inside URLs (scheme://user:password@host) and sensitive query parameters.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]*:[^\s/@]*@"), r"\1" + REDACTED + "@"),
    (
        re.compile(
            r"(?i)([?&;](?:key|token|access_token|refresh_token|api_key|apikey|sig|signature|"
            r"password|secret|code|x-amz-signature|x-amz-credential|x-amz-security-token)=)"
            r"[^&#\s\"']+"
        ),
        r"\1" + REDACTED,
    ),
    # API keys of our own format, webhook secrets, bearer/basic credentials, JWTs / JWS.
    (re.compile(r"\b(?:pk|sk)_[A-Za-z0-9_-]{6,}"), REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]{6,}"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.?[A-Za-z0-9_-]*"), REDACTED),
    # Well-known provider key shapes: SendGrid, AWS access key ids.
    (re.compile(r"\bSG\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    # `password=...`, `token: ...`, `"secret": "..."` written into free text.
    (
        re.compile(
            r"(?i)\b((?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|"
            r"private[_-]?key|shared[_-]?secret|authorization|credential)s?[\"']?\s*[:=]\s*)"
            r"[\"']?[^\s\"',;}&]+"
        ),
        r"\1" + REDACTED,
    ),
    # Email addresses, also URL-encoded.
    # local part bounded to RFC 5321's 64 characters: unbounded, a long run of letters without
    # an @ made this quadratic (a 5000-character path: 0.3 s holding the event loop)
    (
        re.compile(r"(?i)[a-z0-9._%+-]{1,64}(?:@|%40)[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}"),
        REDACTED,
    ),
    # UUIDs (identifierForVendor device ids look like this).
    (re.compile(rf"\b{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}\b"), REDACTED),
    # Device tokens and other long hex identifiers.
    (re.compile(rf"\b{_HEX}{{32,}}\b"), REDACTED),
    # Long mixed-case base64 / base64url runs: receipts, secrets, provider tokens.
    (
        re.compile(
            r"(?<![A-Za-z0-9+/_-])(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[a-z])"
            r"(?=[A-Za-z0-9+/_-]*[A-Z])[A-Za-z0-9+/_-]{32,}={0,2}"
        ),
        REDACTED,
    ),
    # IPv4, IPv6 (full or compressed; times like 17:58:01 are neither), phone numbers and long
    # digit runs (transaction ids).
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), REDACTED),
    (
        re.compile(
            rf"(?i)(?<![0-9a-f:])(?:(?:{_H16}:){{7}}{_H16}"
            rf"|(?:{_H16}:){{1,7}}:(?:{_H16}(?::{_H16}){{0,6}})?"
            rf"|::(?:{_H16}(?::{_H16}){{0,6}})?)(?:%\w+)?(?![0-9a-f:])"
        ),
        REDACTED,
    ),
    (re.compile(r"(?<![\w.])\+\d[\d ().-]{7,}\d\b"), REDACTED),
    (re.compile(r"\b\d{12,}\b"), REDACTED),
)
_UUID_ONLY = re.compile(rf"^{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}$")

_SENSITIVE_KEYS = re.compile(
    r"(?i)(password|passwd|secret|token|authorization|api_?key|(^|_)key$|private|cookie|"
    r"session|receipt|transaction|signed_?transaction|signed_?payload|jws|signature|credential|"
    r"email|e_mail|recipient|(^|_)(to|cc|bcc|reply_to)$|phone|address|device_id|idfv|"
    r"^ip$|client_ip|remote_addr|forwarded|p8|dsn)"
)
# Keys whose values we generate or need verbatim (still passed through the text patterns).
_SAFE_KEYS = frozenset(
    {
        "level",
        "logger",
        "timestamp",
        "route",
        "method",
        "status",
        "duration_ms",
        "tenant",
        "task_type",
        "kind",
        "error_type",
        "count",
    }
)
# Ids we generate (uuid4): kept readable so a log line can be matched to a request or task.
_ID_KEYS = frozenset({"request_id", "task_id", "object_id", "draft_id", "trace_id", "span_id"})


def _scoped(pattern: re.Pattern[str]) -> str:
    """The pattern as a group with its own flags, so all can share one alternation."""
    source = pattern.pattern
    flags = ""
    if source.startswith("(?i)"):
        source, flags = source[4:], "i"
    if pattern.flags & re.S:
        flags += "s"
    return f"(?{flags}:{source})" if flags else f"(?:{source})"


# One search tells whether any pattern can match: most log strings are clean, and one search
# is far cheaper than every substitution in turn (this runs on every access-log line).
_ANY_PATTERN = re.compile("|".join(_scoped(p) for p, _ in _PATTERNS))

# Values our own code produces (HTTP method, status, timings, route templates, log metadata):
# passed through as they are.
_VERBATIM_KEYS = frozenset(
    {"level", "logger", "timestamp", "method", "status", "duration_ms", "route", "count"}
)


# The server's own address as `stateless serve` announces it (kit/runtime/serving.py): configuration,
# not anybody's data. Only a bare scheme://host:port, optionally with /docs, passes as is.
_SERVER_URL_KEYS = frozenset({"listening_on", "docs"})
_SERVER_URL = re.compile(r"^https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}(?:/docs)?$")


def _is_verbatim(key: str, value: Any) -> bool:
    if key in _SERVER_URL_KEYS:
        return isinstance(value, str) and _SERVER_URL.match(value) is not None
    if key not in _VERBATIM_KEYS:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    if key == "count" or not isinstance(value, str) or len(value) >= 200:
        return False
    return key != "route" or value.startswith("/") or value == "unmatched"


def redact_text(text: str) -> str:
    """Mask every pattern that may identify someone or grant access."""
    if not _ANY_PATTERN.search(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return redact_text(str(value)) if value >= 10**11 else value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    if depth > 8:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if _SENSITIVE_KEYS.search(str(k)) else _redact_value(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact_value(v, depth + 1) for v in value]
    # Exceptions, models, anything else: its text form, redacted.
    return redact_text(repr(value) if not isinstance(value, BaseException) else _exc_text(value))


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The single redaction point every log record passes through, whatever the caller wrote."""
    for key in list(event_dict):
        value = event_dict[key]
        if key == "exc_info" or key == "_record" or key == "_from_structlog":
            continue  # formatted (then redacted) by the processors that follow
        if key in _ID_KEYS and isinstance(value, str) and _UUID_ONLY.match(value):
            continue
        if _is_verbatim(key, value):
            continue
        if key in _SAFE_KEYS or key == "event":
            event_dict[key] = _redact_value(value)
        elif _SENSITIVE_KEYS.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(value)
    return event_dict


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at emit time (not at setup), so a replaced stdout
    (a supervisor's pipe, a test's capture) receives the lines."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _orjson_dumps(value: Any, **_kwargs: Any) -> str:
    """orjson renders a log line several times faster than the stdlib encoder."""
    return orjson.dumps(value, default=repr).decode()


def configure_logging(level: str, fmt: str) -> None:
    """Process-wide logging setup; idempotent so tests may build many apps."""
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.PositionalArgumentsFormatter(),
            timestamper,
            redact_processor,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # stdlib records (uvicorn, libraries): the formatted message becomes `event`
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
    )
    handler = _StdoutHandler()
    handler.setFormatter(formatter)
    handler.set_name("stateless")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "stateless":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).disabled = True
    # Their INFO lines print request URLs, and store API URLs carry identifiers (Stripe
    # subscription ids, Apple transaction ids): warnings and errors only.
    for chatty in ("httpx", "httpcore", "stripe"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class AccessLog:
    """One line per request. In JSON format it is rendered here, directly (orjson, after
    `redact_processor`), not through a stdlib LogRecord and the processor chain: that machinery
    cost several percent of a request. Other formats go through structlog as usual."""

    def __init__(self, level: str, fmt: str) -> None:
        self.enabled = logging.getLevelName(level.upper()) <= logging.INFO
        self.direct = fmt == "json"
        self._logger = structlog.get_logger("stateless.access")
        self._tenants: dict[str, str] = {}

    def _tenant_text(self, tenant: str) -> str:
        """App ids are few and fixed: each is redacted once, then remembered."""
        text = self._tenants.get(tenant)
        if text is None:
            if len(self._tenants) > 10_000:
                self._tenants.clear()
            text = self._tenants[tenant] = redact_text(tenant)
        return text

    def request(
        self,
        *,
        method: str,
        route: str,
        status: int,
        duration_ms: float,
        tenant: str | None,
        request_id: str,
    ) -> None:
        if not self.enabled:
            return
        if not self.direct:
            self._logger.info(
                "request",
                method=method,
                route=route,
                status=status,
                duration_ms=duration_ms,
                tenant=tenant,
                request_id=request_id,
            )
            return
        # Redaction where it can find something: the method is an HTTP token (no '@', no
        # spaces), the route a template, the numbers and generated request ids ours; tenant
        # ids and a request id a client chose pass through redact_text.
        line: dict[str, Any] = {
            "method": method if method in _METHODS else redact_text(method),
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "tenant": self._tenant_text(tenant) if tenant is not None else None,
            "request_id": request_id if _UUID_ONLY.match(request_id) else redact_text(request_id),
            "event": "request",
            "level": "info",
            "logger": "stateless.access",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
