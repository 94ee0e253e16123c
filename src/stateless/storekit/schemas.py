from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from stateless.kit.wire.bounds import BoundedInput
from stateless.kit.wire.timestamps import Timestamp
from stateless.storekit.verifier import MAX_JWS_CHARS

# A legacy app receipt is base64 of a PKCS#7 blob: tens of kB, rarely more than a few hundred.
MAX_RECEIPT_CHARS = 2 * 1024 * 1024

ValidationStatus = Literal["valid", "expired", "revoked", "invalid"]


class ValidateReceiptIn(BoundedInput):
    signed_transaction: str | None = Field(
        default=None,
        max_length=MAX_JWS_CHARS,
        description="StoreKit 2 `Transaction.jwsRepresentation` (JWS).",
    )
    receipt_data: str | None = Field(
        default=None,
        max_length=MAX_RECEIPT_CHARS,
        description="Legacy base64 app receipt (`Bundle.main.appStoreReceiptURL`).",
    )
    affiliate_code: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Referral code: a valid purchase records one `purchase` conversion.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ValidateReceiptIn:
        if (self.signed_transaction is None) == (self.receipt_data is None):
            raise ValueError("send exactly one of signed_transaction or receipt_data")
        return self


class ValidateReceiptOut(BaseModel):
    status: ValidationStatus
    is_active: bool
    product_id: str | None = None
    expires_at: Timestamp | None = None
    environment: Literal["production", "sandbox"] | None = None
    tenant: str
    reason: str | None = Field(default=None, description="Why the status is not `valid`.")
    grace_period_expires_at: Timestamp | None = Field(
        default=None, description="Set while a lapsed subscription is in its billing grace period."
    )
    affiliate: Literal["recorded", "duplicate", "invalid_code", "rejected"] | None = Field(
        default=None, description="Outcome of `affiliate_code`, when one was sent."
    )


class NotificationIn(BoundedInput):
    signedPayload: str = Field(max_length=MAX_JWS_CHARS)  # Apple's field name


class NotificationOut(BaseModel):
    status: Literal["processed", "ignored", "duplicate"]
    notification_type: str
