"""The one wire format for instants: RFC 3339 UTC in whole seconds, `YYYY-MM-DDTHH:MM:SSZ`.

Swift's `JSONDecoder.dateDecodingStrategy = .iso8601` rejects fractional seconds and JavaScript's
`Date` accepts this form everywhere, so every response field of type `Timestamp` is rendered so.
Expiries are computed from `whole_seconds(now)` too (lifecycle/policy.py), so the `expires_at`
a client is told is exactly the stored instant at which its data becomes invisible.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"


def whole_seconds(moment: datetime) -> datetime:
    """The instant truncated to the second (never later than `moment`), in UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def format_timestamp(moment: datetime) -> str:
    """`2026-11-25T17:00:00Z`: UTC, whole seconds, a literal Z."""
    return whole_seconds(moment).replace(tzinfo=None).isoformat() + "Z"


Timestamp = Annotated[
    datetime,
    PlainSerializer(format_timestamp, return_type=str, when_used="json-unless-none"),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "examples": ["2026-11-25T17:00:00Z"],
            "description": "RFC 3339 UTC in whole seconds",
        }
    ),
]
"""A datetime field of a response model, rendered as `YYYY-MM-DDTHH:MM:SSZ` in JSON."""
