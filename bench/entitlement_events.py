"""CPU per store webhook event: `python -m bench.entitlement_events`.

Runs the real app in process (SQLite in a temporary folder, no network), signs Stripe
`customer.subscription.updated` events the way Stripe does (HMAC-SHA256 over `t.body`) and posts
them to `/api/v1/entitlements/stripe/webhook/{app_id}`; each event changes the source (cancel at
period end on and off), so each one is verified, parsed, applied and figured. Prints the
process CPU per event next to the 100 ms budget (issue: a webhook must not hold the event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from stateless.config import Settings
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.db import build_engine, build_sessionmaker, session_scope
from stateless.main import create_app
from stateless.migrations.runner import upgrade
from stateless.tenants.service import ConfigureRequest, TenantService

SECRET = "whsec_bench_entitlement_events_0123456789"
BUDGET_MS = 100.0


def subscription_event(n: int, token: str, created: int) -> dict[str, object]:
    now = int(time.time())
    return {
        "id": f"evt_bench_{n}",
        "object": "event",
        "type": "customer.subscription.updated",
        "created": created,
        "livemode": False,
        "data": {
            "object": {
                "id": "sub_bench_1",
                "object": "subscription",
                "status": "active",
                "cancel_at_period_end": n % 2 == 1,
                "customer": "cus_bench_1",
                "metadata": {"app_account_token": token},
                "start_date": now - 86400,
                "items": {
                    "object": "list",
                    "data": [
                        {
                            "price": {"id": "price_bench", "product": "prod_bench"},
                            "current_period_end": now + 30 * 86400,
                        }
                    ],
                },
            }
        },
    }


def signed(event: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    ts = int(time.time())
    mac = hmac.new(SECRET.encode(), str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={ts},v1={mac}", "Content-Type": "application/json"}


async def main(events: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}",
            storage_local_path=Path(folder) / "storage",
            run_background_jobs=False,
            log_level="WARNING",
        )
        await asyncio.to_thread(upgrade, settings)
        engine = build_engine(settings)
        async with session_scope(build_sessionmaker(engine)) as session:
            tenants = TenantService(session, PrivacyKit(settings.secret_key))
            await tenants.create("bench")
            await tenants.configure(
                "bench",
                ConfigureRequest(
                    stripe_secret_key="sk_test_bench",
                    stripe_webhook_secret=SECRET,
                    rate_limits=["default=100000000/minute"],
                ),
            )
            await tenants.change_entitlements("bench", lambda _: {"pro": ["price_bench"]})
        await engine.dispose()
        app = create_app(settings)
        token = str(uuid.uuid4())
        base = int(time.time()) - events
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://bench"
            ) as client,
        ):
            bodies = [signed(subscription_event(n, token, base + n)) for n in range(events + 20)]
            for body, headers in bodies[:20]:  # warm up
                await client.post(
                    "/api/v1/entitlements/stripe/webhook/bench", content=body, headers=headers
                )
            started_cpu, started = time.process_time(), time.perf_counter()
            statuses: dict[int, int] = {}
            for body, headers in bodies[20:]:
                answer = await client.post(
                    "/api/v1/entitlements/stripe/webhook/bench", content=body, headers=headers
                )
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            cpu_ms = (time.process_time() - started_cpu) * 1000 / events
            wall_ms = (time.perf_counter() - started) * 1000 / events
    print(f"stripe webhook events: {events}, answers {statuses}")
    print(f"CPU per event: {cpu_ms:.2f} ms (wall {wall_ms:.2f} ms); budget {BUDGET_MS:.0f} ms")
    print(
        f"ratio to budget: {cpu_ms / BUDGET_MS:.3f} ({'met' if cpu_ms <= BUDGET_MS else 'MISSED'})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=400)
    asyncio.run(main(parser.parse_args().events))
