"""Request and response bodies of the affiliate API (sums are exact decimal strings)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field

from stateless.kit.wire.bounds import BoundedDecimal, BoundedInput

MAX_CODE_ID_LENGTH = 128
MAX_EVENT_ID_LENGTH = 256
MAX_EVENT_LENGTH = 64
EVENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
DEFAULT_EVENT = "conversion"

# `session_id` was this field's name before codes were tied to referrers: still read, deprecated.
_CODE_ID_ALIASES = AliasChoices("code_id", "session_id")
_CODE_ID_DOC = (
    "Your stable id for the referrer (user id, campaign, ...), 1-128 characters; never stored. "
    "The legacy name `session_id` is accepted as a deprecated alias."
)


class GenerateIn(BoundedInput):
    code_id: str = Field(
        min_length=1,
        max_length=MAX_CODE_ID_LENGTH,
        validation_alias=_CODE_ID_ALIASES,
        description=_CODE_ID_DOC,
    )


class GenerateOut(BaseModel):
    code: str = Field(description="The referral code, grouped as XXXX-XXXX-XXXX-XXXX.")
    tenant: str


class ConversionIn(BoundedInput):
    code: str = Field(
        min_length=1,
        max_length=64,
        description="A code from /generate; case, dashes and spaces do not matter.",
    )
    event: str = Field(
        default=DEFAULT_EVENT,
        min_length=1,
        max_length=MAX_EVENT_LENGTH,
        pattern=EVENT_PATTERN,
        description="Event name: letters, digits, `_ . : -` (e.g. `signup`, `purchase`).",
    )
    value: BoundedDecimal | None = Field(
        default=None,
        description=(
            "Amount, >= 0, at most the currency's decimal places (JPY 0, USD 2, KWD 3). "
            'Send it as a string ("9.99") to keep every digit exact.'
        ),
    )
    currency: str | None = Field(
        default=None,
        max_length=8,
        description="ISO 4217 code (any case); required with `value`, refused without it.",
    )
    event_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_EVENT_ID_LENGTH,
        description=(
            "Your id of this event (order id, transaction id): a repeat within the aggregate's "
            "lifetime answers `duplicate` and is not counted. Kept only as a keyed hash."
        ),
    )
    code_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CODE_ID_LENGTH,
        validation_alias=_CODE_ID_ALIASES,
        description="Optional cross-check: must be the code_id the code was generated for. "
        + _CODE_ID_DOC,
    )


class ConversionOut(BaseModel):
    status: Literal["recorded", "duplicate"]


class StatsRow(BaseModel):
    day: date
    event: str
    currency: str | None = Field(description="ISO 4217 code; null for conversions without value.")
    count: int
    value_sum: str | None = Field(
        description="Exact sum with the currency's decimal places; null without currency."
    )


class StatsTotal(BaseModel):
    event: str
    currency: str | None
    count: int
    value_sum: str | None


class StatsOut(BaseModel):
    tenant: str
    code: str | None = Field(description="The code asked for (grouped); null for all codes.")
    since: date
    until: date
    days: list[StatsRow] = Field(description="Per UTC day, event and currency, oldest first.")
    totals: list[StatsTotal] = Field(description="Over the whole window, per event and currency.")
    truncated: bool = Field(
        default=False, description="True when `days` was cut at 10000 rows (totals are complete)."
    )
