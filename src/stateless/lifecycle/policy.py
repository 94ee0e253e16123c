"""One TTL policy table: the default and hard maximum lifetime of every kind of data (SPEC 3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from stateless.kit.web.errors import Unprocessable
from stateless.kit.wire.timestamps import whole_seconds

HOUR = 3600
DAY = 24 * HOUR

Form = Literal["encrypted", "keyed-hash", "aggregate", "metadata", "object"]


class TtlOutOfRange(Unprocessable):
    code = "ttl_out_of_range"


@dataclass(frozen=True, slots=True)
class TtlRule:
    kind: str
    default_seconds: int
    max_seconds: int
    description: str
    stored_as: str


BASE_RULES: tuple[TtlRule, ...] = (
    TtlRule(
        "device_tokens",
        30 * DAY,
        60 * DAY,
        "APNs device tokens",
        "token AES-GCM encrypted, device id as keyed hash",
    ),
    TtlRule(
        "bot_tasks",
        48 * HOUR,
        7 * DAY,
        "Bot task records and results",
        "task type, status, result without addresses",
    ),
    TtlRule("drafts", 24 * HOUR, 7 * DAY, "Drafts", "content AES-GCM encrypted"),
    TtlRule(
        "stored_files",
        24 * HOUR,
        7 * DAY,
        "Uploaded files",
        "object body in storage, metadata row; filename as metadata only",
    ),
    TtlRule(
        "idempotency",
        24 * HOUR,
        24 * HOUR,
        "Idempotency records",
        "key and body as keyed hashes, first result",
    ),
    TtlRule(
        "affiliate_aggregates",
        90 * DAY,
        90 * DAY,
        "Referral conversion aggregates",
        "code MAC, day, event, currency, count, sum",
    ),
    TtlRule(
        "affiliate_events",
        90 * DAY,
        90 * DAY,
        "Conversion de-duplication marks",
        "event id as keyed hash",
    ),
    TtlRule(
        "entitlements",
        90 * DAY,
        90 * DAY,
        "Purchase state from App Store notifications",
        "original transaction id as keyed hash",
    ),
    TtlRule(
        "notification_receipts",
        30 * DAY,
        90 * DAY,
        "App Store notification ids seen (replay protection)",
        "notification UUID as keyed hash",
    ),
    TtlRule(
        "entitlement_sources",
        90 * DAY,
        90 * DAY,
        "Entitlement sources: what one App Store or Stripe purchase grants, until when "
        "(slides: entitlement end + grace + 7 days, never 90 days past its last verified use)",
        "subject, transaction, subscription and customer ids as keyed hashes; the subject and "
        "the store id AES-GCM encrypted",
    ),
    TtlRule(
        "entitlement_event_marks",
        8 * DAY,
        8 * DAY,
        "Stripe event ids already applied (replay protection)",
        "event id as keyed hash",
    ),
    TtlRule(
        "entitlement_daily",
        90 * DAY,
        90 * DAY,
        "Entitlement figures per day (new, renewals, cancellations, refunds, revenue)",
        "aggregate counts per day, entitlement, store, product and currency",
    ),
    TtlRule(
        "entitlement_reconcile_cursors",
        90 * DAY,
        90 * DAY,
        "How far App Store notification history has been read",
        "environment and a timestamp",
    ),
    TtlRule(
        "webpush_subscriptions",
        30 * DAY,
        60 * DAY,
        "Web Push subscriptions",
        "endpoint URL and keys AES-GCM encrypted, subscriber id as keyed hash",
    ),
)


class TtlPolicy:
    """Defaults and maxima per kind, each capped by MAX_DATA_TTL_DAYS; overridable per deployment."""

    def __init__(
        self,
        max_data_ttl_days: int,
        overrides: dict[str, dict[str, int]] | None = None,
    ) -> None:
        cap = max_data_ttl_days * DAY
        self.cap_seconds = cap
        self._rules: dict[str, TtlRule] = {}
        for rule in BASE_RULES:
            override = (overrides or {}).get(rule.kind, {})
            max_seconds = min(int(override.get("max", rule.max_seconds)), cap)
            default_seconds = min(int(override.get("default", rule.default_seconds)), max_seconds)
            self._rules[rule.kind] = TtlRule(
                rule.kind, default_seconds, max_seconds, rule.description, rule.stored_as
            )

    def rule(self, kind: str) -> TtlRule:
        return self._rules[kind]

    def rules(self) -> list[TtlRule]:
        return list(self._rules.values())

    def lifetime(self, kind: str, ttl_seconds: int | None) -> timedelta:
        """The lifetime a request gets: its own ttl_seconds if within the maximum, else 422."""
        rule = self._rules[kind]
        if ttl_seconds is None:
            return timedelta(seconds=rule.default_seconds)
        if ttl_seconds < 1 or ttl_seconds > rule.max_seconds:
            raise TtlOutOfRange(
                f"ttl_seconds must be between 1 and {rule.max_seconds} for {kind}",
                extra={
                    "errors": [
                        {
                            "loc": ["body", "ttl_seconds"],
                            "msg": f"must be between 1 and {rule.max_seconds}",
                            "type": "ttl_out_of_range",
                        }
                    ]
                },
            )
        return timedelta(seconds=ttl_seconds)

    def expires_at(self, kind: str, ttl_seconds: int | None, now: datetime) -> datetime:
        """Expiry in whole seconds (SPEC 1): counted from `now` truncated to the second, so the
        `expires_at` a client is told is exactly the stored instant, never later than asked."""
        return whole_seconds(now) + self.lifetime(kind, ttl_seconds)
