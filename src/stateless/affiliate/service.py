"""Affiliate rules: codes checked by MAC alone, conversions validated (ISO 4217, minor units,
no floats), de-duplicated by keyed event-id hash, and added to daily aggregates in one upsert.

Other parts record conversions through `AffiliateService.record_conversion` (StoreKit does for
purchases); it raises the same problems the endpoint answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from stateless.affiliate import codes
from stateless.affiliate.codes import AffiliateKeyring
from stateless.affiliate.currencies import decimal_places, from_minor, minor_units, to_minor
from stateless.affiliate.repository import (
    AggregateRepository,
    AggregateRow,
    EventMarkRepository,
    SumOverflowError,
)
from stateless.affiliate.schemas import (
    DEFAULT_EVENT,
    EVENT_PATTERN,
    MAX_CODE_ID_LENGTH,
    MAX_EVENT_ID_LENGTH,
    MAX_EVENT_LENGTH,
    StatsOut,
    StatsRow,
    StatsTotal,
)
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.db import utcnow
from stateless.kit.observe.metrics import Metrics
from stateless.kit.web.errors import BadRequest, Unprocessable
from stateless.kit.wire.bounds import check_decimal
from stateless.kit.wire.timestamps import whole_seconds
from stateless.tenants.schemas import TenantContext

if TYPE_CHECKING:
    from stateless.lifecycle.policy import TtlPolicy

EVENT_ID_PURPOSE = "affiliate-event-id"
MAX_VALUE = Decimal(10) ** 12  # per conversion, in major units
MAX_STATS_DAYS = 366
MAX_STATS_ROWS = 10_000
_EVENT = re.compile(EVENT_PATTERN)


class InvalidCode(BadRequest):
    """Malformed, forged, another tenant's, or not the code of the given code_id: one answer."""

    code = "invalid_code"


class InvalidField(Unprocessable):
    """A field that fits the schema but not the rules: `errors` names it as a schema failure
    would, with the problem's code as its type."""

    def __init__(self, field: str, message: str, where: Literal["body", "query"] = "body") -> None:
        super().__init__(
            message,
            extra={"errors": [{"loc": [where, field], "msg": message, "type": self.code}]},
        )


class InvalidCodeId(InvalidField):
    code = "invalid_code_id"


class InvalidEvent(InvalidField):
    code = "invalid_event"


class CurrencyRequired(InvalidField):
    code = "currency_required"


class InvalidCurrency(InvalidField):
    code = "invalid_currency"


class ValueRequired(InvalidField):
    code = "value_required"


class InvalidValue(InvalidField):
    code = "invalid_value"


class NegativeValue(InvalidField):
    code = "negative_value"


class ValueTooLarge(InvalidField):
    code = "value_too_large"


class TooManyDecimals(InvalidField):
    code = "too_many_decimals"


class InvalidEventId(InvalidField):
    code = "invalid_event_id"


class InvalidDateRange(InvalidField):
    code = "invalid_date_range"


class DateRangeTooLong(InvalidField):
    code = "date_range_too_long"


class AffiliateService:
    def __init__(
        self,
        session: AsyncSession,
        tenant: TenantContext,
        *,
        kit: PrivacyKit,
        keys: AffiliateKeyring,
        policy: TtlPolicy,
        metrics: Metrics,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.tenant = tenant
        self.kit = kit
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self.keys = keys.keys_for(tenant.app_id)
        self.aggregates = AggregateRepository(session, tenant, clock)
        self.marks = EventMarkRepository(session, tenant, clock)

    def _count(self, outcome: str) -> None:
        self.metrics.affiliate_conversions.labels(outcome=outcome).inc()

    # -- codes ---------------------------------------------------------------------------------

    def generate_code(self, code_id: str) -> str:
        """The grouped code for `code_id`; deterministic, nothing stored."""
        if not 1 <= len(code_id) <= MAX_CODE_ID_LENGTH:
            raise InvalidCodeId("code_id", "code_id must be 1-128 characters")
        return codes.group(codes.make_code(self.keys, code_id))

    def verify_code(self, code: str) -> str:
        """The canonical code if genuine for this tenant; 400 invalid_code otherwise."""
        canonical = codes.verify(self.keys, code)
        if canonical is None:
            raise InvalidCode("This is not a referral code of this app")
        return canonical

    # -- conversions ---------------------------------------------------------------------------

    @staticmethod
    def _checked_event(event: str) -> str:
        if len(event) > MAX_EVENT_LENGTH or not _EVENT.fullmatch(event):
            raise InvalidEvent(
                "event",
                "event must be 1-64 letters, digits or `_ . : -`, starting with a letter or digit",
            )
        return event

    @staticmethod
    def _checked_amount(value: Decimal | None, currency: str | None) -> tuple[str, int]:
        """(ISO code or "", amount in minor units); 422 for anything not exactly representable."""
        if currency is None:
            if value is not None:
                raise CurrencyRequired("currency", "currency is required with value")
            return "", 0
        iso = currency.strip().upper()
        places = minor_units(iso)
        if places is None:
            raise InvalidCurrency("currency", "currency must be an ISO 4217 code")
        if value is None:
            raise ValueRequired("value", "currency was sent without value; send both or neither")
        try:  # digits and exponent first: nothing below may compute 10**exponent unbounded
            check_decimal(value)
        except ValueError as exc:
            raise InvalidValue("value", f"value: {exc}") from None
        if value.is_signed() and value != 0:
            raise NegativeValue("value", "value must not be negative")
        if value > MAX_VALUE:
            raise ValueTooLarge("value", f"value must be at most {MAX_VALUE}")
        if decimal_places(value) > places:
            raise TooManyDecimals(
                "value",
                f"{iso} allows {places} decimal place{'s' if places != 1 else ''}",
            )
        return iso, to_minor(value, places)

    def _aggregate_expiry(self, now: datetime) -> tuple[date, datetime]:
        """The UTC day of `now` and its aggregate's fixed expiry (day start + lifetime)."""
        day = now.astimezone(UTC).date()
        lifetime = self.policy.lifetime("affiliate_aggregates", None)
        if lifetime < timedelta(days=1):  # shorter than a day: count from the first conversion
            return day, whole_seconds(now) + lifetime
        return day, datetime.combine(day, time.min, tzinfo=UTC) + lifetime

    async def record_conversion(
        self,
        code: str,
        *,
        event: str = DEFAULT_EVENT,
        value: Decimal | None = None,
        currency: str | None = None,
        event_id: str | None = None,
        code_id: str | None = None,
    ) -> Literal["recorded", "duplicate"]:
        """Count one conversion of `code` into today's (UTC) aggregate; flushes, never commits."""
        event = self._checked_event(event)
        iso, amount = self._checked_amount(value, currency)
        if event_id is not None and not 1 <= len(event_id) <= MAX_EVENT_ID_LENGTH:
            raise InvalidEventId("event_id", "event_id must be 1-256 characters")
        if code_id is not None and not 1 <= len(code_id) <= MAX_CODE_ID_LENGTH:
            raise InvalidCodeId("code_id", "code_id must be 1-128 characters")
        try:
            canonical = self.verify_code(code)
            if code_id is not None and not codes.matches_code_id(self.keys, canonical, code_id):
                raise InvalidCode("The code was not generated for this code_id")
        except InvalidCode:
            self._count("invalid_code")
            raise
        now = self.clock()
        if event_id is not None:
            mark = self.kit.keyed_hash(EVENT_ID_PURPOSE, self.tenant.app_id, event_id)
            expires = self.policy.expires_at("affiliate_events", None, now)
            if not await self.marks.claim(mark, expires):
                self._count("duplicate")
                return "duplicate"
        day, expires_at = self._aggregate_expiry(now)
        try:
            await self.aggregates.add_conversion(
                code=canonical,
                day=day,
                event=event,
                currency=iso,
                value_minor=amount,
                expires_at=expires_at,
            )
        except SumOverflowError as exc:
            raise ValueTooLarge("value", "this aggregate's sum would overflow") from exc
        self._count("recorded")
        return "recorded"

    # -- stats ---------------------------------------------------------------------------------

    def _window(self, since: date | None, until: date | None) -> tuple[date, date]:
        retention_days = max(self.policy.lifetime("affiliate_aggregates", None).days, 1)
        until = until or self.clock().astimezone(UTC).date()
        if since is None:
            back = timedelta(days=retention_days - 1)
            # until near 0001-01-01: the default window starts at the first day there is
            since = until - back if until - date.min >= back else date.min
        if until < since:
            raise InvalidDateRange("until", "until must not be before since", "query")
        if (until - since).days + 1 > MAX_STATS_DAYS:
            raise DateRangeTooLong(
                "since",
                f"since..until may span at most {MAX_STATS_DAYS} days",
                "query",
            )
        return since, until

    @staticmethod
    def _amount(row: AggregateRow) -> dict[str, Any]:
        places = minor_units(row.currency) if row.currency else None
        return {
            "event": row.event,
            "currency": row.currency or None,
            "count": row.conversions,
            "value_sum": None if places is None else from_minor(row.value_sum_minor, places),
        }

    @classmethod
    def _day_row(cls, row: AggregateRow) -> StatsRow:
        assert row.day is not None, "daily rows carry their day"
        return StatsRow(day=row.day, **cls._amount(row))

    async def daily_totals(self, since: date, until: date, limit: int) -> list[AggregateRow]:
        """Live conversions per UTC day, event and currency over all codes (reports)."""
        return await self.aggregates.daily(None, since, until, limit)

    async def stats(
        self, code: str | None = None, since: date | None = None, until: date | None = None
    ) -> StatsOut:
        """Live aggregates per UTC day (inclusive window) and their totals, for one code or all."""
        canonical = self.verify_code(code) if code else None
        since, until = self._window(since, until)
        rows = await self.aggregates.daily(canonical, since, until, MAX_STATS_ROWS + 1)
        totals = await self.aggregates.totals(canonical, since, until)
        return StatsOut(
            tenant=self.tenant.app_id,
            code=codes.group(canonical) if canonical else None,
            since=since,
            until=until,
            days=[self._day_row(row) for row in rows[:MAX_STATS_ROWS]],
            totals=[StatsTotal(**self._amount(row)) for row in totals],
            truncated=len(rows) > MAX_STATS_ROWS,
        )
