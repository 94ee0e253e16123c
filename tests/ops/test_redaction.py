"""Hostile log calls through the real logging setup: nothing identifying or secret gets out.

structlog calls with secrets in the event text, kwargs, nested dicts, positional args and
exceptions; stdlib calls (as uvicorn and libraries make them); both renderers. The captured
output must contain none of the values, while request ids, routes and times stay readable.
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest
import structlog

from stateless.kit.observe.logging import REDACTED, configure_logging, redact_text
from tests.privacy import assert_absent

EMAIL = "alice.hostile@example.com"
APNS_TOKEN = "a1b2c3d4" * 8
SECRET_KEY = "sk_live_4f9c2a7d1e8b3c6a"
PUBLISHABLE_KEY = "pk_4f9c2a7d1e8b3c6a9f00"
JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXZhbHVlLWhlcmU"
BEARER = "opaque-bearer-credential-42"
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGTAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBHkwdwIBAQQgPEMBODYLINE\n"
    "-----END PRIVATE KEY-----"
)
IPV4 = "203.0.113.77"
IPV6 = "2001:db8::8a2e:370:7334"
DEVICE_ID = "E621E1F8-C36C-495A-93FC-0C247A3E6E5F"
TRANSACTION_ID = "2000000512345678"
DB_PASSWORD = "Sup3rS3cretDbPw"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SENDGRID = "SG.abcdefghijklmnop1234.ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg"
ENCODED_EMAIL = "bob%40example.org"
PHONE = "+1 (555) 010-9999"
PLAIN_PASSWORD = "hunter2hunter2"
RECEIPT = "MIIT0QYJKoZIhvcNAQcCoIITwjCCE74CAQExCzAJBgUrDgMCGgUAMIIDcgYJKoZIhvcNAQcB"

ALL = [
    EMAIL,
    APNS_TOKEN,
    SECRET_KEY,
    PUBLISHABLE_KEY,
    JWT,
    BEARER,
    "PEMBODYLINE",
    IPV4,
    IPV6,
    DEVICE_ID,
    TRANSACTION_ID,
    DB_PASSWORD,
    AWS_SECRET,
    SENDGRID,
    ENCODED_EMAIL,
    "bob@example.org",
    PHONE,
    PLAIN_PASSWORD,
    RECEIPT,
]


class Customer:
    def __repr__(self) -> str:
        return f"Customer(email={EMAIL!r}, ip={IPV4!r})"


def hostile_calls(request_id: str) -> None:
    log = structlog.get_logger("stateless.hostile")
    log.info(f"sending mail to {EMAIL} for device {DEVICE_ID}", request_id=request_id)
    log.info("register", token=APNS_TOKEN, device_id=DEVICE_ID, client_ip=IPV4)
    log.info("auth", header=f"Bearer {BEARER}", presented=SECRET_KEY, other=PUBLISHABLE_KEY)
    log.warning(
        "provider call",
        request={"to": [EMAIL], "nested": {"deep": {"value": f"jwt {JWT}", "ips": [IPV4, IPV6]}}},
        config={"dsn": f"postgresql://app:{DB_PASSWORD}@db.internal:5432/x"},
        url=f"postgresql+asyncpg://app:{DB_PASSWORD}@db.internal/x",
        aws=AWS_SECRET,
        sendgrid=SENDGRID,
        webhook=f"https://hooks.example.net/cb?token={BEARER}&user={ENCODED_EMAIL}",
    )
    log.info("positional %s and %s", EMAIL, TRANSACTION_ID)
    log.info("text fields", note=f"call {PHONE}, password={PLAIN_PASSWORD}", blob=RECEIPT)
    log.info("objects", who=Customer(), raw=EMAIL.encode(), big_number=int(TRANSACTION_ID))
    log.info("key material", apns_key_p8=PEM, text=f"loaded {PEM}")
    log.info("arguments", password="plain-but-named", secret_key="named-secret-value")
    try:
        try:
            raise KeyError(f"lookup for {EMAIL}")
        except KeyError as inner:
            raise ValueError(f"APNs rejected token {APNS_TOKEN} from {IPV6}") from inner
    except ValueError as exc:
        log.exception("push failed", request_id=request_id)
        log.error("push failed again", exc_info=exc)
        log.error("as value", error=exc)
    std = logging.getLogger("some.library")
    std.warning("connection from %s for %s", IPV4, EMAIL)
    std.info("Authorization: Bearer %s", BEARER)
    std.error("payload %r", {"receipt": RECEIPT, "email": EMAIL})
    try:
        raise RuntimeError(f"driver failed: postgresql://u:{DB_PASSWORD}@h/db token={SECRET_KEY}")
    except RuntimeError:
        std.exception("unhandled in library")
    std.warning("with extra", extra={"email": EMAIL, "ip": IPV4})


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_hostile_log_calls_leak_nothing(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", fmt)
    request_id = str(uuid.uuid4())
    hostile_calls(request_id)
    output = capsys.readouterr()
    captured = output.out + output.err
    assert "push failed" in captured and "unhandled in library" in captured
    assert "Traceback" in captured  # exceptions are logged, with their text redacted
    assert_absent(captured, ALL, f"{fmt} logs")
    assert_absent(captured, ["plain-but-named", "named-secret-value"], f"{fmt} logs")
    assert REDACTED in captured
    # what operators need stays readable
    assert request_id in captured
    if fmt == "json":
        records = [json.loads(line) for line in captured.splitlines() if line.startswith("{")]
        assert len(records) >= 15
        assert {r["logger"] for r in records} >= {"stateless.hostile", "some.library"}
        assert all("T" in r["timestamp"] and REDACTED not in r["timestamp"] for r in records)
        by_event = {r["event"]: r for r in records}
        assert by_event["positional [redacted] and [redacted]"]["level"] == "info"


def test_access_log_keeps_route_tenant_and_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    request_id = str(uuid.uuid4())
    structlog.get_logger("stateless.access").info(
        "request",
        method="POST",
        route="/api/v1/drafts/{draft_id}",
        status=201,
        duration_ms=3.2,
        tenant="app-a",
        request_id=request_id,
    )
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    record = json.loads(line)
    assert record["route"] == "/api/v1/drafts/{draft_id}"
    assert record["tenant"] == "app-a" and record["status"] == 201
    assert record["request_id"] == request_id


def test_redact_text_leaves_ordinary_text_alone() -> None:
    text = "cleanup_run deleted 42 rows in 17:58:01 on /api/v1/bots/tasks/{task_id}, v1.2.3"
    assert redact_text(text) == text
    assert redact_text(f"to {EMAIL}") == f"to {REDACTED}"
