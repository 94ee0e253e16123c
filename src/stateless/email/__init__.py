"""Outbound email: one small provider interface with SendGrid, SMTP and console backends."""
