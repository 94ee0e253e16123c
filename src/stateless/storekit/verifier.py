"""Offline verification of App Store JWS (StoreKit 2 transactions, Server Notifications V2).

Apple's app-store-server-library does the real work: x5c chain of exactly three certificates up
to a trusted root, the Apple OIDs on the intermediate (1.2.840.113635.100.6.2.1) and the leaf
(1.2.840.113635.100.6.11.1), ES256 only, bundle id, app Apple id and environment. Its verifier is
synchronous and CPU-bound, so every call runs in a worker thread.

Environment: one tenant serves both Production and Sandbox. We read the (unverified) environment
field of the payload only to choose which verifier to run; that verifier then checks the signed
value again, so a forged environment still fails. Xcode / LocalTesting data is unsigned by Apple
and always refused (the library would skip the signature for those).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.models.JWSRenewalInfoDecodedPayload import (
    JWSRenewalInfoDecodedPayload,
)
from appstoreserverlibrary.models.JWSTransactionDecodedPayload import (
    JWSTransactionDecodedPayload,
)
from appstoreserverlibrary.models.ResponseBodyV2DecodedPayload import (
    ResponseBodyV2DecodedPayload,
)
from appstoreserverlibrary.signed_data_verifier import (
    SignedDataVerifier,
    VerificationException,
    VerificationStatus,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

INTERMEDIATE_OID = "1.2.840.113635.100.6.2.1"
LEAF_OID = "1.2.840.113635.100.6.11.1"
CERT_SUFFIXES = (".pem", ".cer", ".crt", ".der")
# A StoreKit JWS is a few kB; refuse absurd inputs before parsing anything.
MAX_JWS_CHARS = 128 * 1024

_REASONS: dict[VerificationStatus, str] = {
    VerificationStatus.VERIFICATION_FAILURE: "signature_invalid",
    VerificationStatus.INVALID_APP_IDENTIFIER: "wrong_bundle_id",
    VerificationStatus.INVALID_CERTIFICATE: "certificate_invalid",
    VerificationStatus.INVALID_CHAIN_LENGTH: "certificate_chain_invalid",
    VerificationStatus.INVALID_CHAIN: "certificate_chain_invalid",
    VerificationStatus.INVALID_ENVIRONMENT: "wrong_environment",
    VerificationStatus.RETRYABLE_VERIFICATION_FAILURE: "signature_invalid",
}

_ENVIRONMENTS = {"Production": Environment.PRODUCTION, "Sandbox": Environment.SANDBOX}


class SignedDataInvalid(Exception):
    """The JWS could not be verified; `reason` is a stable snake_case code safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _certificates_in(raw: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" in raw:
        return x509.load_pem_x509_certificates(raw)
    return [x509.load_der_x509_certificate(raw)]


def load_root_certificates(extra_dir: Path | None) -> list[bytes]:
    """DER bytes of the bundled Apple root(s) plus every certificate file in `extra_dir`."""
    found: list[bytes] = []
    bundled = resources.files("stateless").joinpath("apple_roots")
    blobs = [
        entry.read_bytes()
        for entry in bundled.iterdir()
        if entry.name.lower().endswith(CERT_SUFFIXES)
    ]
    if extra_dir is not None:
        if not Path(extra_dir).is_dir():
            raise RuntimeError(f"APPLE_ROOT_CERTS_DIR {extra_dir} is not a directory")
        blobs.extend(
            path.read_bytes()
            for path in sorted(Path(extra_dir).iterdir())
            if path.is_file() and path.name.lower().endswith(CERT_SUFFIXES)
        )
    for blob in blobs:
        for cert in _certificates_in(blob):
            der = cert.public_bytes(Encoding.DER)
            if der not in found:
                found.append(der)
    return found


def _b64url_json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def peek_payload(token: str) -> dict[str, Any]:
    """The unverified JWS payload, only to route to the right verifier; raises on junk."""
    if not token or len(token) > MAX_JWS_CHARS:
        raise SignedDataInvalid("malformed_jws")
    parts = token.split(".")
    if len(parts) != 3:
        raise SignedDataInvalid("malformed_jws")
    try:
        header = _b64url_json(parts[0])
        payload = _b64url_json(parts[1])
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise SignedDataInvalid("malformed_jws") from exc
    if header.get("alg") != "ES256":
        raise SignedDataInvalid("unsupported_algorithm")
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not x5c:
        raise SignedDataInvalid("missing_certificate_chain")
    if len(x5c) != 3:
        raise SignedDataInvalid("certificate_chain_invalid")
    return payload


def _reason(exc: VerificationException) -> str:
    cause = exc.__cause__
    if exc.status == VerificationStatus.VERIFICATION_FAILURE and (
        type(cause).__name__ == "X509StoreContextError"
    ):
        return "certificate_chain_untrusted"
    return _REASONS.get(exc.status, "signature_invalid")


def _environment(raw: object) -> Environment:
    env = _ENVIRONMENTS.get(raw) if isinstance(raw, str) else None
    if env is None:
        raise SignedDataInvalid("wrong_environment")
    return env


@dataclass(frozen=True, slots=True)
class VerifiedNotification:
    payload: ResponseBodyV2DecodedPayload
    transaction: JWSTransactionDecodedPayload | None
    renewal: JWSRenewalInfoDecodedPayload | None


class StoreKitVerifier:
    """Holds the trusted roots; builds the library's verifier per tenant and environment."""

    def __init__(self, root_certificates: list[bytes]) -> None:
        self.root_certificates = list(root_certificates)

    def _library(
        self, environment: Environment, bundle_id: str | None, app_apple_id: int | None
    ) -> SignedDataVerifier:
        if not bundle_id:
            raise SignedDataInvalid("bundle_id_not_configured")
        if environment == Environment.PRODUCTION and app_apple_id is None:
            raise SignedDataInvalid("app_apple_id_not_configured")
        return SignedDataVerifier(
            self.root_certificates,
            False,  # no OCSP: no outbound calls from the request path
            environment,
            bundle_id,
            app_apple_id,
        )

    def _transaction_sync(
        self, token: str, bundle_id: str | None, app_apple_id: int | None
    ) -> JWSTransactionDecodedPayload:
        env = _environment(peek_payload(token).get("environment"))
        verifier = self._library(env, bundle_id, app_apple_id)
        try:
            decoded = verifier.verify_and_decode_signed_transaction(token)
        except VerificationException as exc:
            raise SignedDataInvalid(_reason(exc)) from None
        except Exception:  # the library's decoders raise plain errors on odd shapes
            raise SignedDataInvalid("malformed_payload") from None
        if not decoded.transactionId or not decoded.originalTransactionId:
            raise SignedDataInvalid("malformed_payload")
        return decoded

    def _notification_sync(
        self, token: str, bundle_id: str | None, app_apple_id: int | None
    ) -> VerifiedNotification:
        payload = peek_payload(token)
        data = payload.get("data") or payload.get("summary") or {}
        env = _environment(data.get("environment") if isinstance(data, dict) else None)
        verifier = self._library(env, bundle_id, app_apple_id)
        try:
            decoded = verifier.verify_and_decode_notification(token)
            transaction = renewal = None
            if decoded.data and decoded.data.signedTransactionInfo:
                peek_payload(decoded.data.signedTransactionInfo)
                transaction = verifier.verify_and_decode_signed_transaction(
                    decoded.data.signedTransactionInfo
                )
            if decoded.data and decoded.data.signedRenewalInfo:
                peek_payload(decoded.data.signedRenewalInfo)
                renewal = verifier.verify_and_decode_renewal_info(decoded.data.signedRenewalInfo)
        except SignedDataInvalid:
            raise
        except VerificationException as exc:
            raise SignedDataInvalid(_reason(exc)) from None
        except Exception:
            raise SignedDataInvalid("malformed_payload") from None
        if not decoded.notificationUUID or not decoded.rawNotificationType:
            raise SignedDataInvalid("malformed_payload")
        return VerifiedNotification(decoded, transaction, renewal)

    async def verify_transaction(
        self, token: str, bundle_id: str | None, app_apple_id: int | None
    ) -> JWSTransactionDecodedPayload:
        """Verify a StoreKit 2 signed transaction; raises SignedDataInvalid with a reason."""
        return await asyncio.to_thread(self._transaction_sync, token, bundle_id, app_apple_id)

    def _status_sync(
        self,
        signed_transaction: str,
        signed_renewal: str | None,
        bundle_id: str | None,
        app_apple_id: int | None,
    ) -> tuple[JWSTransactionDecodedPayload, JWSRenewalInfoDecodedPayload | None]:
        transaction = self._transaction_sync(signed_transaction, bundle_id, app_apple_id)
        if not signed_renewal:
            return transaction, None
        env = _environment(peek_payload(signed_renewal).get("environment"))
        verifier = self._library(env, bundle_id, app_apple_id)
        try:
            renewal = verifier.verify_and_decode_renewal_info(signed_renewal)
        except VerificationException as exc:
            raise SignedDataInvalid(_reason(exc)) from None
        except Exception:
            raise SignedDataInvalid("malformed_payload") from None
        return transaction, renewal

    async def verify_status(
        self,
        signed_transaction: str,
        signed_renewal: str | None,
        bundle_id: str | None,
        app_apple_id: int | None,
    ) -> tuple[JWSTransactionDecodedPayload, JWSRenewalInfoDecodedPayload | None]:
        """Verify a subscription status (App Store Server API): transaction and renewal info."""
        return await asyncio.to_thread(
            self._status_sync, signed_transaction, signed_renewal, bundle_id, app_apple_id
        )

    async def verify_notification(
        self, token: str, bundle_id: str | None, app_apple_id: int | None
    ) -> VerifiedNotification:
        """Verify a notification and the transaction / renewal info JWS nested in it."""
        return await asyncio.to_thread(self._notification_sync, token, bundle_id, app_apple_id)
