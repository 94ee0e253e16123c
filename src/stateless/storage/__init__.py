"""Ephemeral file storage: S3-compatible or a local directory, reached through signed, expiring URLs."""
