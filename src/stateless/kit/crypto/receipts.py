"""Deletion receipts: a compact JWS (EdDSA, Ed25519) that says what was erased for which app and
when, holding no identifier, verifiable by any JOSE library against `/.well-known/jwks.json`.

The signing key is derived from SECRET_KEY (HKDF, its own purpose), so it needs no storage and
is the same on every replica. Each key in PREVIOUS_SECRET_KEYS keeps its public key in the JWKS,
so receipts signed before a rotation still verify after it. Key ids are RFC 7638 thumbprints of
the public keys: they say nothing about the secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from stateless.kit.crypto.sealing import PrivacyKit

RECEIPT_PURPOSE = "deletion-receipt-signing"
DEFAULT_ISSUER = "stateless-backend"

ReceiptScope = Literal["tenant", "subject"]


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class _SigningKey:
    kid: str
    private: Ed25519PrivateKey
    jwk: dict[str, str]


def _signing_key(seed: bytes) -> _SigningKey:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    x = _b64e(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    # RFC 7638: SHA-256 over the required members, in lexicographic order, no whitespace.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    kid = _b64e(hashlib.sha256(canonical.encode()).digest())
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}
    return _SigningKey(kid, private, jwk)


class DeletionReceipts:
    """Signs receipts with the current root key's signing key; publishes every root's public key."""

    def __init__(
        self, privacy: PrivacyKit, issuer: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.issuer = issuer
        self._clock = clock
        self._keys = [
            _signing_key(privacy.derive(RECEIPT_PURPOSE, key_id=key_id))
            for key_id in privacy.key_ids()
        ]
        self._jwks: dict[str, Any] = {"keys": [key.jwk for key in self._keys]}

    def sign(self, app_id: str, scope: ReceiptScope, erased: Mapping[str, int]) -> str:
        """A receipt for one erasure: rows erased per kind, no identifier of what was erased."""
        key = self._keys[0]
        payload = {
            "iss": self.issuer,
            "app_id": app_id,
            "iat": int(self._clock()),
            "scope": scope,
            "erased": {kind: int(count) for kind, count in erased.items()},
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(
            payload, key.private, algorithm="EdDSA", headers={"kid": key.kid, "typ": "JWT"}
        )

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set: one OKP/Ed25519 public key per root key, current first."""
        return self._jwks
