"""`stateless serve` announces its own address, while client addresses stay redacted."""

from __future__ import annotations

import json
import logging

import pytest

from stateless.kit.observe.logging import configure_logging
from stateless.kit.runtime.serving import announce_address_on


def test_serving_event_shows_bind_address_and_docs(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    announce_address_on("test.uvicorn")
    uvicorn_log = logging.getLogger("test.uvicorn")
    uvicorn_log.info(
        "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)", "http", "0.0.0.0", 8741
    )
    logging.getLogger("other").info("client 203.0.113.77 connected")
    structlog_line = logging.getLogger("stateless.serve")
    structlog_line.info("serving %s", "http://198.51.100.7:80")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    serving = [line for line in lines if line.get("listening_on")]
    assert serving == [serving[0]] and serving[0]["logger"] == "stateless.serve"
    assert serving[0]["listening_on"] == "http://0.0.0.0:8741"
    assert serving[0]["docs"] == "http://127.0.0.1:8741/docs"
    assert not any("Uvicorn running on" in line["event"] for line in lines)
    text = json.dumps(lines)
    assert "203.0.113.77" not in text and "198.51.100.7" not in text  # everything else: redacted


def test_only_bare_server_urls_pass_unredacted(capsys: pytest.CaptureFixture[str]) -> None:
    import structlog

    configure_logging("INFO", "json")
    structlog.get_logger("t").info("x", docs="http://203.0.113.77:80/docs?client=198.51.100.7")
    structlog.get_logger("t").info("y", listening_on="http://user:pw@203.0.113.77:80")
    out = capsys.readouterr().out
    assert "203.0.113.77" not in out and "198.51.100.7" not in out and "pw@" not in out
