"""A local peer speaking the part of Stripe's API the entitlements feature uses, and a webhook
signer written from Stripe's documented scheme (not the stripe library's own helper).

The official `stripe` library talks to it unchanged:
`stripe.StripeClient(key, base_addresses={"api": peer.url}, http_client=stripe.HTTPXClient())`.
Requests are form-encoded with bracketed keys (`line_items[0][price]`,
`subscription_data[metadata][k]`); the peer parses them back into nested dicts and lists
(values stay strings, booleans are "true"/"false", as Stripe receives them).

- `POST /v1/checkout/sessions`, `GET /v1/checkout/sessions/{id}`, `GET /v1/subscriptions/{id}`
  (and GET on customers, invoices, payment intents, charges, prices, events), with top-level
  `expand[]`; Bearer secret key required (401 with Stripe's error JSON otherwise).
- Objects follow the current API (2025-03-31.basil and later): a subscription's period lives on
  its item, an invoice names its subscription under `parent.subscription_details` and its payment
  intents under `payments`.
- Scenario helpers (`complete_checkout`, `subscription_event`, `delete_subscription`,
  `invoice_paid`, `invoice_payment_failed`, `refund`) change the peer's state the way Stripe
  would and return the event Stripe would deliver; `signed_event()` turns one into the exact
  body and `Stripe-Signature` header of a delivery.

Renewals: `invoice_paid()` (billing_reason "subscription_cycle") rolls the item period forward by
the subscription's period. `invoice_payment_failed()` rolls it forward too and leaves an open
invoice (Stripe advances the period at renewal whether or not the payment succeeds: the
subscription is then `past_due` with the new period); a later `invoice_paid()` pays that open
invoice without rolling the period again.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.peers.webhook import Answer, Received, serve_http

API_VERSION = "2025-09-30.clover"
DAY = 86400
_ALNUM = string.ascii_letters + string.digits


def _id(prefix: str, length: int = 24) -> str:
    return f"{prefix}_" + "".join(secrets.choice(_ALNUM) for _ in range(length))


# -- form encoding --------------------------------------------------------------------------------

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


class FormError(ValueError):
    pass


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {k: _listify(v) for k, v in node.items()}
        if converted and all(k.isdigit() for k in converted):
            indexes = sorted(int(k) for k in converted)
            if indexes == list(range(len(indexes))):
                return [converted[str(i)] for i in indexes]
        return converted
    return node


def parse_form(encoded: str) -> dict[str, Any]:
    """`a[b][0][c]=v&e[]=x` -> {"a": {"b": [{"c": "v"}]}, "e": ["x"]} (Stripe's v1 encoding)."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True):
        match = _KEY.match(key)
        if match is None:
            raise FormError(f"Invalid parameter name: {key}")
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node: dict[str, Any] = root
        for i, segment in enumerate(path):
            if segment == "":
                segment = str(len(node))
            if i == len(path) - 1:
                if segment in node:
                    raise FormError(f"Duplicate parameter: {key}")
                node[segment] = value
            else:
                child = node.setdefault(segment, {})
                if not isinstance(child, dict):
                    raise FormError(f"Conflicting parameter: {key}")
                node = child
    result: dict[str, Any] = _listify(root)
    return result


# -- webhook signing ------------------------------------------------------------------------------


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Stripe's v1 scheme: hex HMAC-SHA256 keyed by the endpoint secret over `{t}.{body}`."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signed_event(
    event: dict[str, Any],
    secret: str,
    *,
    timestamp: int | None = None,
    extra_signatures: Sequence[str] = (),
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a webhook delivery of `event`.

    `extra_signatures` are further v1 values placed BEFORE the genuine one (as when an endpoint
    secret is being rolled: `compute_signature(old_secret, ts, body)`, or any hex string)."""
    body = json.dumps(event, indent=2).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    values = [*extra_signatures, compute_signature(secret, ts, body)]
    header = f"t={ts}," + ",".join(f"v1={value}" for value in values)
    return body, {"Stripe-Signature": header, "Content-Type": "application/json"}


# -- the peer -------------------------------------------------------------------------------------


@dataclass
class StripeRequest:
    method: str
    path: str  # without the query string
    params: dict[str, Any]  # the parsed form body (POST) or query string (GET)
    encoded: str  # that body or query string as sent
    headers: dict[str, str]  # lower-cased names
    status: int = 0  # what the peer answered


@dataclass
class CheckoutSession:
    params: dict[str, Any]  # what the client sent, parsed
    obj: dict[str, Any]  # the checkout.session object as it is now


@dataclass
class _Fault:
    status: int
    count: int
    should_retry: bool | None


class StripeApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type_, "message": message}
        if code is not None:
            self.body["code"] = code
            self.body["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param is not None:
            self.body["param"] = param


def _missing(param: str) -> StripeApiError:
    return StripeApiError(
        400, f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def _no_such(noun: str, object_id: str, param: str = "id") -> StripeApiError:
    return StripeApiError(
        404 if param == "id" else 400,
        f"No such {noun}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


FAULT_BODIES: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", None, "Invalid API Key provided"),
    402: ("card_error", "card_declined", "Your card was declined."),
    403: ("invalid_request_error", None, "The provided key does not have access."),
    404: ("invalid_request_error", "resource_missing", "No such resource."),
    409: ("invalid_request_error", "lock_timeout", "This object cannot be accessed right now."),
    429: ("invalid_request_error", "rate_limit", "Too many requests made to the API too quickly."),
}

# GET /v1/<collection>/{id}: collection -> (attribute of the peer, noun in Stripe's 404 message)
COLLECTIONS: dict[str, tuple[str, str]] = {
    "subscriptions": ("subscriptions", "subscription"),
    "customers": ("customers", "customer"),
    "invoices": ("invoices", "invoice"),
    "payment_intents": ("payment_intents", "payment_intent"),
    "charges": ("charges", "charge"),
    "prices": ("prices", "price"),
    "events": ("_events_by_id", "event"),
}


@dataclass
class StripePeer:
    secret_key: str
    clock: Callable[[], float] = time.time
    requests: list[StripeRequest] = field(default_factory=list)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, CheckoutSession] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _events_by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    _period_days: dict[str, int] = field(default_factory=dict)
    _open_invoice: dict[str, str] = field(default_factory=dict)
    _first_invoice: dict[str, str] = field(default_factory=dict)
    _faults: list[_Fault] = field(default_factory=list)
    _last_event_created: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def now(self) -> int:
        return int(self.clock())

    # -- scripting ----------------------------------------------------------------------------

    def add_price(
        self,
        price_id: str,
        *,
        product_id: str,
        unit_amount: int,
        currency: str = "eur",
        recurring: bool = True,
        interval: str = "month",
    ) -> dict[str, Any]:
        price: dict[str, Any] = {
            "id": price_id,
            "object": "price",
            "active": True,
            "currency": currency,
            "product": product_id,
            "unit_amount": unit_amount,
            "type": "recurring" if recurring else "one_time",
            "recurring": (
                {"interval": interval, "interval_count": 1, "usage_type": "licensed"}
                if recurring
                else None
            ),
            "livemode": False,
            "metadata": {},
        }
        with self._lock:
            self.prices[price_id] = price
        return copy.deepcopy(price)

    def fail_next(self, status: int, count: int = 1, *, should_retry: bool | None = None) -> None:
        """The next `count` authenticated requests answer `status` with Stripe's error JSON
        (`Stripe-Should-Retry` sent when `should_retry` is given). Note the stripe library
        retries 409 and 5xx itself when its client has `max_network_retries` > 0."""
        with self._lock:
            self._faults.append(_Fault(status, count, should_retry))

    # -- scenario helpers: each returns the event Stripe would deliver --------------------------

    def complete_checkout(
        self,
        session_id: str,
        *,
        status: str = "active",
        period_days: int = 30,
        trial_days: int = 0,
    ) -> dict[str, Any]:
        """The customer paid: customer + subscription (or payment intent); checkout.session.completed."""
        with self._lock:
            session = self.sessions[session_id]
            obj, params = session.obj, session.params
            if obj["status"] != "open":
                raise ValueError(f"checkout session {session_id} is {obj['status']}")
            now = self.now()
            customer_id = obj["customer"] or self._new_customer(obj["customer_email"])
            email = self.customers[customer_id].get("email")
            line = params["line_items"][0]
            price = self.prices[line["price"]]
            quantity = int(line.get("quantity", 1))
            amount = price["unit_amount"] * quantity
            if obj["mode"] == "subscription":
                sub_data = params.get("subscription_data") or {}
                trial_days = trial_days or int(sub_data.get("trial_period_days") or 0)
                trial_end = now + trial_days * DAY if trial_days else None
                sub_status = "trialing" if trial_end and status == "active" else status
                sub_id = _id("sub")
                self.subscriptions[sub_id] = {
                    "id": sub_id,
                    "object": "subscription",
                    "status": sub_status,
                    "customer": customer_id,
                    "metadata": dict(sub_data.get("metadata") or {}),
                    "items": {
                        "object": "list",
                        "data": [
                            {
                                "id": _id("si"),
                                "object": "subscription_item",
                                "price": copy.deepcopy(price),
                                "quantity": quantity,
                                "current_period_start": now,
                                "current_period_end": trial_end or now + period_days * DAY,
                                "subscription": sub_id,
                                "metadata": {},
                            }
                        ],
                        "has_more": False,
                        "url": f"/v1/subscription_items?subscription={sub_id}",
                    },
                    "cancel_at_period_end": False,
                    "cancel_at": None,
                    "canceled_at": None,
                    "ended_at": None,
                    "cancellation_details": {"comment": None, "feedback": None, "reason": None},
                    "trial_start": now if trial_end else None,
                    "trial_end": trial_end,
                    "start_date": now,
                    "created": now,
                    "billing_cycle_anchor": trial_end or now,
                    "currency": price["currency"],
                    "collection_method": "charge_automatically",
                    "latest_invoice": None,
                    "livemode": False,
                }
                self._period_days[sub_id] = period_days
                invoice = self._new_invoice(
                    sub_id,
                    amount=0 if trial_end else amount,
                    currency=price["currency"],
                    billing_reason="subscription_create",
                    paid=True,
                )
                self._first_invoice[sub_id] = invoice["id"]
                obj["subscription"] = sub_id
                obj["payment_status"] = "no_payment_required" if trial_end else "paid"
            else:
                pi_metadata = (params.get("payment_intent_data") or {}).get("metadata") or {}
                pi = self._new_payment(customer_id, amount, price["currency"], pi_metadata)
                obj["payment_intent"] = pi["id"]
                obj["payment_status"] = "paid"
            obj["status"] = "complete"
            obj["customer"] = customer_id
            obj["customer_details"] = {"email": email, "name": None}
            return self._event("checkout.session.completed", obj)

    def subscription_event(
        self, sub_id: str, type_: str = "customer.subscription.updated", **changes: Any
    ) -> dict[str, Any]:
        """Apply `changes` to the subscription (`current_period_start`/`_end` go to its item;
        `cancel_at_period_end` also sets/clears `cancel_at` and `canceled_at` as Stripe does)
        and return the event, with `previous_attributes` when `type_` is an update."""
        with self._lock:
            sub = self.subscriptions[sub_id]
            item = sub["items"]["data"][0]
            previous: dict[str, Any] = {}
            old_items = copy.deepcopy(sub["items"])
            if "cancel_at_period_end" in changes:
                cancelling = bool(changes["cancel_at_period_end"])
                changes.setdefault("cancel_at", item["current_period_end"] if cancelling else None)
                changes.setdefault("canceled_at", self.now() if cancelling else None)
                changes.setdefault(
                    "cancellation_details",
                    {
                        "comment": None,
                        "feedback": None,
                        "reason": "cancellation_requested" if cancelling else None,
                    },
                )
            items_changed = False
            for key, value in changes.items():
                if key in ("current_period_start", "current_period_end"):
                    if item[key] != value:
                        item[key] = value
                        items_changed = True
                elif sub.get(key) != value:
                    previous[key] = copy.deepcopy(sub.get(key))
                    sub[key] = value
            if items_changed:
                previous["items"] = old_items
            update = type_.endswith(".updated")
            return self._event(type_, sub, previous if update else None)

    def delete_subscription(self, sub_id: str) -> dict[str, Any]:
        """The subscription ended now: customer.subscription.deleted."""
        with self._lock:
            sub = self.subscriptions[sub_id]
            now = self.now()
            sub["status"] = "canceled"
            sub["ended_at"] = now
            sub["canceled_at"] = sub["canceled_at"] or now
            if sub["cancellation_details"]["reason"] is None:
                sub["cancellation_details"]["reason"] = "cancellation_requested"
            self._open_invoice.pop(sub_id, None)
            return self._event("customer.subscription.deleted", sub)

    def invoice_paid(
        self,
        sub_id: str,
        *,
        amount: int = 999,
        currency: str = "eur",
        billing_reason: str = "subscription_cycle",
    ) -> dict[str, Any]:
        """An invoice of the subscription was paid: invoice.paid.

        "subscription_create" re-delivers the first invoice (made by `complete_checkout`); an open
        invoice left by `invoice_payment_failed` is paid as it is; otherwise this is a renewal:
        the item period rolls forward by the subscription's period. The subscription becomes
        active (unless canceled)."""
        with self._lock:
            sub = self.subscriptions[sub_id]
            if billing_reason == "subscription_create" and sub_id in self._first_invoice:
                invoice = self.invoices[self._first_invoice[sub_id]]
            elif sub_id in self._open_invoice:
                invoice = self.invoices[self._open_invoice.pop(sub_id)]
                self._pay(invoice)
            else:
                if billing_reason != "subscription_create":
                    self._roll_period(sub)
                invoice = self._new_invoice(
                    sub_id,
                    amount=amount,
                    currency=currency,
                    billing_reason=billing_reason,
                    paid=True,
                )
            if sub["status"] in ("trialing", "past_due", "unpaid", "incomplete"):
                sub["status"] = "active"
            return self._event("invoice.paid", invoice)

    def invoice_payment_failed(
        self,
        sub_id: str,
        *,
        amount: int = 999,
        currency: str = "eur",
        billing_reason: str = "subscription_cycle",
    ) -> dict[str, Any]:
        """A renewal charge failed: the period rolls forward (once per open invoice), the invoice
        stays open, the subscription is past_due: invoice.payment_failed."""
        with self._lock:
            sub = self.subscriptions[sub_id]
            if sub_id in self._open_invoice:
                invoice = self.invoices[self._open_invoice[sub_id]]
                invoice["attempt_count"] += 1
            else:
                self._roll_period(sub)
                invoice = self._new_invoice(
                    sub_id,
                    amount=amount,
                    currency=currency,
                    billing_reason=billing_reason,
                    paid=False,
                )
                self._open_invoice[sub_id] = invoice["id"]
            invoice["next_payment_attempt"] = self.now() + 3 * DAY
            sub["status"] = "past_due"
            return self._event("invoice.payment_failed", invoice)

    def refund(self, payment_intent_id: str, *, amount: int | None = None) -> dict[str, Any]:
        """Refund (part of) the payment intent's charge: charge.refunded."""
        with self._lock:
            pi = self.payment_intents[payment_intent_id]
            charge = self.charges[pi["latest_charge"]]
            remaining = charge["amount"] - charge["amount_refunded"]
            amount = remaining if amount is None else amount
            if not 0 < amount <= remaining:
                raise ValueError(f"cannot refund {amount} of {remaining} left on {charge['id']}")
            previous = {
                "amount_refunded": charge["amount_refunded"],
                "refunded": charge["refunded"],
            }
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]
            return self._event("charge.refunded", charge, previous)

    # -- state --------------------------------------------------------------------------------

    def _event(
        self, type_: str, obj: dict[str, Any], previous: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        created = max(self.now(), self._last_event_created)
        self._last_event_created = created
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        event: dict[str, Any] = {
            "id": _id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": created,
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        self.events.append(event)
        self._events_by_id[event["id"]] = event
        return copy.deepcopy(event)

    def _new_customer(self, email: str | None) -> str:
        customer_id = _id("cus", 14)
        self.customers[customer_id] = {
            "id": customer_id,
            "object": "customer",
            "email": email,
            "created": self.now(),
            "livemode": False,
            "metadata": {},
        }
        return customer_id

    def _new_payment(
        self, customer_id: str, amount: int, currency: str, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        pi_id, charge_id, now = _id("pi"), _id("ch"), self.now()
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": 0,
            "captured": True,
            "created": now,
            "currency": currency,
            "customer": customer_id,
            "livemode": False,
            "metadata": dict(metadata or {}),
            "paid": True,
            "payment_intent": pi_id,
            "refunded": False,
            "status": "succeeded",
        }
        self.payment_intents[pi_id] = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": amount,
            "created": now,
            "currency": currency,
            "customer": customer_id,
            "latest_charge": charge_id,
            "livemode": False,
            "metadata": dict(metadata or {}),
            "status": "succeeded",
        }
        return self.payment_intents[pi_id]

    def _roll_period(self, sub: dict[str, Any]) -> None:
        item = sub["items"]["data"][0]
        start = item["current_period_end"]
        item["current_period_start"] = start
        item["current_period_end"] = start + self._period_days.get(sub["id"], 30) * DAY

    def _new_invoice(
        self, sub_id: str, *, amount: int, currency: str, billing_reason: str, paid: bool
    ) -> dict[str, Any]:
        sub = self.subscriptions[sub_id]
        item = sub["items"]["data"][0]
        invoice_id, now = _id("in"), self.now()
        invoice: dict[str, Any] = {
            "id": invoice_id,
            "object": "invoice",
            "amount_due": amount,
            "amount_paid": 0,
            "amount_remaining": amount,
            "attempt_count": 1,
            "attempted": True,
            "billing_reason": billing_reason,
            "collection_method": "charge_automatically",
            "created": now,
            "currency": currency,
            "customer": sub["customer"],
            "livemode": False,
            "next_payment_attempt": None,
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "subscription": sub_id,
                    "metadata": copy.deepcopy(sub["metadata"]),
                },
            },
            "lines": {
                "object": "list",
                "data": [
                    {
                        "id": _id("il"),
                        "object": "line_item",
                        "amount": amount,
                        "currency": currency,
                        "invoice": invoice_id,
                        "period": {
                            "start": item["current_period_start"],
                            "end": item["current_period_end"],
                        },
                        "pricing": {
                            "type": "price_details",
                            "price_details": {
                                "price": item["price"]["id"],
                                "product": item["price"]["product"],
                            },
                        },
                        "parent": {
                            "type": "subscription_item_details",
                            "subscription_item_details": {
                                "subscription": sub_id,
                                "subscription_item": item["id"],
                            },
                        },
                        "quantity": item["quantity"],
                    }
                ],
                "has_more": False,
                "url": f"/v1/invoices/{invoice_id}/lines",
            },
            "payments": {
                "object": "list",
                "data": [],
                "has_more": False,
                "url": f"/v1/invoice_payments?invoice={invoice_id}",
            },
            "period_start": item["current_period_start"],
            "period_end": item["current_period_end"],
            "status": "open",
            "status_transitions": {"paid_at": None, "finalized_at": now},
        }
        self.invoices[invoice_id] = invoice
        sub["latest_invoice"] = invoice_id
        if paid:
            self._pay(invoice)
        return invoice

    def _pay(self, invoice: dict[str, Any]) -> None:
        amount = invoice["amount_due"]
        invoice["amount_paid"] = amount
        invoice["amount_remaining"] = 0
        invoice["status"] = "paid"
        invoice["next_payment_attempt"] = None
        invoice["status_transitions"]["paid_at"] = self.now()
        if amount > 0:
            pi = self._new_payment(invoice["customer"], amount, invoice["currency"])
            invoice["payments"]["data"].append(
                {
                    "id": _id("inpay"),
                    "object": "invoice_payment",
                    "amount_paid": amount,
                    "currency": invoice["currency"],
                    "invoice": invoice["id"],
                    "is_default": True,
                    "payment": {"type": "payment_intent", "payment_intent": pi["id"]},
                    "status": "paid",
                }
            )

    # -- protocol -----------------------------------------------------------------------------

    def respond(self, request: Received) -> Answer:
        parts = urlsplit(request.path)
        encoded = request.body.decode() if request.method == "POST" else parts.query
        record = StripeRequest(request.method, parts.path, {}, encoded, request.headers)
        with self._lock:
            self.requests.append(record)
            try:
                try:
                    record.params = parse_form(encoded)
                    form_error = None
                except FormError as exc:
                    form_error = exc
                if request.headers.get("authorization") != f"Bearer {self.secret_key}":
                    raise StripeApiError(401, "Invalid API Key provided")
                if form_error is not None:
                    raise form_error
                if self._faults:
                    fault = self._faults[0]
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.pop(0)
                    answer = self._fault_answer(fault)
                else:
                    body = self._route(request.method, parts.path, record.params)
                    answer = self._json(200, body)
            except FormError as exc:
                answer = self._json(400, {"error": StripeApiError(400, str(exc)).body})
            except StripeApiError as exc:
                answer = self._json(exc.status, {"error": exc.body})
            record.status = answer.status
        return answer

    def _json(self, status: int, body: dict[str, Any]) -> Answer:
        headers = {
            "Content-Type": "application/json",
            "Request-Id": _id("req", 14),
            "Stripe-Version": API_VERSION,
        }
        return Answer(status, json.dumps(body, indent=2).encode(), headers)

    def _fault_answer(self, fault: _Fault) -> Answer:
        default = ("api_error", None, "An unknown error occurred.")
        type_, code, message = FAULT_BODIES.get(fault.status, default)
        error: dict[str, Any] = {"type": type_, "message": message}
        if code is not None:
            error["code"] = code
        answer = self._json(fault.status, {"error": error})
        if fault.should_retry is not None:
            answer.headers["Stripe-Should-Retry"] = "true" if fault.should_retry else "false"
        return answer

    def _route(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        segments = path.strip("/").split("/")
        if method == "POST" and path == "/v1/checkout/sessions":
            return self._create_session(params)
        if (
            method == "GET"
            and segments[:3] == ["v1", "checkout", "sessions"]
            and len(segments) == 4
        ):
            session = self.sessions.get(segments[3])
            if session is None:
                raise _no_such("checkout.session", segments[3])
            return self._expand(session.obj, params)
        if method == "GET" and len(segments) == 3 and segments[0] == "v1":
            collection = COLLECTIONS.get(segments[1])
            if collection is not None:
                found = getattr(self, collection[0]).get(segments[2])
                if found is None:
                    raise _no_such(collection[1], segments[2])
                return self._expand(found, params)
        raise StripeApiError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
        )

    def _expand(self, obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        result = copy.deepcopy(obj)
        expand = params.get("expand") or []
        for name in expand if isinstance(expand, list) else [expand]:
            value = result.get(name)
            if isinstance(value, str):
                for collection in (
                    self.subscriptions,
                    self.customers,
                    self.invoices,
                    self.payment_intents,
                    self.charges,
                ):
                    if value in collection:
                        result[name] = copy.deepcopy(collection[value])
                        break
        return result

    def _create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        mode = params.get("mode")
        if mode is None:
            raise _missing("mode")
        if mode not in ("payment", "subscription"):
            raise StripeApiError(
                400,
                f"Invalid mode: must be one of payment or subscription (the peer does not "
                f"model {mode!r})",
                param="mode",
            )
        for name in ("success_url", "cancel_url"):
            url = params.get(name)
            if url is None and name == "success_url":
                raise _missing(name)
            if url is not None and not re.match(r"^https?://[^\s/]+", url):
                raise StripeApiError(400, "Not a valid URL", code="url_invalid", param=name)
        if mode == "payment" and "subscription_data" in params:
            raise StripeApiError(
                400,
                "You can only specify `subscription_data` in `subscription` mode.",
                param="subscription_data",
            )
        if mode == "subscription" and "payment_intent_data" in params:
            raise StripeApiError(
                400,
                "You can not pass `payment_intent_data` in `subscription` mode.",
                param="payment_intent_data",
            )
        line_items = params.get("line_items")
        if not isinstance(line_items, list) or not line_items:
            raise _missing("line_items")
        amount, currency = 0, None
        for i, line in enumerate(line_items):
            price_id = line.get("price") if isinstance(line, dict) else None
            if price_id is None:
                raise _missing(f"line_items[{i}][price]")
            price = self.prices.get(price_id)
            if price is None:
                raise _no_such("price", price_id, param=f"line_items[{i}][price]")
            if "quantity" not in line:
                raise StripeApiError(
                    400,
                    f"Quantity is required. Add `quantity` to `line_items[{i}]`",
                    code="parameter_missing",
                    param=f"line_items[{i}][quantity]",
                )
            recurring = price["recurring"] is not None
            if mode == "subscription" and not recurring:
                raise StripeApiError(
                    400,
                    "You must provide at least one recurring price in `subscription` mode "
                    "when using prices.",
                    param=f"line_items[{i}][price]",
                )
            if mode == "payment" and recurring:
                raise StripeApiError(
                    400,
                    "You specified `payment` mode but passed a recurring price. Either switch "
                    "to `subscription` mode or use only one-time prices.",
                    param=f"line_items[{i}][price]",
                )
            amount += price["unit_amount"] * int(line["quantity"])
            currency = price["currency"]
        now = self.now()
        session_id = _id("cs_test", 58)
        obj: dict[str, Any] = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": now,
            "currency": currency,
            "customer": params.get("customer"),
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "expires_at": now + DAY,
            "livemode": False,
            "metadata": dict(params.get("metadata") or {}),
            "mode": mode,
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "subscription": None,
            "success_url": params.get("success_url"),
            "ui_mode": "hosted",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        customer = obj["customer"]
        if customer is not None and customer not in self.customers:
            raise _no_such("customer", customer, param="customer")
        self.sessions[session_id] = CheckoutSession(params=params, obj=obj)
        return copy.deepcopy(obj)


@contextmanager
def running_stripe(secret_key: str) -> Iterator[StripePeer]:
    """Serve the Stripe peer on 127.0.0.1 (a free port) until the block ends."""
    peer = StripePeer(secret_key=secret_key)
    with serve_http(peer.respond) as port:
        peer.port = port
        yield peer
