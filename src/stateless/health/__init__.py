"""Endpoints that need no tenant: root, health, readiness, metrics."""
