"""Tests of guarantees only Postgres gives: this folder runs on Postgres alone."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def database_url(postgres_database: str) -> str:
    return postgres_database
