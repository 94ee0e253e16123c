"""Bots: outbound tasks (email, webhooks, exports, reports, social posts) run now or queued."""
