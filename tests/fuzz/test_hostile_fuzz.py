"""Hostile-value fuzzing of every JSON body field, query parameter and key header, in process.

For each operation with a JSON body (every one the OpenAPI document lists must have a valid
baseline here) and each position in that body, Hypothesis draws hostile values (bench/hostile.py:
lone surrogates, deep nesting, extreme decimals, ints and dates) and plants one. Every answer must
be a non-5xx problem (502/504 only where a provider is involved and documented), and no request
may hold the event loop for more than 250 ms: a ticker task measures the loop's lag throughout.

Bounded to seconds: a fixed number of drawn values per position, derandomized.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
from bench.hostile import (
    extreme_dates,
    hostile_header_value,
    hostile_value,
    lone_surrogate_text,
    paths_of,
    replace_at,
)
from bench.stallwatch import held_tick
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stateless.config import Settings
from tests.conftest import Client, TenantHandle

# A hostile request may hold the loop at most STALL_FACTOR times what a plain valid request held
# in the same run (the idle calibration), and never less than STALL_LIMIT_SECONDS: on a quiet
# machine the floor is the budget, on a loaded one the budget grows with the calibration.
STALL_LIMIT_SECONDS = 0.25
STALL_FACTOR = 50
CALIBRATION_REQUESTS = 15
# A case over budget is tried again up to this many times before it counts as a stall.
STALL_REPEATS = 2
VALUES_PER_POSITION = 6
HEX_TOKEN = "ab" * 32
# A subscription key pair as a browser sends it: an uncompressed P-256 point, a 16-byte secret.
P256DH = "BFJiYB867S2v7EgEnYTDe9MP4PEi-BRuAzLxHtBWGhENUCuHNfXktZEDtBynckEFVYSup-K5ZuCZd0Zd5dubeOo"
AUTH_SECRET = "AAECAwQFBgcICQoLDA0ODw"


class LoopStallDetector:
    """A 5 ms ticker on the loop (bench/stallwatch.py's measure): how long anything else held
    the loop, blocking calls included, a busy machine's preemption excluded. Its budget comes
    from an idle calibration in the same run: what `GET /api/v1/drafts` holds, times
    STALL_FACTOR, at least STALL_LIMIT_SECONDS."""

    def __init__(self, client: Client | None = None, headers: dict[str, str] | None = None) -> None:
        self.worst = 0.0
        self.budget = STALL_LIMIT_SECONDS
        self.calibration = 0.0
        self._client = client
        self._headers = headers or {}
        self._task: asyncio.Task[None] | None = None

    async def calibrate(self) -> None:
        """The median hold of a plain valid request, measured as every case is."""
        if self._client is None:
            return
        held: list[float] = []
        for _ in range(CALIBRATION_REQUESTS):
            self.take()
            await self._client.get("/api/v1/drafts", headers=self._headers)
            await asyncio.sleep(0.006)
            held.append(self.take())
        self.calibration = sorted(held)[len(held) // 2]
        self.budget = max(STALL_LIMIT_SECONDS, STALL_FACTOR * self.calibration)

    async def _tick(self) -> None:
        while True:
            # Await first, then read `worst`: `max(self.worst, await ...)` would read it before
            # the tick and write a value `take()` had cleared meanwhile back, so one hiccup
            # would be charged to every request after it.
            held = await held_tick()
            self.worst = max(self.worst, held)

    async def __aenter__(self) -> LoopStallDetector:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        await self.calibrate()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst


def drawn(strategy: st.SearchStrategy[Any], count: int, label: str) -> list[Any]:
    """`count` values of a strategy, the same ones on every run (Hypothesis, derandomized)."""
    values: list[Any] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(st.just(label), strategy)
    def collect(_label: str, value: Any) -> None:
        values.append(value)

    collect()
    return values[:count]


def baselines(code: str, draft_id: str, app_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """A valid body per operation (and per bot task type), every optional field present."""
    push = {
        "device_ids": ["device-1"],
        "alert": {"title": "t", "subtitle": "s", "body": "b"},
        "badge": 1,
        "sound": "default",
        "data": {"k": "v", "n": [1, 2]},
        "priority": 10,
        "collapse_id": "c",
        "expiration": 0,
    }
    contexts: dict[str, dict[str, Any]] = {
        "email": {
            "to": ["ann@example.com"],
            "subject": "s",
            "text": "t",
            "html": "<p>h</p>",
            "reply_to": "r@example.com",
        },
        "email_campaign": {
            "subject": "s",
            "text": "t",
            "recipients": [{"to": "ann@example.com", "substitutions": {"name": "Ann"}}],
        },
        "push": push,
        "webhook": {"event_type": "e.x", "data": {"k": "v", "n": [1, 2.5]}},
        "data_export": {"kinds": ["drafts"], "ttl_seconds": 60},
        "report_generation": {"since": "2026-01-01", "until": "2026-01-31", "ttl_seconds": 60},
        "social_post": {"status": "s", "visibility": "public", "spoiler_text": "x"},
    }
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/api/v1/drafts"): {"content": "x", "ttl_seconds": 60},
        ("PUT", f"/api/v1/drafts/{draft_id}"): {"content": "y", "ttl_seconds": 60},
        ("POST", "/api/v1/affiliate/generate"): {"code_id": "u"},
        ("POST", "/api/v1/affiliate/conversion"): {
            "code": code,
            "event": "purchase",
            "value": "1.25",
            "currency": "USD",
            "event_id": "order-1",
            "code_id": "u",
        },
        ("POST", "/api/v1/ios/register-token"): {
            "token": HEX_TOKEN,
            "device_id": "device-1",
            "environment": "sandbox",
            "topic": "com.example.app",
            "ttl_seconds": 60,
        },
        ("POST", "/api/v1/ios/unregister-token"): {"device_id": "device-1"},
        ("POST", "/api/v1/ios/push"): push,
        ("POST", "/api/v1/ios/validate-receipt"): {
            "signed_transaction": "a.b.c",
            "affiliate_code": code,
        },
        ("POST", f"/api/v1/ios/notifications/{app_id}"): {"signedPayload": "a.b.c"},
        ("POST", "/api/v1/web/subscribe"): {
            "subscription": {
                "endpoint": "https://push.example.com/send/abc",
                "keys": {"p256dh": P256DH, "auth": AUTH_SECRET},
                "expirationTime": None,
            },
            "subscriber_id": "user-1",
            "ttl_seconds": 60,
        },
        ("POST", "/api/v1/web/unsubscribe"): {"subscriber_id": "user-1"},
        ("POST", "/api/v1/web/push"): {
            "subscriber_ids": ["user-1"],
            "notification": {"title": "t", "body": "b", "url": "https://example.com/", "tag": "x"},
            "data": {"k": "v"},
            "ttl": 60,
            "urgency": "normal",
            "topic": "t1",
        },
        ("POST", "/api/v1/subjects/erase"): {
            "app_account_token": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "device_ids": ["device-1"],
            "subscriber_ids": ["user-1"],
        },
        ("POST", "/api/v1/entitlements/check"): {
            "app_account_token": "0f8fad5b-d9cb-469f-a165-70867728950e"
        },
        ("POST", "/api/v1/entitlements/transactions"): {
            "signed_transaction": "a.b.c",
            "app_account_token": "0f8fad5b-d9cb-469f-a165-70867728950e",
        },
        ("POST", "/api/v1/entitlements/stripe/checkout"): {
            "app_account_token": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "price_id": "price_1",
            "success_url": "https://app.example.com/ok",
            "cancel_url": "https://app.example.com/no",
            "mode": "subscription",
        },
        ("PUT", "/api/v1/admin/entitlements"): {
            "entitlements": {"pro": {"products": ["com.example.pro", "price_1"]}}
        },
        ("POST", "/api/v1/storage/objects"): {
            "content_type": "text/plain",
            "content_length": 3,
            "ttl_seconds": 60,
            "filename": "a.txt",
        },
    }
    for task_type, context in contexts.items():
        bodies[("POST", f"/api/v1/bots/execute#{task_type}")] = {
            "task_type": task_type,
            "context": context,
            "mode": "sync",
            "ttl_seconds": 60,
        }
    return bodies


def encoded(body: Any) -> bytes:
    """JSON text as a hostile client writes it: \\uXXXX escapes for lone surrogates, NaN."""
    return json.dumps(body, ensure_ascii=True, allow_nan=True).encode()


def allowed(status: int, path: str) -> bool:
    """Any 2xx-4xx; 502/504 only from routes that call a provider (none is reachable here)."""
    if status < 500:
        return True
    return status in (502, 504) and ("/bots/" in path or "/ios/" in path)


async def _held_by(
    client: Client, detector: LoopStallDetector, method: str, url: str, **kwargs: Any
) -> tuple[httpx.Response, float]:
    detector.take()
    response = await client.request(method, url.split("#")[0], **kwargs)
    await asyncio.sleep(0.006)  # let the ticker report what this request did to the loop
    return response, detector.take()


async def send_checked(
    client: Client,
    detector: LoopStallDetector,
    method: str,
    url: str,
    failures: list[str],
    what: str,
    **kwargs: Any,
) -> httpx.Response:
    response, held = await _held_by(client, detector, method, url, **kwargs)
    if not allowed(response.status_code, url):
        failures.append(f"{what}: {response.status_code} {response.text[:200]}")
    elif response.status_code >= 400 and not response.headers.get("content-type", "").startswith(
        "application/problem+json"
    ):
        failures.append(f"{what}: {response.status_code} is not a problem")
    for _ in range(STALL_REPEATS):
        if held <= detector.budget:
            break
        # A hold that a hostile input causes comes back every time; a disk flush or a page-in
        # on a busy machine does not. The case is charged its smallest hold of a few tries.
        held = min(held, (await _held_by(client, detector, method, url, **kwargs))[1])
    if held > detector.budget:
        failures.append(
            f"{what}: held the event loop for {held * 1000:.0f} ms (budget "
            f"{detector.budget * 1000:.0f} ms; a valid request held "
            f"{detector.calibration * 1000:.1f} ms)"
        )
    return response


async def _setup(client: Client, tenant: TenantHandle) -> tuple[str, str]:
    code = (
        await client.post("/api/v1/affiliate/generate", headers=tenant.pk, json={"code_id": "u"})
    ).json()["code"]
    draft = await client.post("/api/v1/drafts", headers=tenant.sk, json={"content": "x"})
    return code, draft.json()["id"]


async def test_every_json_body_has_a_baseline(client: Client, tenant: TenantHandle) -> None:
    """A new operation with a JSON body gets fuzzed too: it must have a baseline above."""
    code, draft_id = await _setup(client, tenant)
    document = (await client.get("/openapi.json")).json()
    covered = {
        (method, path.split("#")[0]) for method, path in baselines(code, draft_id, tenant.app_id)
    }
    for path, item in document["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                concrete = path.replace("{draft_id}", draft_id).replace("{app_id}", tenant.app_id)
                assert (method.upper(), concrete) in covered, (method, path)


async def test_hostile_values_in_every_body_field(
    make_client: Callable[..., Any], tenant: TenantHandle, settings: Settings
) -> None:
    client: Client = await make_client(
        rate_limit_default="1000000/minute", rate_limit_bots_execute="1000000/minute"
    )
    code, draft_id = await _setup(client, tenant)
    values = drawn(hostile_value(), VALUES_PER_POSITION * 4, "body")
    failures: list[str] = []
    cases = 0
    async with LoopStallDetector(client, tenant.sk) as detector:
        for (method, url), body in baselines(code, draft_id, tenant.app_id).items():
            for index, path in enumerate(p for p in paths_of(body) if p):
                for offset in range(VALUES_PER_POSITION):
                    value = values[(index * VALUES_PER_POSITION + offset) % len(values)]
                    hostile = replace_at(body, path, value)
                    cases += 1
                    await send_checked(
                        client,
                        detector,
                        method,
                        url,
                        failures,
                        f"{method} {url} {'.'.join(map(str, path))}={str(value)[:60]!r}",
                        headers={**tenant.sk, "Content-Type": "application/json"},
                        content=encoded(hostile),
                    )
    assert cases > 300
    assert not failures, f"{len(failures)} of {cases} cases failed:\n" + "\n".join(failures[:30])


async def test_hostile_query_parameters_and_path_ids(client: Client, tenant: TenantHandle) -> None:
    failures: list[str] = []
    dates = drawn(extreme_dates(), 12, "dates")
    # a URL cannot carry a lone surrogate; its nearest form is the UTF-8 bytes of one, escaped
    # A URL cannot carry a lone surrogate; its nearest form is the UTF-8 bytes of one,
    # percent-escaped (not valid UTF-8), which the server must refuse or ignore like any junk.
    raw_values = [
        text.encode("utf-8", "surrogatepass") for text in drawn(lone_surrogate_text(), 6, "texts")
    ] + [b"1E+6000000", b"\x00", b"../x", b"x" * 5000]
    async with LoopStallDetector(client, tenant.sk) as detector:
        for value in dates:
            for name in ("since", "until"):
                await send_checked(
                    client, detector, "GET", "/api/v1/affiliate/stats", failures,
                    f"stats {name}={value}", params={name: value}, headers=tenant.sk,
                )  # fmt: skip
        for raw in raw_values:
            escaped = quote_from_bytes(raw, safe="")
            urls = [
                f"/api/v1/affiliate/stats?code={escaped}",
                f"/api/v1/drafts/{escaped}",
                f"/api/v1/storage/objects/{escaped}",
                f"/api/v1/bots/tasks/{escaped}",
                f"/api/v1/entitlements/stats?since={escaped}",
                f"/api/v1/entitlements/stripe/webhook/{escaped}",
            ]
            for url in urls:
                await send_checked(
                    client, detector, "GET", url, failures, f"{url[:80]}", headers=tenant.sk
                )
    assert not failures, f"{len(failures)} failed:\n" + "\n".join(failures[:30])


async def test_hostile_header_values(client: Client, tenant: TenantHandle) -> None:
    failures: list[str] = []
    values = drawn(hostile_header_value(), 24, "headers")
    targets = [
        ("GET", "/api/v1/drafts", None),
        ("POST", "/api/v1/drafts", {"content": "x"}),
        ("POST", "/api/v1/bots/execute", {"task_type": "email", "context": {"subject": "s"}}),
        ("GET", "/health", None),
    ]
    async with LoopStallDetector(client, tenant.sk) as detector:
        for value in values:
            for name in ("x-app-id", "authorization", "idempotency-key", "x-request-id"):
                for method, url, body in targets:
                    headers: dict[str, Any] = {**tenant.sk, name: value}
                    await send_checked(
                        client, detector, method, url, failures, f"{url} {name}={value[:40]!r}",
                        headers=headers, content=None if body is None else encoded(body),
                    )  # fmt: skip
    assert not failures, f"{len(failures)} failed:\n" + "\n".join(failures[:30])


async def test_the_stall_budget_follows_the_calibration(
    client: Client, tenant: TenantHandle
) -> None:
    """The calibration measures a valid request's hold, and a request that holds the loop far
    past it is still caught: the budget grows with a slow machine, not without bound."""
    import time

    async with LoopStallDetector(client, tenant.sk) as detector:
        assert 0 <= detector.calibration < detector.budget
        assert detector.budget == max(STALL_LIMIT_SECONDS, STALL_FACTOR * detector.calibration)
        detector.take()
        time.sleep(detector.budget * 1.5)  # a blocking call on the loop, as a bad route would make
        await asyncio.sleep(0.006)
        assert detector.take() > detector.budget
