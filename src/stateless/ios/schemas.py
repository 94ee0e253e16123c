"""Request and response bodies of /api/v1/ios register-token, unregister-token and push."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stateless.kit.wire.bounds import MAX_EPOCH_MS, BoundedInput, FreeFormObject, HeaderText
from stateless.kit.wire.timestamps import Timestamp

TOKEN_PATTERN = re.compile(r"^[0-9a-fA-F]{64,200}$")
MAX_DEVICE_IDS_PER_PUSH = 10_000

Environment = Literal["production", "sandbox"]
PushType = Literal["alert", "background"]
ResultStatus = Literal["sent", "removed", "failed", "not_registered"]


class RegisterTokenIn(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(description="The APNs device token as hex (64-200 characters).")
    device_id: str = Field(
        min_length=1,
        max_length=256,
        description="Your stable id for the device (e.g. identifierForVendor); kept only hashed.",
    )
    environment: Environment = Field(
        default="production", description="Which APNs environment issued the token."
    )
    topic: HeaderText | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="apns-topic for this device (a bundle id, optionally with a suffix such as "
        "`.voip`); defaults to the app's bundle id.",
    )
    ttl_seconds: int | None = Field(
        default=None, description="How long to keep the token (default 30 d, at most 60 d)."
    )

    @field_validator("token")
    @classmethod
    def _hex_token(cls, value: str) -> str:
        if not TOKEN_PATTERN.fullmatch(value):
            raise ValueError("token must be 64-200 hexadecimal characters")
        return value.lower()


class RegisterTokenOut(BaseModel):
    status: Literal["registered"] = "registered"
    tenant: str
    expires_at: Timestamp


class UnregisterTokenIn(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(min_length=1, max_length=256)


class UnregisterTokenOut(BaseModel):
    status: Literal["unregistered"] = "unregistered"


class Alert(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(max_length=1024)
    subtitle: str | None = Field(default=None, max_length=1024)
    body: str = Field(max_length=4096)


class PushIn(BoundedInput):
    """One notification to listed devices or to every live device of the app (exactly one)."""

    model_config = ConfigDict(extra="forbid")

    device_ids: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_DEVICE_IDS_PER_PUSH,
        description="The device ids given to register-token; results are reported per id.",
    )
    all: bool | None = Field(
        default=None, description="true: every live device of the app (counts only)."
    )
    alert: Alert | None = None
    badge: int | None = Field(default=None, ge=0, le=1_000_000)
    sound: str | None = Field(default=None, min_length=1, max_length=256)
    data: FreeFormObject | None = Field(
        default=None,
        description="Custom keys, placed beside `aps` in the payload (at most 32 levels deep).",
    )
    push_type: PushType = "alert"
    priority: Literal[1, 5, 10] | None = Field(
        default=None, description="apns-priority; default 10 for alert, 5 for background."
    )
    collapse_id: HeaderText | None = Field(
        default=None, min_length=1, max_length=64, description="apns-collapse-id (printable ASCII)."
    )
    expiration: int | None = Field(
        default=None,
        ge=0,
        le=MAX_EPOCH_MS // 1000,
        description="apns-expiration: UNIX time until which APNs retries delivery; 0 = once.",
    )

    def is_broadcast(self, sync_max: int) -> bool:
        """`all`, or more ids than PUSH_SYNC_MAX: queued as a resumable job, not sent inline."""
        return self.all is True or len(self.device_ids or ()) > sync_max

    @field_validator("device_ids")
    @classmethod
    def _device_ids(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not 1 <= len(item) <= 256 for item in value):
            raise ValueError("each device id must be 1-256 characters")
        return value

    @field_validator("data")
    @classmethod
    def _no_aps(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and "aps" in value:
            raise ValueError("`aps` is reserved; use alert, badge and sound")
        return value

    @model_validator(mode="after")
    def _target_and_content(self) -> PushIn:
        if (self.device_ids is None) == (self.all is not True):
            raise ValueError("give either device_ids or all: true (exactly one)")
        if self.collapse_id is not None and len(self.collapse_id.encode()) > 64:
            raise ValueError("collapse_id must be at most 64 bytes")
        if self.push_type == "background":
            # Apple: a background notification's `aps` holds only `content-available`.
            if self.alert is not None or self.sound is not None or self.badge is not None:
                raise ValueError("background pushes carry no alert, badge or sound")
            if self.priority == 10:
                raise ValueError("background pushes must use priority 5 or 1")
        elif self.alert is None and self.badge is None and self.sound is None:
            raise ValueError("an alert push needs alert, badge or sound")
        return self


class PushResult(BaseModel):
    device_id: str
    status: ResultStatus
    reason: str | None = None


class PushOut(BaseModel):
    sent: int
    failed: int
    removed: int
    results: list[PushResult]
