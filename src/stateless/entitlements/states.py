"""The state machine of an entitlement source (SPEC 13), as pure functions: what a store event
says (`SourceFacts`), whether a source grants access now, how long its row lives, and which
tenant webhook a change is."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from stateless.kit.wire.timestamps import whole_seconds

Store = Literal["app_store", "stripe"]
State = Literal["active", "cancelled", "grace", "billing_retry", "expired", "revoked"]
STATES: tuple[State, ...] = ("active", "cancelled", "grace", "billing_retry", "expired", "revoked")
# After the entitlement ends (and any grace), its row is kept this long for `/check` to answer
# with the last known dates, then it expires like every other row.
KEEP_AFTER_END = timedelta(days=7)
# A source whose row would end sooner still lives this long (an expired one answers `expired`).
MINIMUM_LIFE = timedelta(days=1)

ChangeKind = Literal[
    "granted", "renewed", "cancelled", "uncancelled", "billing_issue", "expired", "revoked"
]
# Daily figure each change adds to.
FIGURE_OF: dict[ChangeKind, str] = {
    "renewed": "renewals",
    "cancelled": "cancellations",
    "billing_issue": "billing_issues",
    "expired": "expirations",
    "revoked": "refunds",
}


@dataclass(slots=True)
class SourceView:
    """The fields of a source that decide access (a row, or facts about to become one)."""

    state: str
    period_ends_at: datetime | None
    grace_ends_at: datetime | None
    will_renew: bool = False


@dataclass(slots=True)
class SourceFacts:
    """What one verified store event says about one purchase."""

    store: Store
    reference: str  # original transaction id | subscription id | payment intent id
    product_id: str
    state: State
    environment: str
    event_at: datetime
    event: str
    subject: str | None = None  # canonical app account token, when the event names one
    parent_product_id: str | None = None
    period_type: str = "normal"
    will_renew: bool = False
    purchased_at: datetime | None = None
    period_ends_at: datetime | None = None
    grace_ends_at: datetime | None = None
    revoked_at: datetime | None = None
    customer: str | None = None
    payment: str | None = None
    # (minor units, currency) paid by this event, for the daily revenue figures
    revenue: tuple[int, str] | None = None
    # a paid renewal (a daily figure even when access did not change)
    renewal_paid: bool = False
    # the device's own transaction: it knows less than the store's notifications (see merge)
    from_device: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def view(self) -> SourceView:
        return SourceView(self.state, self.period_ends_at, self.grace_ends_at, self.will_renew)


def grants_access(view: SourceView, now: datetime) -> bool:
    """Active, cancelled-but-not-yet-expired, or in a billing grace period."""
    if view.state in ("revoked", "expired", "billing_retry"):
        return False
    if view.grace_ends_at is not None and view.grace_ends_at > now:
        return True
    if view.state == "grace":
        return view.period_ends_at is not None and view.period_ends_at > now
    return view.period_ends_at is None or view.period_ends_at > now


def shown_state(view: SourceView, now: datetime) -> str:
    """The state as of now: an active or cancelled period that has ended reads `expired`."""
    if view.state in ("active", "cancelled", "grace") and not grants_access(view, now):
        return "expired"
    return view.state


def row_expires_at(
    state: str,
    period_ends_at: datetime | None,
    grace_ends_at: datetime | None,
    revoked_at: datetime | None,
    now: datetime,
    cap: timedelta,
) -> datetime:
    """Sliding expiry: entitlement end + grace + 7 days, never past `cap` from now (the last
    verified use), never sooner than a day from now."""
    latest = now + cap
    ends = [t for t in (period_ends_at, grace_ends_at) if t is not None]
    if state == "revoked":
        ends = [revoked_at or now]
    if not ends:
        return whole_seconds(latest)  # a purchase that never lapses: the cap alone
    keep = max(ends) + KEEP_AFTER_END
    return whole_seconds(min(latest, max(keep, now + MINIMUM_LIFE)))


def change_of(old: SourceView | None, new: SourceView, now: datetime) -> ChangeKind | None:
    """The tenant webhook a source's change is, if any."""
    was = old is not None and grants_access(old, now)
    is_ = grants_access(new, now)
    if not was and is_:
        return "granted"
    if was and not is_:
        if new.state == "revoked":
            return "revoked"
        if new.state == "billing_retry":
            return "billing_issue"
        return "expired"
    if old is None:
        return "revoked" if new.state == "revoked" else None
    if not is_:
        return "revoked" if new.state == "revoked" and old.state != "revoked" else None
    if new.state == "grace" and old.state != "grace":
        return "billing_issue"
    if old.state == "cancelled" and new.state == "active":
        return "uncancelled"
    if old.state in ("active", "grace") and new.state == "cancelled":
        return "cancelled"
    old_end, new_end = old.period_ends_at, new.period_ends_at
    if old_end is not None and new_end is not None and new_end > old_end:
        return "renewed"
    return None
