"""Referral codes as pure functions: 16 Crockford base32 symbols = 48-bit payload + 32-bit MAC.

payload = HMAC-SHA256(payload_key, code_id)[:6] and mac = HMAC-SHA256(mac_key, payload)[:4],
both keys per tenant. The server verifies a code with the tenant's keys alone (no code_id, no
storage); a guessed code passes with probability 2**-32 (about 2.3e-10).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from stateless.kit.crypto.sealing import PrivacyKit

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
CODE_LENGTH = 16
GROUP_SIZE = 4
PAYLOAD_BYTES = 6
MAC_BYTES = 4
PAYLOAD_BITS = PAYLOAD_BYTES * 8
MAC_BITS = MAC_BYTES * 8
# Longest input we try to read as a code (grouping dashes and spaces included).
MAX_INPUT_LENGTH = 64

# 10 bytes are exactly 16 base32 symbols, so the stdlib codec does the bit packing (in C) and a
# translation table swaps RFC 4648's alphabet for Crockford's. No padding, no ambiguous encodings.
_RFC4648 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TO_CROCKFORD = bytes.maketrans(_RFC4648, ALPHABET.encode())
_FROM_CROCKFORD = bytes.maketrans(ALPHABET.encode(), _RFC4648)
# Crockford's read-aliases (I and L read as 1, O as 0); dashes and spaces are only grouping.
_READ_ALIASES = str.maketrans({"I": "1", "L": "1", "O": "0", "-": None, " ": None})
_CANONICAL = re.compile(f"[{ALPHABET}]{{{CODE_LENGTH}}}")


@dataclass(frozen=True, slots=True)
class CodeKeys:
    """One tenant's two code keys (derived from AFFILIATE_SALT; see wiring.AffiliateKeyring)."""

    payload_key: bytes
    mac_key: bytes


def _payload(keys: CodeKeys, code_id: str) -> bytes:
    return hmac.digest(keys.payload_key, code_id.encode("utf-8"), hashlib.sha256)[:PAYLOAD_BYTES]


def _mac(keys: CodeKeys, payload: bytes) -> bytes:
    return hmac.digest(keys.mac_key, payload, hashlib.sha256)[:MAC_BYTES]


def make_code(keys: CodeKeys, code_id: str) -> str:
    """The canonical (ungrouped, upper-case) code of `code_id`: same inputs, same code."""
    payload = _payload(keys, code_id)
    return base64.b32encode(payload + _mac(keys, payload)).translate(_TO_CROCKFORD).decode()


def group(canonical: str) -> str:
    """XXXX-XXXX-XXXX-XXXX: the form we hand out and show."""
    return "-".join(canonical[i : i + GROUP_SIZE] for i in range(0, len(canonical), GROUP_SIZE))


def normalize(text: str) -> str | None:
    """Read a code as a person may type it (any case, dashes or spaces, I/L/O); None if malformed."""
    if len(text) > MAX_INPUT_LENGTH:
        return None
    canonical = text.strip().upper().translate(_READ_ALIASES)
    return canonical if _CANONICAL.fullmatch(canonical) else None


def verify(keys: CodeKeys, text: str) -> str | None:
    """The canonical code if `text` is a genuine code under these keys, else None."""
    canonical = normalize(text)
    if canonical is None:
        return None
    raw = base64.b32decode(canonical.encode().translate(_FROM_CROCKFORD))
    if hmac.compare_digest(_mac(keys, raw[:PAYLOAD_BYTES]), raw[PAYLOAD_BYTES:]):
        return canonical
    return None


def matches_code_id(keys: CodeKeys, canonical: str, code_id: str) -> bool:
    """Whether `canonical` is the code generated for `code_id` (constant-time comparison)."""
    return hmac.compare_digest(make_code(keys, code_id), canonical)


class AffiliateKeyring:
    """Per-tenant code keys (HKDF through the privacy kit, rooted in AFFILIATE_SALT, not
    SECRET_KEY): rotating SECRET_KEY leaves printed codes valid; changing the salt voids them."""

    def __init__(self, affiliate_salt: str) -> None:
        self._kit = PrivacyKit(affiliate_salt)

    def keys_for(self, app_id: str) -> CodeKeys:
        return CodeKeys(
            payload_key=self._kit.derive("affiliate-code-payload", app_id),
            mac_key=self._kit.derive("affiliate-code-mac", app_id),
        )
