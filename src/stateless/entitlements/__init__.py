"""Entitlements: one answer to "may this subscriber use Pro right now?" across the App Store and
Stripe, keyed by the app's own random `app_account_token` (SPEC 13)."""
