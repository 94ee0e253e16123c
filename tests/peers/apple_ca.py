"""A stand-in for Apple's StoreKit signing PKI, for tests only.

root -> intermediate (OID 1.2.840.113635.100.6.2.1) -> leaf (OID 1.2.840.113635.100.6.11.1),
ES256 / P-256, shaped like Apple's so the real app-store-server-library verifies what it signs.
The backend trusts this root only when a test points APPLE_ROOT_CERTS_DIR at `write_root()`.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

INTERMEDIATE_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.2.1")
LEAF_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.11.1")
ASN1_NULL = b"\x05\x00"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test PKI (not Apple)"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    oid: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=30))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if oid is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, ASN1_NULL), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


@dataclass
class TestAppleCA:
    """A root, an intermediate and a leaf; `sign()` makes JWS the way the App Store does."""

    name: str = "Test Apple Root CA"
    # Turn off to build chains Apple's verifier must refuse (missing marker extensions).
    intermediate_oid: bool = True
    leaf_oid: bool = True
    root_key: ec.EllipticCurvePrivateKey = field(init=False)
    root: x509.Certificate = field(init=False)
    intermediate_key: ec.EllipticCurvePrivateKey = field(init=False)
    intermediate: x509.Certificate = field(init=False)
    leaf_key: ec.EllipticCurvePrivateKey = field(init=False)
    leaf: x509.Certificate = field(init=False)

    __test__ = False  # not a pytest class

    def __post_init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _cert(self.name, self.root_key, None, ca=True, oid=None)
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = _cert(
            "Test Apple WWDR CA",
            self.intermediate_key,
            (self.root, self.root_key),
            ca=True,
            oid=INTERMEDIATE_OID if self.intermediate_oid else None,
        )
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf = _cert(
            "Test StoreKit Signing",
            self.leaf_key,
            (self.intermediate, self.intermediate_key),
            ca=False,
            oid=LEAF_OID if self.leaf_oid else None,
        )

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def write_root(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "test-root.pem"
        path.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))
        return path

    def x5c(self) -> list[str]:
        return [_b64(self.leaf), _b64(self.intermediate), _b64(self.root)]

    def sign(
        self,
        payload: dict[str, Any],
        *,
        x5c: list[str] | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        header: dict[str, Any] = {"x5c": self.x5c() if x5c is None else x5c}
        header.update(headers or {})
        return jwt.encode(payload, key or self.leaf_key, algorithm="ES256", headers=header)


def now_ms(offset: timedelta = timedelta()) -> int:
    return int((time.time() + offset.total_seconds()) * 1000)


def transaction(
    bundle_id: str,
    *,
    transaction_id: str | None = None,
    original_transaction_id: str | None = None,
    product_id: str = "com.example.pro.monthly",
    kind: str = "Auto-Renewable Subscription",
    expires_in: timedelta | None = timedelta(days=30),
    environment: str = "Sandbox",
    revoked: bool = False,
    price: int = 9990,
    currency: str = "EUR",
) -> dict[str, Any]:
    """A StoreKit 2 JWSTransaction payload (Apple's field names and millisecond dates)."""
    tx_id = transaction_id or str(2000000000 + uuid.uuid4().int % 10**9)
    payload: dict[str, Any] = {
        "transactionId": tx_id,
        "originalTransactionId": original_transaction_id or tx_id,
        "webOrderLineItemId": str(uuid.uuid4().int % 10**12),
        "bundleId": bundle_id,
        "productId": product_id,
        "subscriptionGroupIdentifier": "21000000",
        "purchaseDate": now_ms(-timedelta(days=1)),
        "originalPurchaseDate": now_ms(-timedelta(days=1)),
        "quantity": 1,
        "type": kind,
        "inAppOwnershipType": "PURCHASED",
        "signedDate": now_ms(),
        "environment": environment,
        "transactionReason": "PURCHASE",
        "storefront": "DEU",
        "storefrontId": "143443",
        "price": price,
        "currency": currency,
    }
    if expires_in is not None:
        payload["expiresDate"] = now_ms(expires_in)
    if revoked:
        payload["revocationDate"] = now_ms(-timedelta(minutes=5))
        payload["revocationReason"] = 0
    return payload


def notification(
    bundle_id: str,
    notification_type: str,
    *,
    signed_transaction: str | None = None,
    signed_renewal: str | None = None,
    subtype: str | None = None,
    environment: str = "Sandbox",
    app_apple_id: int | None = None,
    notification_uuid: str | None = None,
) -> dict[str, Any]:
    """A ResponseBodyV2DecodedPayload (the decoded signedPayload of a V2 notification)."""
    data: dict[str, Any] = {"bundleId": bundle_id, "environment": environment}
    if app_apple_id is not None:
        data["appAppleId"] = app_apple_id
    if signed_transaction is not None:
        data["signedTransactionInfo"] = signed_transaction
    if signed_renewal is not None:
        data["signedRenewalInfo"] = signed_renewal
    payload: dict[str, Any] = {
        "notificationType": notification_type,
        "notificationUUID": notification_uuid or str(uuid.uuid4()),
        "data": data,
        "version": "2.0",
        "signedDate": now_ms(),
    }
    if subtype:
        payload["subtype"] = subtype
    return payload


def renewal_info(
    original_transaction_id: str,
    *,
    grace_for: timedelta | None = None,
    environment: str = "Sandbox",
    product_id: str = "com.example.pro.monthly",
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "originalTransactionId": original_transaction_id,
        "autoRenewProductId": product_id,
        "productId": product_id,
        "autoRenewStatus": 1,
        "isInBillingRetryPeriod": grace_for is not None,
        "signedDate": now_ms(),
        "environment": environment,
    }
    if grace_for is not None:
        payload["gracePeriodExpiresDate"] = now_ms(grace_for)
    return payload
