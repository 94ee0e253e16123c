"""Alembic migrations; run them with `stateless migrate`."""
