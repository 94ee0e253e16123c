"""The Stripe side, on the official `stripe` library: Checkout Sessions, subscription reads, the
webhook signature, and what each webhook event says about a source (SPEC 13)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import stripe

from stateless.entitlements.catalog import token_or_none
from stateless.entitlements.service import minor_amount
from stateless.entitlements.states import SourceFacts, State

# Stripe's webhook tolerance: a signature older than 5 minutes is refused (replays).
SIGNATURE_TOLERANCE_SECONDS = 300
# past_due: access continues while Stripe retries the payment, at most this long.
PAST_DUE_GRACE = timedelta(days=14)
MAX_ID = 255
SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
HANDLED_EVENTS = (
    "checkout.session.completed",
    *SUBSCRIPTION_EVENTS,
    "invoice.paid",
    "invoice.payment_failed",
    "charge.refunded",
)


class StripeUnavailable(Exception):
    """Stripe's API did not answer usefully; `detail` is safe to show."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _id(value: object) -> str | None:
    """An id from Stripe's JSON (a string, or an expanded object with an id)."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str) and 0 < len(value) <= MAX_ID and value.isprintable():
        return value
    return None


def _ts(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 253402300800:
        return None
    return datetime.fromtimestamp(value, UTC)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def verify_signature(payload: bytes, header: str, secret: str) -> bool:
    """Stripe-Signature checked by the library (any v1 may match, 5-minute tolerance)."""
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), header, secret, SIGNATURE_TOLERANCE_SECONDS
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError):
        return False
    return True


def subscription_facts(
    sub: dict[str, Any], *, event: str, event_at: datetime
) -> SourceFacts | None:
    """What a subscription object says (the period from its item, as current API versions
    put it, else from the subscription itself)."""
    sub_id = _id(sub.get("id"))
    if sub_id is None:
        return None
    items = _dict(sub.get("items")).get("data") or []
    item = _dict(items[0]) if isinstance(items, list) and items else {}
    price = _dict(item.get("price")) or _dict(sub.get("plan"))
    price_id = _id(price.get("id"))
    if price_id is None:
        return None
    period_end = _ts(item.get("current_period_end")) or _ts(sub.get("current_period_end"))
    status = sub.get("status")
    cancel_at_end = bool(sub.get("cancel_at_period_end"))
    state: State
    grace = None
    if status in ("active", "trialing"):
        state = "cancelled" if cancel_at_end else "active"
    elif status == "past_due":
        state = "grace"
        grace = min(event_at + PAST_DUE_GRACE, period_end or event_at + PAST_DUE_GRACE)
    elif status == "incomplete":
        state = "billing_retry"
    else:  # unpaid, canceled, incomplete_expired, paused
        state = "expired"
        ended = _ts(sub.get("ended_at"))
        if ended is not None and (period_end is None or ended < period_end):
            period_end = ended
    metadata = _dict(sub.get("metadata"))
    return SourceFacts(
        store="stripe",
        reference=sub_id,
        product_id=price_id,
        parent_product_id=_id(price.get("product")),
        state=state,
        environment="production" if sub.get("livemode") else "sandbox",
        event_at=event_at,
        event=event,
        subject=token_or_none(metadata.get("app_account_token")),
        period_type="trial" if status == "trialing" else "normal",
        will_renew=status in ("active", "trialing", "past_due") and not cancel_at_end,
        purchased_at=_ts(sub.get("start_date")) or _ts(sub.get("created")),
        period_ends_at=period_end,
        grace_ends_at=grace,
        customer=_id(sub.get("customer")),
    )


def invoice_subscription(invoice: dict[str, Any]) -> str | None:
    parent = _dict(invoice.get("parent"))
    details = _dict(parent.get("subscription_details"))
    return _id(details.get("subscription")) or _id(invoice.get("subscription"))


def invoice_payment(invoice: dict[str, Any]) -> str | None:
    payments = _dict(invoice.get("payments")).get("data") or []
    for entry in payments if isinstance(payments, list) else []:
        intent = _id(_dict(_dict(entry).get("payment")).get("payment_intent"))
        if intent is not None:
            return intent
    return _id(invoice.get("payment_intent"))


def invoice_revenue(invoice: dict[str, Any]) -> tuple[int, str] | None:
    amount, currency = invoice.get("amount_paid"), invoice.get("currency")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        return None
    if not isinstance(currency, str) or len(currency) != 3:
        return None
    converted = minor_amount(Decimal(0), currency)
    return (amount, converted[1]) if converted is not None else None


def payment_facts(session: dict[str, Any], *, event: str, event_at: datetime) -> SourceFacts | None:
    """A one-time Checkout payment: a purchase that never lapses."""
    intent = _id(session.get("payment_intent"))
    metadata = _dict(session.get("metadata"))
    price_id = _id(metadata.get("price_id"))
    if intent is None or price_id is None:
        return None
    amount, currency = session.get("amount_total"), session.get("currency")
    revenue = None
    if isinstance(amount, int) and not isinstance(amount, bool) and isinstance(currency, str):
        converted = minor_amount(Decimal(0), currency)
        revenue = (amount, converted[1]) if converted is not None and amount > 0 else None
    return SourceFacts(
        store="stripe",
        reference=intent,
        product_id=price_id,
        state="active",
        environment="production" if session.get("livemode") else "sandbox",
        event_at=event_at,
        event=event,
        subject=token_or_none(session.get("client_reference_id"))
        or token_or_none(metadata.get("app_account_token")),
        purchased_at=event_at,
        customer=_id(session.get("customer")),
        payment=intent,
        revenue=revenue,
    )


@dataclass(frozen=True, slots=True)
class CheckoutCreated:
    url: str
    expires_at: datetime


class StripeGateway:
    """Built once per app: the API base and one HTTP client; a StripeClient per tenant key."""

    def __init__(self, api_url: str, timeout_seconds: float) -> None:
        self.api_url = api_url
        self.http = stripe.HTTPXClient(timeout=timeout_seconds)

    def _client(self, secret_key: str) -> stripe.StripeClient:
        return stripe.StripeClient(
            secret_key,
            base_addresses={"api": self.api_url},
            http_client=self.http,
            max_network_retries=2,
        )

    async def create_checkout(
        self,
        secret_key: str,
        *,
        mode: str,
        price_id: str,
        token: str,
        success_url: str,
        cancel_url: str,
    ) -> CheckoutCreated:
        metadata = {"app_account_token": token, "price_id": price_id}
        params: dict[str, Any] = {
            "mode": mode,
            "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": token,
            "metadata": metadata,
        }
        if mode == "subscription":
            params["subscription_data"] = {"metadata": metadata}
        else:
            params["payment_intent_data"] = {"metadata": metadata}
        try:
            session = await self._client(secret_key).v1.checkout.sessions.create_async(params)  # type: ignore[arg-type]
        except stripe.StripeError as exc:
            raise StripeUnavailable(_stripe_detail(exc)) from None
        url, expires = session.url, _ts(session.expires_at)
        if not isinstance(url, str) or expires is None:
            raise StripeUnavailable("Stripe answered a Checkout Session without a URL")
        return CheckoutCreated(url=url, expires_at=expires)

    async def subscription(self, secret_key: str, subscription_id: str) -> dict[str, Any] | None:
        try:
            found = await self._client(secret_key).v1.subscriptions.retrieve_async(subscription_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise StripeUnavailable(_stripe_detail(exc)) from None
        except stripe.StripeError as exc:
            raise StripeUnavailable(_stripe_detail(exc)) from None
        return found.to_dict()

    async def aclose(self) -> None:
        await self.http.close_async()  # type: ignore[no-untyped-call]


def _stripe_detail(exc: stripe.StripeError) -> str:
    status = exc.http_status or "no answer"
    kind = type(exc).__name__
    return f"Stripe's API failed ({kind}, {status})"
