"""Tenant self-service administration: cleanup now, counts, erasure, scheduler health, inventory."""
