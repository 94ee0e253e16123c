"""Shared mechanics every domain uses: database, errors, crypto, TTL base, rate limits, logs, metrics."""
