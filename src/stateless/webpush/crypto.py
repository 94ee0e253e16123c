"""RFC 8291 message encryption (aes128gcm) and RFC 8292 VAPID, on `cryptography` and PyJWT.

Each message gets a fresh ephemeral ECDH key pair and a random salt, as RFC 8291 asks; the
whole payload fits one record (push services accept at most 4096 bytes on the wire).
"""

from __future__ import annotations

import base64
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAX_RECORD_BYTES = 4096  # the largest body a push service must accept (RFC 8030 7.2)
_SALT_BYTES = 16
_KEY_BYTES = 65  # uncompressed P-256 point
HEADER_BYTES = _SALT_BYTES + 4 + 1 + _KEY_BYTES
TAG_BYTES = 16
# The plaintext that fits: the record holds payload, one delimiter byte and the GCM tag.
MAX_PLAINTEXT_BYTES = MAX_RECORD_BYTES - HEADER_BYTES - 1 - TAG_BYTES
VAPID_TOKEN_LIFETIME_SECONDS = 12 * 3600  # RFC 8292: at most 24 h
VAPID_REFRESH_MARGIN_SECONDS = 3600


class InvalidSubscriptionKey(ValueError):
    """p256dh is not a P-256 point or auth is not a 16-byte secret."""


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Browsers send base64url without padding; standard base64 is accepted too."""
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (ValueError, TypeError) as exc:
        raise InvalidSubscriptionKey("not base64url") from exc


def load_user_agent_key(p256dh: str) -> ec.EllipticCurvePublicKey:
    return _load_point(p256dh)[0]


def load_auth_secret(auth: str) -> bytes:
    raw = b64url_decode(auth)
    if len(raw) != 16:
        raise InvalidSubscriptionKey("auth must be a 16-byte secret")
    return raw


def _raw_point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


_CEK_INFO = b"Content-Encoding: aes128gcm\x00"
_NONCE_INFO = b"Content-Encoding: nonce\x00"
_RECORD_HEADER = struct.pack("!IB", MAX_RECORD_BYTES, _KEY_BYTES)


@dataclass(frozen=True, slots=True)
class UserAgentKeys:
    """A subscription's keys, parsed and checked once: its P-256 point (object and raw bytes)
    and its auth secret."""

    public_key: ec.EllipticCurvePublicKey
    raw: bytes
    auth_secret: bytes

    @classmethod
    def load(cls, p256dh: str, auth: str) -> UserAgentKeys:
        public_key, raw = _load_point(p256dh)
        return cls(public_key, raw, load_auth_secret(auth))


def _load_point(p256dh: str) -> tuple[ec.EllipticCurvePublicKey, bytes]:
    raw = b64url_decode(p256dh)
    if len(raw) != _KEY_BYTES or raw[0] != 0x04:
        raise InvalidSubscriptionKey("p256dh must be an uncompressed P-256 point (65 bytes)")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw), raw
    except ValueError as exc:
        raise InvalidSubscriptionKey("p256dh is not a point on P-256") from exc


def encrypt_payload(
    plaintext: bytes,
    keys: UserAgentKeys,
    *,
    salt: bytes | None = None,
    ephemeral: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """The aes128gcm body for one subscription (RFC 8291 section 3.4, RFC 8188 section 2).

    A fresh ephemeral key pair and salt per call (RFC 8291: never reused across messages);
    `salt` and `ephemeral` are parameters only to reproduce the RFC's test vector."""
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        raise ValueError(f"payload exceeds {MAX_PLAINTEXT_BYTES} bytes")
    salt = salt or os.urandom(_SALT_BYTES)
    ephemeral = ephemeral or ec.generate_private_key(ec.SECP256R1())
    as_public = _raw_point(ephemeral.public_key())
    shared = ephemeral.exchange(ec.ECDH(), keys.public_key)
    ikm = _hkdf(keys.auth_secret, shared, b"WebPush: info\x00" + keys.raw + as_public, 32)
    cek = _hkdf(salt, ikm, _CEK_INFO, 16)
    nonce = _hkdf(salt, ikm, _NONCE_INFO, 12)
    record = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)
    return b"".join((salt, _RECORD_HEADER, as_public, record))


@dataclass(frozen=True, slots=True)
class VapidKeys:
    """A tenant's VAPID key pair: the PEM is sealed at rest, the public point is published."""

    private_pem: str
    public_key: str  # uncompressed point, base64url without padding

    @classmethod
    def generate(cls) -> VapidKeys:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        return cls(pem, b64url_encode(_raw_point(key.public_key())))


Clock = Callable[[], float]


class VapidSigner:
    """VAPID JWTs (ES256, aud = push service origin, exp <= 24 h) cached per tenant and origin."""

    def __init__(self, clock: Clock = time.time, max_entries: int = 10_000) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._tokens: dict[tuple[str, str, str, str], tuple[float, str]] = {}
        self._keys: dict[str, ec.EllipticCurvePrivateKey] = {}

    def _key(self, private_pem: str) -> ec.EllipticCurvePrivateKey:
        key = self._keys.get(private_pem)
        if key is None:
            loaded = serialization.load_pem_private_key(private_pem.encode(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError("the VAPID key is not an EC private key")
            if len(self._keys) >= 1000:
                self._keys.clear()
            self._keys[private_pem] = key = loaded
        return key

    def authorization(self, app_id: str, keys: VapidKeys, contact: str, origin: str) -> str:
        """The `Authorization: vapid t=..., k=...` value for a request to `origin`."""
        now = self.clock()
        cache_key = (app_id, keys.public_key, contact, origin)
        cached = self._tokens.get(cache_key)
        if cached is None or cached[0] - now < VAPID_REFRESH_MARGIN_SECONDS:
            expires = int(now) + VAPID_TOKEN_LIFETIME_SECONDS
            token = jwt.encode(
                {"aud": origin, "exp": expires, "sub": contact},
                self._key(keys.private_pem),
                algorithm="ES256",
            )
            if len(self._tokens) >= self.max_entries:
                self._tokens.clear()
            cached = (float(expires), token)
            self._tokens[cache_key] = cached
        return f"vapid t={cached[1]}, k={keys.public_key}"
