"""Entitlement sources and the one answer built from them.

Every store event (an App Store notification, the device's own transaction, a Stripe webhook, a
reconciliation answer) becomes `SourceFacts` and goes through `apply`: older events never
overwrite newer ones, the device's transaction never erases what the store told us, and a
change of access is announced (tenant webhook, daily figures) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.affiliate.currencies import minor_units
from stateless.bots.outbox import enqueue_task
from stateless.entitlements.catalog import names_for
from stateless.entitlements.models import EntitlementSource
from stateless.entitlements.repository import (
    FIGURES,
    CheckRow,
    CursorRepository,
    DailyRepository,
    EventMarkRepository,
    SourceRepository,
)
from stateless.entitlements.states import (
    FIGURE_OF,
    ChangeKind,
    SourceFacts,
    SourceView,
    change_of,
    grants_access,
    row_expires_at,
)
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.context import TenantContext
from stateless.kit.data.db import utcnow
from stateless.kit.web.errors import Unprocessable
from stateless.kit.wire.timestamps import format_timestamp
from stateless.lifecycle.policy import TtlPolicy

log = structlog.get_logger("stateless.entitlements")

SUBJECT_PURPOSE = "entitlement-subject"  # entitlements/lifecycle.py erases by the same hash
SUBJECT_SEAL_PURPOSE = "entitlement-subject-sealed"
SOURCE_PURPOSE = "entitlement-source"
REFERENCE_PURPOSE = "entitlement-reference"
CUSTOMER_PURPOSE = "entitlement-customer"
PAYMENT_PURPOSE = "entitlement-payment"
EVENT_PURPOSE = "entitlement-event"
# A check re-extends a source only when that gains more than this (at most ~once a day).
EXTEND_STEP = timedelta(days=1)
MAX_STATS_DAYS = 366


class InvalidDateWindow(Unprocessable):
    code = "invalid_date_range"


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    status: str  # applied | superseded | unlinked
    change: ChangeKind | None = None


def _view(row: EntitlementSource | CheckRow) -> SourceView:
    return SourceView(row.state, row.period_ends_at, row.grace_ends_at, row.will_renew)


def _rank(row: CheckRow | EntitlementSource, now: datetime) -> tuple[bool, datetime, datetime]:
    """Which of a subject's sources answers for an entitlement: access first, then the latest
    end (a purchase that never lapses is the latest), then the newest event."""
    far = datetime.max.replace(tzinfo=UTC)
    end = row.period_ends_at or far
    if row.grace_ends_at is not None and row.grace_ends_at > end:
        end = row.grace_ends_at
    return grants_access(_view(row), now), end, row.event_at


def describe(row: CheckRow | EntitlementSource | None, now: datetime) -> dict[str, Any]:
    """One entitlement's answer (the shape RevenueCat users know, SPEC 13)."""
    if row is None:
        return {
            "is_active": False,
            "expires_at": None,
            "grace_period_expires_at": None,
            "product_id": None,
            "store": None,
            "will_renew": False,
            "period_type": None,
            "purchased_at": None,
            "environment": None,
        }
    active = grants_access(_view(row), now)
    grace = row.grace_ends_at if row.state in ("grace", "billing_retry") else None
    return {
        "is_active": active,
        "expires_at": row.period_ends_at,
        "grace_period_expires_at": grace,
        "product_id": row.product_id,
        "store": row.store,
        "will_renew": bool(row.will_renew) and active and row.state not in ("cancelled",),
        "period_type": row.period_type,
        "purchased_at": row.purchased_at,
        "environment": row.environment,
    }


def minor_amount(amount: Decimal, currency: str) -> tuple[int, str] | None:
    """An amount in the currency's minor units (None for an unknown currency)."""
    code = currency.strip().upper()
    places = minor_units(code)
    if places is None:
        return None
    return int((amount * (Decimal(10) ** places)).to_integral_value()), code


class EntitlementService:
    def __init__(
        self,
        session: AsyncSession,
        tenant: TenantContext,
        *,
        kit: PrivacyKit,
        policy: TtlPolicy,
        clock: Any = utcnow,
    ) -> None:
        self.session = session
        self.tenant = tenant
        self.kit = kit
        self.policy = policy
        self.clock = clock
        self.sources = SourceRepository(session, tenant, clock)
        self.marks = EventMarkRepository(session, tenant, clock)
        self.daily = DailyRepository(session, tenant, clock)
        self.cursors = CursorRepository(session, tenant, clock)

    # -- hashes and seals -------------------------------------------------------------------

    def subject_hash(self, token: str) -> str:
        return self.kit.keyed_hash(SUBJECT_PURPOSE, self.tenant.app_id, token)

    def source_hash(self, store: str, reference: str) -> str:
        return self.kit.keyed_hash(SOURCE_PURPOSE, self.tenant.app_id, f"{store}:{reference}")

    def payment_hash(self, payment: str) -> str:
        return self.kit.keyed_hash(PAYMENT_PURPOSE, self.tenant.app_id, payment)

    def open_reference(self, row: EntitlementSource) -> str | None:
        if row.reference_sealed is None:
            return None
        return self.kit.decrypt_text(REFERENCE_PURPOSE, self.tenant.app_id, row.reference_sealed)

    def _cap(self) -> timedelta:
        return timedelta(seconds=self.policy.rule("entitlement_sources").max_seconds)

    # -- the answer -------------------------------------------------------------------------

    async def check(self, token: str) -> dict[str, Any]:
        """Every mapped entitlement of the subject, as of now; a check is a verified use, so a
        source the cap would end soon lives on (one small write, about once a day)."""
        now = self.clock()
        rows = await self.sources.for_subject(self.subject_hash(token))
        for row in rows:
            wanted = row_expires_at(
                row.state, row.period_ends_at, row.grace_ends_at, row.revoked_at, now, self._cap()
            )
            if wanted - row.expires_at > EXTEND_STEP:
                await self.sources.extend(row.source_hash, wanted, now)
        return self.answer(rows, now)

    def answer(self, rows: Sequence[CheckRow | EntitlementSource], now: datetime) -> dict[str, Any]:
        config = self.tenant.config
        entitlements: dict[str, Any] = {}
        for name, products in config.entitlements.items():
            mapped = set(products)
            candidates = [
                r for r in rows if r.product_id in mapped or (r.parent_product_id in mapped)
            ]
            best = max(candidates, key=lambda r: _rank(r, now), default=None)
            entitlements[name] = describe(best, now)
        return {"entitlements": entitlements, "checked_at": now}

    async def answer_for_subject(self, token: str) -> dict[str, Any]:
        now = self.clock()
        rows = await self.sources.for_subject(self.subject_hash(token))
        return self.answer(rows, now)

    # -- events -----------------------------------------------------------------------------

    async def first_time(self, event_id: str) -> bool:
        """Record a store event id (kept hashed 8 days); False for a retry or duplicate."""
        now = self.clock()
        key = self.kit.keyed_hash(EVENT_PURPOSE, self.tenant.app_id, event_id)
        expires_at = self.policy.expires_at("entitlement_event_marks", None, now)
        return await self.marks.mark(key, now, expires_at)

    async def apply(self, facts: SourceFacts, *, _retried: bool = False) -> ApplyOutcome:
        """Fold one verified store event into its source (see the module docstring)."""
        now = self.clock()
        key = self.source_hash(facts.store, facts.reference)
        row = await self.sources.by_hash(key)
        if row is None:
            await self.sources.drop_expired(key)
        if facts.subject is not None:
            subject_hash = self.subject_hash(facts.subject)
        elif row is not None:
            subject_hash = row.subject_hash
        else:
            return ApplyOutcome("unlinked")  # nobody to grant it to until the device tells us
        if row is not None and row.event_at > facts.event_at:
            log.info("entitlement_event_superseded", store=facts.store, store_event=facts.event)
            return ApplyOutcome("superseded")
        old = _view(row) if row is not None else None
        if facts.from_device and row is not None:
            facts = self._device_merge(facts, row)
        new = facts.view()
        values: dict[str, Any] = {
            "store": facts.store,
            "subject_hash": subject_hash,
            "product_id": facts.product_id[:256],
            "parent_product_id": (facts.parent_product_id or None),
            "state": facts.state,
            "environment": facts.environment,
            "period_type": facts.period_type,
            "will_renew": facts.will_renew,
            "purchased_at": facts.purchased_at,
            "period_ends_at": facts.period_ends_at,
            "grace_ends_at": facts.grace_ends_at,
            "revoked_at": facts.revoked_at,
            "event_at": facts.event_at,
            "last_event": facts.event[:64],
            "verified_at": now,
        }
        if facts.subject is not None:
            values["subject_sealed"] = self.kit.encrypt_text(
                SUBJECT_SEAL_PURPOSE, self.tenant.app_id, facts.subject
            )
        if facts.store == "app_store" or facts.reference.startswith("sub_"):
            values["reference_sealed"] = self.kit.encrypt_text(
                REFERENCE_PURPOSE, self.tenant.app_id, facts.reference
            )
        if facts.customer:
            values["customer_hash"] = self.kit.keyed_hash(
                CUSTOMER_PURPOSE, self.tenant.app_id, facts.customer
            )
        if facts.payment:
            values["payment_hash"] = self.payment_hash(facts.payment)
        expires_at = row_expires_at(
            facts.state,
            facts.period_ends_at,
            facts.grace_ends_at,
            facts.revoked_at,
            now,
            self._cap(),
        )
        if row is None:
            inserted = await self.sources.insert_new(
                {**values, "source_hash": key, "created_at": now, "expires_at": expires_at}
            )
            if not inserted and not _retried:
                return await self.apply(facts, _retried=True)  # it exists now: apply to it
            row = await self.sources.by_hash(key)
            if row is None:
                return ApplyOutcome("superseded")
        else:
            for name, value in values.items():
                setattr(row, name, value)
            row.created_at = now  # the row's life restarts: the database's TTL guard holds
            row.expires_at = expires_at
        await self.session.flush()
        change = change_of(old, new, now)
        await self._announce(row, facts, change, is_new=old is None, now=now)
        return ApplyOutcome("applied", change)

    @staticmethod
    def _device_merge(facts: SourceFacts, row: EntitlementSource) -> SourceFacts:
        """The device's transaction says what was bought and until when, not whether it will
        renew or is in billing trouble: for the same period, what the store told us stands."""
        same_period = (
            facts.period_ends_at is None
            or row.period_ends_at is None
            or facts.period_ends_at <= row.period_ends_at
        )
        if facts.state != "revoked" and same_period:
            if row.state in ("cancelled", "grace", "billing_retry"):
                facts.state = row.state  # type: ignore[assignment]
            facts.grace_ends_at = row.grace_ends_at
            facts.will_renew = row.will_renew
            if row.period_ends_at is not None and facts.period_ends_at is not None:
                facts.period_ends_at = max(facts.period_ends_at, row.period_ends_at)
        return facts

    async def revoke_payment(self, payment: str, event_at: datetime, event: str) -> ApplyOutcome:
        """A full refund of the payment that last paid a source revokes it (Stripe)."""
        row = await self.sources.by_payment(self.payment_hash(payment))
        if row is None:
            return ApplyOutcome("unlinked")
        reference = self.open_reference(row)
        facts = SourceFacts(
            store="stripe",
            reference=reference or "",
            product_id=row.product_id,
            parent_product_id=row.parent_product_id,
            state="revoked",
            environment=row.environment,
            event_at=max(event_at, row.event_at),
            event=event,
            period_type=row.period_type,
            will_renew=False,
            purchased_at=row.purchased_at,
            period_ends_at=row.period_ends_at,
            revoked_at=event_at,
        )
        if reference is None:  # a one-time payment: its source is keyed by the payment itself
            facts.reference = payment
        return await self.apply(facts)

    async def _announce(
        self,
        row: EntitlementSource,
        facts: SourceFacts,
        change: ChangeKind | None,
        *,
        is_new: bool,
        now: datetime,
    ) -> None:
        names = names_for(self.tenant.config, row.product_id, row.parent_product_id)
        if not names:
            return
        day = now.astimezone(UTC).date()
        figures: dict[str, int] = {}
        if change == "granted" and is_new:
            figures["new"] = 1
        elif change is not None and change in FIGURE_OF:
            figures[FIGURE_OF[change]] = 1
        if facts.renewal_paid and change != "renewed" and not is_new:
            figures["renewals"] = figures.get("renewals", 0) + 1
        for name in names:
            if figures:
                await self._add_figures(day, name, row, "", figures, now)
            if facts.revenue is not None:
                amount, currency = facts.revenue
                await self._add_figures(day, name, row, currency, {"revenue_minor": amount}, now)
        if change is None or not self.tenant.config.webhook_url:
            return
        token = self.kit.decrypt_text(SUBJECT_SEAL_PURPOSE, self.tenant.app_id, row.subject_sealed)
        item = describe(row, now)
        for name in names:
            data = {
                "app_account_token": token,
                "entitlement": name,
                # the store's time of the change: receivers order deliveries by it
                "changed_at": format_timestamp(row.event_at),
                **{
                    key: format_timestamp(value) if isinstance(value, datetime) else value
                    for key, value in item.items()
                },
            }
            await enqueue_task(
                self.session,
                self.tenant,
                kit=self.kit,
                policy=self.policy,
                task_type="webhook",
                context={"event_type": f"entitlement.{change}", "data": data},
            )

    async def _add_figures(
        self,
        day: date,
        name: str,
        row: EntitlementSource,
        currency: str,
        figures: dict[str, int],
        now: datetime,
    ) -> None:
        await self.daily.add_figures(
            day=day,
            entitlement=name,
            store=row.store,
            product_id=row.product_id,
            currency=currency,
            figures=figures,
            now=now,
            expires_at=self.policy.expires_at("entitlement_daily", None, now),
        )

    # -- figures ----------------------------------------------------------------------------

    async def stats(self, since: date | None, until: date | None) -> dict[str, Any]:
        now = self.clock()
        until = until or now.astimezone(UTC).date()
        since = since or until - timedelta(days=89)
        if until < since or (until - since).days + 1 > MAX_STATS_DAYS:
            raise InvalidDateWindow(
                f"since..until must be in order and span at most {MAX_STATS_DAYS} days"
            )
        days: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in await self.daily.window(since, until):
            key = (row[0], row[1], row[2], row[3])
            entry = days.setdefault(
                key,
                {
                    "day": row[0],
                    "entitlement": row[1],
                    "store": row[2],
                    "product_id": row[3],
                    **dict.fromkeys(FIGURES, 0),
                    "revenue": {},
                },
            )
            currency = row[4]
            for index, name in enumerate(FIGURES):
                entry[name] += int(row[5 + index] or 0)
            revenue = int(row[5 + len(FIGURES)] or 0)
            places = minor_units(currency) if currency else None
            if places is not None and revenue:
                entry["revenue"][currency] = str(Decimal(revenue).scaleb(-places))
        active: dict[str, set[str]] = {name: set() for name in self.tenant.config.entitlements}
        for subject, product, parent in await self.sources.active_subjects(now):
            for name in names_for(self.tenant.config, product, parent):
                active[name].add(subject)
        return {
            "tenant": self.tenant.app_id,
            "since": since,
            "until": until,
            "days": list(days.values()),
            "active": {name: len(subjects) for name, subjects in active.items()},
        }
