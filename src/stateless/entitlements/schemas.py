"""Request and response bodies of the entitlements API (SPEC 13)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from stateless.kit.wire.bounds import BoundedInput
from stateless.kit.wire.timestamps import Timestamp
from stateless.storekit.verifier import MAX_JWS_CHARS

TOKEN_FIELD = Field(
    min_length=1,
    max_length=64,
    description="The app's random UUID for this account, passed to StoreKit as "
    "`appAccountToken` and to Stripe Checkout. Kept only as a keyed hash (and sealed for "
    "your webhooks).",
    examples=["6f1c7a2e-4b8d-4c1e-9a3f-2d5e8b7c9a10"],
)


class CheckIn(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    app_account_token: str = TOKEN_FIELD


class TransactionIn(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    signed_transaction: str = Field(
        min_length=1,
        max_length=MAX_JWS_CHARS,
        description="A StoreKit 2 `Transaction.jwsRepresentation` (send every one of "
        "`Transaction.currentEntitlements` on launch and restore).",
    )
    app_account_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Only for purchases made before the app set `appAccountToken`; when both "
        "are present they must be equal (409 `subject_mismatch`).",
    )


class EntitlementOut(BaseModel):
    is_active: bool
    expires_at: Timestamp | None = Field(description="End of the paid period; null: never.")
    grace_period_expires_at: Timestamp | None
    product_id: str | None
    store: Literal["app_store", "stripe"] | None
    will_renew: bool
    period_type: Literal["normal", "trial", "intro"] | None
    purchased_at: Timestamp | None
    environment: Literal["production", "sandbox"] | None


class CheckOut(BaseModel):
    entitlements: dict[str, EntitlementOut] = Field(
        description="Every entitlement of the app's map; never-purchased ones are inactive "
        "with null fields."
    )
    checked_at: Timestamp


class CheckoutIn(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    app_account_token: str = TOKEN_FIELD
    price_id: str = Field(
        min_length=1, max_length=200, description="A Stripe price id of the entitlement map."
    )
    success_url: str = Field(min_length=1, max_length=2048)
    cancel_url: str = Field(min_length=1, max_length=2048)
    mode: Literal["subscription", "payment"] = Field(
        default="subscription", description="`payment` for a one-time purchase."
    )


class CheckoutOut(BaseModel):
    url: str = Field(description="Redirect the browser here (Stripe-hosted checkout).")
    expires_at: Timestamp


class StripeWebhookOut(BaseModel):
    status: Literal["processed", "ignored", "duplicate"]
    event_type: str


class EntitlementProducts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    products: list[str] = Field(
        max_length=100,
        description="App Store product ids and Stripe price or product ids granting it.",
    )


class EntitlementMapIn(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    entitlements: dict[str, EntitlementProducts] = Field(max_length=50)


class EntitlementMapOut(BaseModel):
    tenant: str
    entitlements: dict[str, EntitlementProducts]


class ReconcileOut(BaseModel):
    status: Literal["completed", "not_configured", "failed"]
    checked: int = Field(description="Sources asked about (near lapse or in a billing state).")
    updated: int = Field(description="Sources whose state changed or was extended.")
    recovered: int = Field(description="Missed notifications applied from the history.")
    detail: str | None = None


class StatsDay(BaseModel):
    day: date
    entitlement: str
    store: str
    product_id: str
    new: int
    renewals: int
    cancellations: int
    billing_issues: int
    expirations: int
    refunds: int
    revenue: dict[str, str] = Field(description="Per ISO 4217 currency, a decimal string.")


class StatsOut(BaseModel):
    tenant: str
    since: date
    until: date
    days: list[StatsDay]
    active: dict[str, int] = Field(description="Subjects entitled now, per entitlement.")
