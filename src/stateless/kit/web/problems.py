"""What each problem `code` means and what to do about it: the pages behind every `type`.

A problem's `type` is the relative reference `/problems/<code>` (kit/web/errors.py), so it
resolves against the API's own base URL to `GET /problems/<code>`, served by this app as HTML
(or JSON when asked with `Accept: application/json`). Codes without an entry below still get
a page, with the generic advice; tests/test_problems.py keeps this table complete.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

PROBLEM_PATH = "/problems/"
CODE_PATTERN = re.compile(r"^[a-z0-9_]{1,64}$")


@dataclass(frozen=True, slots=True)
class ProblemDoc:
    status: int
    title: str
    description: str


def _doc(status: int, title: str, description: str) -> ProblemDoc:
    return ProblemDoc(status, title, description)


CATALOGUE: dict[str, ProblemDoc] = {
    # Any route
    "bad_request": _doc(400, "Bad request", "The request is malformed; `detail` says how."),
    "validation_error": _doc(
        422,
        "Validation error",
        "The body or a parameter does not match the schema. `errors` lists each failing "
        "location (`loc`), a message and a type; the submitted values are never echoed back.",
    ),
    "ttl_out_of_range": _doc(
        422,
        "ttl_seconds out of range",
        "`ttl_seconds` is below 1 or above this kind's maximum; `GET /api/v1/admin/data-"
        "inventory` lists each kind's default and maximum lifetime.",
    ),
    "webpush_not_configured": _doc(
        409,
        "Web Push is not configured for this app",
        "The operator has not created this app's VAPID key pair yet: "
        "`stateless tenants configure APP_ID --webpush-generate-keys --webpush-contact mailto:...`.",
    ),
    "endpoint_not_allowed": _doc(
        422,
        "This push endpoint is not allowed",
        "A push subscription's endpoint must be an https URL of a public push service; "
        "private, loopback and link-local addresses are refused (checked after DNS resolution).",
    ),
    "invalid_subscription_keys": _doc(
        422,
        "The subscription keys are not valid",
        "`keys.p256dh` must be an uncompressed P-256 point and `keys.auth` a 16-byte secret, "
        "both base64url: send `PushSubscription.toJSON()` as the browser gives it.",
    ),
    "subscription_expired": _doc(
        422,
        "The subscription has already expired",
        "The subscription's `expirationTime` is in the past; subscribe again in the browser.",
    ),
    "unsupported_media_type": _doc(
        415,
        "Unsupported media type",
        "JSON endpoints take `Content-Type: application/json` bodies (a form or text body is "
        "refused). For uploads: the app does not accept this content type.",
    ),
    "payload_too_large": _doc(
        413,
        "Payload too large",
        "The body is larger than MAX_REQUEST_BODY_BYTES (10 MiB by default), or than the "
        "route's own limit.",
    ),
    "not_found": _doc(
        404,
        "Not found",
        "Nothing here: the path does not exist, or the id never existed, has expired or "
        "belongs to another app (these answers are identical on purpose).",
    ),
    "method_not_allowed": _doc(405, "Method not allowed", "This path takes other methods."),
    "not_acceptable": _doc(406, "Not acceptable", "No representation matches `Accept`."),
    "conflict": _doc(409, "Conflict", "The request conflicts with the current state."),
    "concurrent_write": _doc(
        409,
        "Concurrent write",
        "Another request wrote the same data at the same moment. Retry after `Retry-After`.",
    ),
    "rate_limited": _doc(
        429,
        "Too many requests",
        "This app used up the route's rate limit. Wait `Retry-After` seconds; the `RateLimit` "
        "and `RateLimit-Policy` headers show the budget. Operators raise limits per app with "
        "`stateless tenants configure APP --rate-limit ROUTE=LIMIT`.",
    ),
    "internal_error": _doc(
        500,
        "Internal server error",
        "An unexpected failure. Nothing about it is sent to clients; quote `request_id` (also "
        "in `X-Request-ID`) to the operator, who finds it in the server log.",
    ),
    "database_unavailable": _doc(
        503, "Database unavailable", "The database cannot be reached; retry after `Retry-After`."
    ),
    "service_unavailable": _doc(503, "Service unavailable", "A dependency is down; retry later."),
    "provider_error": _doc(
        502,
        "Upstream provider failed",
        "An outside service (email provider, Apple, a webhook target) failed; `detail` is a "
        "sanitized summary. Async tasks retry on their own.",
    ),
    "timeout": _doc(504, "Timed out", "The work did not finish in time."),
    # Tenants and keys (SPEC 2)
    "missing_app_id": _doc(
        400, "Missing X-App-ID header", "Send `X-App-ID: <app_id>` with every tenant request."
    ),
    "invalid_app_id": _doc(
        400,
        "Invalid X-App-ID",
        "An app id is 1-64 characters of letters, digits, `-` and `_`.",
    ),
    "unauthorized": _doc(
        401,
        "Unauthorized",
        "Send `X-App-ID: <app_id>` and `Authorization: Bearer <key>` with the app's publishable "
        "key (`pk_...`) or secret key (`sk_...`). The operator issues keys with `stateless "
        "tenants create APP_ID` (or `rotate-key`). The answer is the same for an unknown app, a "
        "missing, wrong, revoked or foreign key, so app ids cannot be probed.",
    ),
    "insufficient_scope": _doc(
        403,
        "Insufficient scope",
        "This endpoint needs the secret key (`sk_...`); a publishable key (`pk_...`) is not "
        "enough. Call it from your server, never from an app or a browser.",
    ),
    "forbidden": _doc(403, "Forbidden", "The key may not do this."),
    "cors_origin_not_allowed": _doc(
        403,
        "CORS origin not allowed",
        "The browser's `Origin` is not among the app's allowed origins; the operator adds it "
        "with `stateless tenants configure APP --cors-origin https://app.example.com`.",
    ),
    # Drafts, storage
    "draft_not_found": _doc(404, "Draft not found", "No live draft of this app has this id."),
    "object_not_found": _doc(404, "Object not found", "No live object of this app has this id."),
    "already_uploaded": _doc(409, "Already uploaded", "This object's body was uploaded already."),
    "upload_incomplete": _doc(
        422, "Upload incomplete", "Fewer bytes arrived than the declared `content_length`."
    ),
    "upload_too_large": _doc(
        413,
        "Upload too large",
        "More bytes than the declared `content_length`, or above MAX_UPLOAD_BYTES.",
    ),
    "content_type_mismatch": _doc(
        415, "Content-Type mismatch", "Upload with the `Content-Type` declared when creating it."
    ),
    "invalid_content_type": _doc(
        422, "Invalid content type", "`content_type` must be a media type like `image/png`."
    ),
    "invalid_signature": _doc(
        403, "Invalid signature", "The signed URL was altered or is not one of this API's."
    ),
    "url_expired": _doc(403, "URL expired", "The signed URL has expired; ask for a new one."),
    "no_content": _doc(422, "No content", "A campaign needs `text`, `html` or `template_id`."),
    "range_too_long": _doc(
        422, "Range too long", "A report covers a limited number of days; ask for fewer."
    ),
    "unknown_kind": _doc(422, "Unknown kind", "That data kind does not exist; see the inventory."),
    # Affiliate
    "invalid_code": _doc(
        400,
        "Invalid referral code",
        "The code is malformed, forged, or another app's (one answer for all three).",
    ),
    "invalid_code_id": _doc(422, "Invalid code_id", "`code_id` is 1-128 characters."),
    "invalid_event": _doc(422, "Invalid event", "`event` is a short name like `signup`."),
    "invalid_event_id": _doc(422, "Invalid event_id", "`event_id` is a short opaque string."),
    "invalid_currency": _doc(
        422, "Invalid currency", "`currency` is an ISO 4217 code such as `EUR` or `USD`."
    ),
    "currency_required": _doc(422, "Currency required", "A `value` needs its `currency`."),
    "value_required": _doc(422, "Value required", "A `currency` needs a `value`."),
    "invalid_value": _doc(422, "Invalid value", "`value` is a decimal number, e.g. `9.99`."),
    "negative_value": _doc(422, "Negative value", "`value` cannot be negative."),
    "value_too_large": _doc(422, "Value too large", "`value` is above the largest sum kept."),
    "too_many_decimals": _doc(
        422, "Too many decimals", "`value` has more decimal places than its currency allows."
    ),
    "invalid_date_range": _doc(
        422, "Invalid date range", "`since` must be on or before `until` (UTC dates)."
    ),
    "date_range_too_long": _doc(
        422, "Date range too long", "The range is longer than conversions are kept; ask for less."
    ),
    # iOS, StoreKit
    "apns_not_configured": _doc(
        409,
        "APNs is not configured for this app",
        "The operator sets the app's APNs key with `stateless tenants configure APP "
        "--apns-key-file AuthKey.p8 --apns-key-id ... --apns-team-id ... --bundle-id ...`.",
    ),
    "apns_unreachable": _doc(502, "APNs could not be reached", "Apple's push service failed."),
    "app_not_found": _doc(404, "App not found", "No app has this id."),
    "invalid_signed_payload": _doc(
        400,
        "Invalid signed payload",
        "The App Store notification could not be verified; nothing was recorded.",
    ),
    # Bots
    "unknown_task_type": _doc(
        400, "Unknown task type", "`task_type` is not one of those listed in `allowed`."
    ),
    "task_not_found": _doc(404, "Task not found", "No live task of this app has this id."),
    "task_timeout": _doc(
        504,
        "Task timed out",
        'A sync task ran longer than BOT_TIMEOUT_SECONDS; run it with `"mode": "async"`.',
    ),
    "context_too_large": _doc(413, "Context too large", "A task's `context` is at most 1 MiB."),
    "idempotency_in_progress": _doc(
        409,
        "Idempotency-Key in progress",
        "A request with this Idempotency-Key is still running; retry after it finishes.",
    ),
    "idempotency_key_reused": _doc(
        409,
        "Idempotency-Key reused",
        "This Idempotency-Key was used with another body in the last 24 hours; use a new key.",
    ),
    "no_recipient": _doc(
        422,
        "No recipient",
        "The email has no `to` and the app has no notify address (`stateless tenants "
        "configure APP --notify-email ops@example.com`).",
    ),
    "template_unsupported": _doc(
        422, "Templates unsupported", "This email provider cannot send `template_id` emails."
    ),
    "target_refused": _doc(
        422,
        "Target refused",
        "The target URL resolves to a private, loopback or link-local address.",
    ),
    "webhook_not_configured": _doc(
        422,
        "Webhook not configured",
        "The operator sets it with `stateless tenants configure APP --webhook-url URL`.",
    ),
    "mastodon_not_configured": _doc(
        422,
        "Mastodon not configured",
        "The operator sets it with `--mastodon-url` and `--mastodon-token`.",
    ),
    "task_not_cancellable": _doc(
        409,
        "This task can no longer be cancelled",
        "The task has finished, or it is running and is not a broadcast (only a queued task or "
        "a running broadcast can be cancelled).",
    ),
    # Entitlements
    "invalid_app_account_token": _doc(
        422,
        "Invalid app account token",
        "`app_account_token` must be a UUID: the one the app passes to StoreKit as "
        "`appAccountToken` and to Stripe Checkout.",
    ),
    "app_account_token_required": _doc(
        422,
        "App account token required",
        "The transaction carries no `appAccountToken` (bought before the app set one): send "
        "the account's `app_account_token` with it.",
    ),
    "subject_mismatch": _doc(
        409,
        "Subject mismatch",
        "The transaction's `appAccountToken` and the body's `app_account_token` differ; a "
        "purchase made with a token belongs to that token's account.",
    ),
    "invalid_entitlement_map": _doc(
        422,
        "Invalid entitlement map",
        "Entitlement names match `^[a-z0-9_.-]{1,64}$` (at most 50), each with at most 100 "
        "product ids of `A-Z a-z 0-9 _ . : -`.",
    ),
    "price_not_mapped": _doc(
        422,
        "Price not in the entitlement map",
        "Checkout sells only prices that grant an entitlement: add it with `stateless "
        "entitlements set APP NAME --product PRICE_ID`.",
    ),
    "return_url_not_allowed": _doc(
        422,
        "Return URL not allowed",
        "`success_url` and `cancel_url` must be on one of the app's CORS origins "
        "(`stateless tenants configure APP --cors-origin https://app.example.com`): no open "
        "redirects.",
    ),
    "stripe_not_configured": _doc(
        409,
        "Stripe not configured",
        "The operator sets it with `stateless tenants configure APP --stripe-secret-key ... "
        "--stripe-webhook-secret ...`.",
    ),
    "invalid_webhook_signature": _doc(
        400,
        "Invalid webhook signature",
        "The `Stripe-Signature` header does not verify with this app's webhook secret (or "
        "is older than 5 minutes). Unknown apps get the same answer.",
    ),
    "store_unavailable": _doc(
        502,
        "Store API unavailable",
        "Stripe's API or the App Store Server API did not answer usefully after retries; "
        "nothing was changed. Try again.",
    ),
}

_GENERIC = (
    "The response's `detail` explains this problem; the OpenAPI document (`/openapi.json`, "
    "browsable at `/docs`) lists the problems each operation can answer."
)


def describe(code: str) -> dict[str, object]:
    """The page for `code` as data: catalogued or generic."""
    doc = CATALOGUE.get(code)
    return {
        "type": PROBLEM_PATH + code,
        "code": code,
        "status": doc.status if doc else None,
        "title": doc.title if doc else code.replace("_", " ").capitalize(),
        "description": doc.description if doc else _GENERIC,
    }


def render_html(page: dict[str, object]) -> str:
    """A small self-contained page (no outside assets) for a person following a `type`."""
    code = html.escape(str(page["code"]))
    title = html.escape(str(page["title"]))
    status = f"HTTP {page['status']} &middot; " if page["status"] else ""
    text = html.escape(str(page["description"]))
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title} ({code})</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;"
        "padding:0 1rem}code{background:#f3f3f3;padding:0 .2em}</style></head><body>"
        f"<p>{status}code <code>{code}</code></p><h1>{title}</h1><p>{text}</p>"
        "<p><a href='/docs'>API docs</a> &middot; <a href='/openapi.json'>OpenAPI</a></p>"
        "</body></html>"
    )
