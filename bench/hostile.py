"""Hostile values for fuzzing (bench/fuzz.py and tests/fuzz/): what a buggy client or an
attacker sends that a schema-derived generator rarely does.

Each strategy targets one class of fault SPEC 1 bounds: lone UTF-16 surrogates (valid JSON
escapes, not encodable text), nesting past the 32-level bound and past encoders' limits,
decimals whose exponent or digits would make arithmetic slow, integers past 64 bits, non-finite
numbers, and dates at the calendar's edges. `hostile_value()` mixes them; `mutate()` plants one
into a JSON body at any depth; `hostile_header_value()` is for header fuzzing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

# Escapes that decode to a lone surrogate: high alone, low alone, reversed pair.
_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\udc00\ud800"]


def lone_surrogate_text() -> st.SearchStrategy[str]:
    """Ordinary text with a lone surrogate somewhere in it."""
    return st.builds(
        lambda head, surrogate, tail: head + surrogate + tail,
        st.text(max_size=8),
        st.sampled_from(_SURROGATES),
        st.text(max_size=8),
    )


def nested(depth: int, leaf: Any = "x", as_list: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


def deep_nesting() -> st.SearchStrategy[Any]:
    """Objects or arrays 33-950 levels deep (the bound is 32; orjson stops at 255)."""
    return st.builds(
        nested,
        st.sampled_from([33, 40, 128, 254, 256, 300, 900, 950]),
        st.just("x"),
        st.booleans(),
    )


def extreme_decimal_text() -> st.SearchStrategy[str]:
    """Numbers as text whose exponent or digit count makes naive arithmetic slow."""
    exponents = st.sampled_from([39, 400, 6_000_000, 999_999_999, 999_999_999_999_999_999])
    return st.one_of(
        st.builds(lambda m, e, sign: f"{m}E{sign}{e}", st.sampled_from(["0", "1", "9.99"]),
                  exponents, st.sampled_from(["+", "-"])),
        st.builds(lambda n: "1" * n, st.sampled_from([39, 100, 5000, 100_000])),
        st.builds(lambda n: "0." + "0" * n + "1", st.sampled_from([40, 5000])),
        st.sampled_from(["NaN", "Infinity", "-Infinity", "sNaN", "-0", "1e", "0x10"]),
    )  # fmt: skip


def extreme_numbers() -> st.SearchStrategy[Any]:
    """JSON numbers past 64 bits, non-finite floats and huge exponents (as parsed values)."""
    return st.one_of(
        st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 10**4000]),
        st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324]),
        st.integers(min_value=-(2**200), max_value=2**200),
    )


def extreme_dates() -> st.SearchStrategy[str]:
    """Calendar edges and impossible dates, as the text a client sends."""
    return st.one_of(
        st.sampled_from(
            [
                "0001-01-01",
                "0001-01-02",
                "1969-12-31",
                "9999-12-31",
                "10000-01-01",
                "0000-01-01",
                "2024-02-30",
                "1970-01-01T00:00:00Z",
                "9999-12-31T23:59:59Z",
                "0001-01-01T00:00:00+14:00",
            ]
        ),
        st.dates().map(str),
    )


def hostile_value() -> st.SearchStrategy[Any]:
    return st.one_of(
        lone_surrogate_text(),
        deep_nesting(),
        extreme_decimal_text(),
        extreme_numbers(),
        extreme_dates(),
        st.builds(lambda s: {s: 1}, lone_surrogate_text()),  # a hostile key
    )


def hostile_header_value() -> st.SearchStrategy[bytes]:
    """Header bytes a client can put on the wire: long, non-ASCII (latin-1), odd tokens."""
    return st.one_of(
        st.sampled_from(
            [
                b"",
                b" ",
                b"\xff\xfe",
                b"\xed\xa0\x80",  # UTF-8 encoding of a surrogate: not valid UTF-8
                b"Bearer \xc3\xa9",
                b"Bearer " + b"A" * 10_000,
                b"x" * 65,
                b"../../etc/passwd",
                b"app' OR '1'='1",
                b"1E+6000000",
            ]
        ),
        st.binary(min_size=1, max_size=64).map(
            lambda raw: bytes(b for b in raw if b >= 0x20 and b != 0x7F) or b"x"
        ),
    )


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON value (keys and indexes), the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(paths_of(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(paths_of(item, (*prefix, index)))
    return found


def replace_at(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replace_at(value[head], rest, new)}
    copy = list(value)
    copy[head] = replace_at(copy[head], rest, new)
    return copy


def mutate(body: Any, draw: Callable[[st.SearchStrategy[Any]], Any]) -> Any:
    """`body` with one position (never the root) replaced by a hostile value."""
    positions = [path for path in paths_of(body) if path] or [("hostile",)]
    path = draw(st.sampled_from(positions))
    if not isinstance(body, dict | list) or path == ("hostile",):
        base = body if isinstance(body, dict) else {}
        return {**base, "hostile": draw(hostile_value())}
    return replace_at(body, path, draw(hostile_value()))
