"""The privacy kit: keyed hashes for identifiers we look up, AES-GCM for values we must read back.

Every key is derived from SECRET_KEY per purpose and tenant (HKDF-SHA256), so a leaked hash of
one tenant says nothing about another, and ciphertexts name the key id that sealed them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_CIPHER_VERSION = "v1"


class DecryptionError(ValueError):
    """The ciphertext was tampered with, sealed for another context, or by an unknown key."""


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id_of(secret: str) -> str:
    """A short public fingerprint of a root secret, stored beside ciphertexts for rotation."""
    return hashlib.sha256(b"stateless-key-id:" + secret.encode()).hexdigest()[:8]


class PrivacyKit:
    """Derives per-purpose, per-tenant keys from the root secret(s); holds no other state."""

    def __init__(self, secret_key: str, previous_secret_keys: Sequence[str] = ()) -> None:
        self._current = secret_key.encode()
        self._current_id = key_id_of(secret_key)
        self._roots = {key_id_of(k): k.encode() for k in (*previous_secret_keys, secret_key)}
        self._derived: dict[tuple[str, str, str, str], bytes] = {}

    def key_ids(self) -> list[str]:
        """The root keys' ids: the current one first, then PREVIOUS_SECRET_KEYS in their order."""
        return [self._current_id, *(kid for kid in self._roots if kid != self._current_id)]

    def per_root(self) -> list[PrivacyKit]:
        """One kit per root key, the current first, each hashing and sealing as if its root were
        current: the keyed hashes a row may carry from before a rotation (erasure on request
        must find those rows too). They share this kit's derived-key cache."""
        kits = []
        for key_id in self.key_ids():
            kit = copy.copy(self)
            kit._current, kit._current_id = self._roots[key_id], key_id
            kits.append(kit)
        return kits

    def derive(self, purpose: str, tenant: str = "", *, key_id: str | None = None) -> bytes:
        kid = key_id or self._current_id
        cache_key = (kid, purpose, tenant, "k")
        cached = self._derived.get(cache_key)
        if cached is not None:
            return cached
        root = self._roots.get(kid)
        if root is None:
            raise DecryptionError("unknown key id")
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"stateless-backend/v1",
            info=f"{purpose}\x00{tenant}".encode(),
        ).derive(root)
        if len(self._derived) < 100_000:
            self._derived[cache_key] = derived
        return derived

    def keyed_hash(self, purpose: str, tenant: str, value: str | bytes) -> str:
        """HMAC-SHA256 of an identifier: stable for lookups, useless without SECRET_KEY."""
        data = value.encode() if isinstance(value, str) else value
        digest = hmac.new(self.derive(purpose, tenant), data, hashlib.sha256).digest()
        return _b64e(digest)

    def encrypt(self, purpose: str, tenant: str, plaintext: bytes) -> str:
        nonce = os.urandom(12)
        aad = f"{purpose}\x00{tenant}".encode()
        sealed = AESGCM(self.derive(purpose, tenant)).encrypt(nonce, plaintext, aad)
        return f"{_CIPHER_VERSION}.{self._current_id}.{_b64e(nonce + sealed)}"

    def decrypt(self, purpose: str, tenant: str, token: str) -> bytes:
        try:
            version, kid, payload = token.split(".", 2)
            raw = _b64d(payload)
        except ValueError as exc:
            raise DecryptionError("malformed ciphertext") from exc
        if version != _CIPHER_VERSION or len(raw) < 12 + 16:
            raise DecryptionError("malformed ciphertext")
        aad = f"{purpose}\x00{tenant}".encode()
        try:
            return AESGCM(self.derive(purpose, tenant, key_id=kid)).decrypt(raw[:12], raw[12:], aad)
        except InvalidTag as exc:
            raise DecryptionError("ciphertext does not verify") from exc

    def encrypt_text(self, purpose: str, tenant: str, text: str) -> str:
        return self.encrypt(purpose, tenant, text.encode())

    def decrypt_text(self, purpose: str, tenant: str, token: str) -> str:
        return self.decrypt(purpose, tenant, token).decode()
