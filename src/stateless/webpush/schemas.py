"""Request and response bodies of /api/v1/web: the VAPID key, subscribe, unsubscribe, push."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stateless.kit.wire.timestamps import Timestamp

MAX_SUBSCRIBER_IDS_PER_PUSH = 10_000
MAX_ENDPOINT_LENGTH = 2048

Urgency = Literal["very-low", "low", "normal", "high"]
ResultStatus = Literal["sent", "removed", "failed", "not_subscribed"]


class VapidPublicKeyOut(BaseModel):
    public_key: str = Field(
        description="The applicationServerKey for pushManager.subscribe: the uncompressed P-256 "
        "point, base64url without padding."
    )


class SubscriptionKeys(BaseModel):
    model_config = ConfigDict(extra="ignore")

    p256dh: str = Field(min_length=1, max_length=128)
    auth: str = Field(min_length=1, max_length=64)


class BrowserSubscription(BaseModel):
    """`PushSubscription.toJSON()` as the browser gives it."""

    model_config = ConfigDict(extra="ignore")

    endpoint: str = Field(min_length=9, max_length=MAX_ENDPOINT_LENGTH)
    keys: SubscriptionKeys
    expirationTime: int | float | None = Field(
        default=None,
        ge=0,
        le=253_402_300_799_000,
        description="Milliseconds since the epoch, as the browser reports it (usually null).",
    )


class SubscribeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscription: BrowserSubscription
    subscriber_id: str = Field(
        min_length=1,
        max_length=256,
        description="Your stable id for this browser or user; kept only as a keyed hash.",
    )
    ttl_seconds: int | None = Field(
        default=None,
        description="How long to keep the subscription (default 30 d, at most 60 d, never past "
        "the subscription's expirationTime).",
    )


class SubscribeOut(BaseModel):
    status: Literal["subscribed"] = "subscribed"
    tenant: str
    expires_at: Timestamp


class UnsubscribeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscriber_id: str = Field(min_length=1, max_length=256)


class UnsubscribeOut(BaseModel):
    status: Literal["unsubscribed"] = "unsubscribed"


class WebNotification(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=1024)
    body: str | None = Field(default=None, max_length=4096)
    icon: str | None = Field(default=None, max_length=2048)
    url: str | None = Field(
        default=None,
        max_length=2048,
        description="Where a click leads (declarative pushes require it: `navigate`).",
    )
    tag: str | None = Field(default=None, max_length=256)
    badge: str | None = Field(default=None, max_length=2048)


class WebPushIn(BaseModel):
    """One notification to listed subscribers or to every live subscriber (exactly one)."""

    model_config = ConfigDict(extra="forbid")

    subscriber_ids: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SUBSCRIBER_IDS_PER_PUSH,
        description="The subscriber ids given to /subscribe; results are reported per id.",
    )
    all: bool | None = Field(default=None, description="true: every live subscriber (counts only).")
    notification: WebNotification | None = None
    data: dict[str, Any] | None = Field(
        default=None, description="Custom data for your service worker, beside `notification`."
    )
    ttl: int | None = Field(
        default=None,
        ge=0,
        le=28 * 24 * 3600,
        description="Seconds the push service keeps the message for an offline browser "
        "(TTL header; default 4 weeks, 0 = deliver now or drop).",
    )
    urgency: Urgency | None = Field(default=None, description="Urgency header (RFC 8030 5.3).")
    topic: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="Topic header: a newer message with the same topic replaces an undelivered one.",
    )
    declarative: bool = Field(
        default=False,
        description="Send WebKit's Declarative Web Push format "
        '({"web_push": 8030, "notification": {...}}), shown without a service worker.',
    )

    def is_broadcast(self, sync_max: int) -> bool:
        """`all`, or more ids than PUSH_SYNC_MAX: queued as a resumable job, not sent inline."""
        return self.all is True or len(self.subscriber_ids or ()) > sync_max

    @model_validator(mode="after")
    def _target_and_content(self) -> WebPushIn:
        if (self.subscriber_ids is None) == (self.all is not True):
            raise ValueError("give either subscriber_ids or all: true (exactly one)")
        if self.subscriber_ids is not None and any(
            not 1 <= len(item) <= 256 for item in self.subscriber_ids
        ):
            raise ValueError("each subscriber id must be 1-256 characters")
        if self.notification is None and self.data is None:
            raise ValueError("give notification, data or both")
        if self.declarative and (self.notification is None or self.notification.url is None):
            raise ValueError("a declarative push needs notification.title and notification.url")
        return self


class WebPushResult(BaseModel):
    subscriber_id: str
    status: ResultStatus
    reason: str | None = None


class WebPushOut(BaseModel):
    sent: int
    failed: int
    removed: int
    results: list[WebPushResult]
