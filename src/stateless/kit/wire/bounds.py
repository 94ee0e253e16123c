"""Input bounds (SPEC 1) as reusable types: every number, text, date and free-form object a
request or an upstream answer carries is checked, cheaply, before any work is done on it.

A value past a bound is a 422 (pydantic turns the ValueError into a validation error), never a
500 and never a computation that holds the event loop: `0E+6000000` must not reach `10 ** e`,
a lone UTF-16 surrogate must not reach an encoder, 900 levels of nesting must not reach orjson
(255 levels at most), and year 1 must not reach date arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, model_validator

MAX_DEPTH: Final = 32
"""Nesting levels of a free-form object (its own level counts as one)."""
MAX_DECIMAL_DIGITS: Final = 38
MAX_DECIMAL_EXPONENT: Final = 38
"""A decimal's exponent must lie in [-38, 38]: its magnitude stays below 10**76 and converting
it to an integer amount costs nothing."""
MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**63 - 1
"""Integers inside free-form data: what every JSON encoder and database column here can hold."""
MIN_YEAR: Final = 1970
MAX_YEAR: Final = 9999
MIN_EPOCH_MS: Final = 0
MAX_EPOCH_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_MAX_EPOCH_MS_DIGITS: Final = len(str(MAX_EPOCH_MS))


def lone_surrogate_in(text: str) -> bool:
    """True when `text` holds a UTF-16 surrogate code point (JSON `"\\ud800"` decodes to one).

    Paired escapes decode to one real character, so any surrogate left is a lone one; such a
    string cannot be encoded as UTF-8, hashed, sealed or sent anywhere.
    """
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_text(value: str) -> str:
    """Text must be encodable (no lone surrogates)."""
    if lone_surrogate_in(value):
        raise ValueError("text must not contain lone UTF-16 surrogates (\\ud800-\\udfff)")
    return value


def check_header_text(value: str) -> str:
    """Text that travels as an HTTP header value upstream (apns-topic, apns-collapse-id):
    printable ASCII only, no leading or trailing space."""
    if not value.isascii() or not value.isprintable() or value != value.strip():
        raise ValueError("must be printable ASCII without leading or trailing spaces")
    return value


def _where(path: list[str]) -> str:
    return ".".join(path) or "the value"


def check_json_tree(
    value: Any, *, max_depth: int = MAX_DEPTH, path: str = "", json_only: bool = True
) -> Any:
    """Walk a parsed JSON value without recursion and refuse what no encoder can carry.

    Refused: nesting deeper than `max_depth` and lone surrogates in strings or keys; with
    `json_only`, also integers outside 64 bits, non-finite floats (`NaN`, `Infinity`) and
    anything that is not JSON.
    """
    stack: list[tuple[Any, int, list[str]]] = [(value, 1, [path] if path else [])]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, str):
            if lone_surrogate_in(node):
                raise ValueError(f"text at {_where(where)} contains a lone UTF-16 surrogate")
        elif (
            isinstance(node, bool)
            or node is None
            or (not json_only and not isinstance(node, Mapping | list | tuple))
        ):
            continue
        elif isinstance(node, int):
            if not MIN_INT <= node <= MAX_INT:
                raise ValueError(f"integer at {_where(where)} is outside the 64-bit range")
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise ValueError(f"number at {_where(where)} is not finite")
        elif isinstance(node, Mapping | list | tuple):
            if depth > max_depth:
                raise ValueError(f"nesting deeper than {max_depth} levels at {_where(where)}")
            if isinstance(node, Mapping):
                for key, item in node.items():
                    if not isinstance(key, str) or lone_surrogate_in(key):
                        raise ValueError(f"a key at {_where(where)} is not encodable text")
                    stack.append((item, depth + 1, [*where, key[:32]]))
            else:
                stack.extend((item, depth + 1, [*where, str(i)]) for i, item in enumerate(node))
        else:
            raise ValueError(f"value at {_where(where)} is not JSON")
    return value


def _free_form(value: Any) -> Any:
    return check_json_tree(value)


MAX_NUMBER_TEXT: Final = 100
"""Characters of a number sent as text: parsing millions of digits would itself take a while."""


def short_number_text(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_NUMBER_TEXT:
        raise ValueError(f"number text must be at most {MAX_NUMBER_TEXT} characters")
    return value


def check_decimal(value: Decimal) -> Decimal:
    """Finite, at most 38 significant digits, exponent within [-38, 38] (0E+6000000 is out)."""
    if not value.is_finite():
        raise ValueError("number must be finite")
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    if len(digits) > MAX_DECIMAL_DIGITS:
        raise ValueError(f"number must have at most {MAX_DECIMAL_DIGITS} digits")
    if not -MAX_DECIMAL_EXPONENT <= exponent <= MAX_DECIMAL_EXPONENT:
        raise ValueError(f"number exponent must lie within +-{MAX_DECIMAL_EXPONENT}")
    return value


def check_date(value: date) -> date:
    """Calendar dates within years 1970-9999 (date arithmetic near year 1 overflows)."""
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"date must lie within years {MIN_YEAR}-{MAX_YEAR}")
    return value


def check_datetime(value: datetime) -> datetime:
    return check_date(value) if isinstance(value, datetime) else value  # type: ignore[return-value]


def datetime_from_epoch_ms(value: object) -> datetime | None:
    """An upstream millisecond timestamp (int, or a digit string) as an aware UTC datetime.

    None stays None; anything else outside 1970-9999 or not a whole number raises ValueError,
    so the caller's "unreadable" path runs instead of an OverflowError or OSError.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit() or len(text) > _MAX_EPOCH_MS_DIGITS:
            raise ValueError("not a millisecond timestamp")
        value = int(text)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a millisecond timestamp")
        value = int(value)
    if not isinstance(value, int) or not MIN_EPOCH_MS <= value <= MAX_EPOCH_MS:
        raise ValueError("millisecond timestamp outside years 1970-9999")
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def bounded_int(value: object, *, low: int, high: int) -> int:
    """An upstream integer (int or a short digit string) within [low, high]; ValueError else."""
    if isinstance(value, bool):
        raise ValueError("not an integer")
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 20 or not text.lstrip("-").isdigit():
            raise ValueError("not an integer")
        value = int(text)
    if not isinstance(value, int) or not low <= value <= high:
        raise ValueError("integer out of range")
    return value


# -- annotated types for schemas -------------------------------------------------------------

Text = Annotated[str, AfterValidator(check_text)]
"""A string that can be encoded (no lone surrogates); length bounds stay on each field."""
HeaderText = Annotated[str, AfterValidator(check_header_text)]
"""A value we send on as an HTTP header: printable ASCII."""
FreeFormObject = Annotated[dict[str, Any], AfterValidator(_free_form)]
"""Caller-defined JSON object: at most 32 levels, encodable text, 64-bit integers."""
FreeFormValue = Annotated[dict[str, Any] | list[Any], AfterValidator(_free_form)]
BoundedDecimal = Annotated[
    Decimal, BeforeValidator(short_number_text), AfterValidator(check_decimal)
]
BoundedDate = Annotated[date, AfterValidator(check_date)]
BoundedDateTime = Annotated[datetime, AfterValidator(check_datetime)]


def _surrogates_anywhere(value: Any) -> None:
    """Refuse lone surrogates in any string or key of a body, at any depth, before the fields
    are read. Nesting past the encoder's reach is refused too (free-form fields have their own,
    tighter bound)."""
    check_json_tree(value, max_depth=4 * MAX_DEPTH, json_only=False)


class BoundedInput(BaseModel):
    """Base of every request body: no field of it, nested or free-form, can carry text that
    cannot be encoded or nesting that no encoder accepts."""

    model_config = ConfigDict()

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            _surrogates_anywhere(data)
        return data
