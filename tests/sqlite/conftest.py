"""Tests of SQLite-specific behaviour (the embedded default's files on disk)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def database_url(sqlite_database: str) -> str:
    return sqlite_database
