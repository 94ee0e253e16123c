"""A callback that holds the event loop shows up: in a histogram and as a warning line."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import ClientFactory
from tests.ops.test_metrics import scrape, value


async def test_a_blocked_loop_is_measured_and_logged(
    capsys: pytest.CaptureFixture[str], make_client: ClientFactory
) -> None:
    client = await make_client(log_format="json")
    await asyncio.sleep(0.25)  # a few quiet samples
    capsys.readouterr()
    time.sleep(0.3)  # the point: hold the loop like a blocking call would
    await asyncio.sleep(0.25)
    assert "event_loop_blocked" in capsys.readouterr().out
    samples = await scrape(client)
    total = value(samples, "stateless_event_loop_lag_seconds_count")
    under_100ms = value(samples, "stateless_event_loop_lag_seconds_bucket", le="0.1")
    assert total >= 3 and under_100ms < total
