"""A setting that cannot work refuses at startup with one line naming the variable and what it
needs, never a traceback: in Settings, through `stateless serve`/`migrate`, and under uvicorn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError

from stateless.config import InvalidSettingsError, Settings, load_settings
from tests.test_cli_guidance import _cli, _env, _one_line_error


def _settings(**values: Any) -> Settings:
    arguments: dict[str, Any] = {"_env_file": None, **values}
    return Settings(**arguments)


def _refused(**values: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        _settings(**values)
    return str(caught.value)


@pytest.mark.parametrize(
    "name",
    [
        "apns_production_url",
        "apns_sandbox_url",
        "sendgrid_api_base_url",
        "apple_verify_receipt_url",
        "apple_verify_receipt_sandbox_url",
        "appstore_api_url",
        "stripe_api_url",
    ],
)
def test_credential_urls_need_https_or_a_loopback_http(name: str) -> None:
    assert "loopback" in _refused(**{name: "http://apns.example.com"})
    assert "https://" in _refused(**{name: "ftp://127.0.0.1"})
    for allowed in ("https://api.example.com", "http://127.0.0.1:9", "http://localhost:9"):
        _settings(**{name: allowed})


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("s3_endpoint_url", "http://minio:9000", "minio:9000"),
        ("public_base_url", "https://api.example.com", "api.example.com"),
        ("smtp_url", "smtp://user:pass@mail.example.com:587", "http://mail.example.com"),
        ("redis_url", "rediss://cache:6380/0", "cache:6379"),
    ],
)
def test_other_urls_need_their_scheme_and_a_host(name: str, good: str, bad: str) -> None:
    _settings(**{name: good})
    assert "with a host" in _refused(**{name: bad})


def test_a_password_in_a_refused_url_is_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_URL", "http://user:hunter2@mail.example.com")
    with pytest.raises(InvalidSettingsError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value) and "***@mail.example.com" in str(caught.value)


def test_files_and_directories_must_exist_be_readable_and_hold_what_is_needed(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing.pem"
    for name in ("apns_ca_file", "webpush_ca_file"):
        assert "does not exist" in _refused(**{name: missing})
        assert "is not a file" in _refused(**{name: tmp_path})
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate")
        assert "no PEM CA certificate" in _refused(**{name: junk})
        bundle = tmp_path / "ca.pem"
        trustme.CA().cert_pem.write_to_path(str(bundle))
        assert getattr(_settings(**{name: bundle}), name) == bundle
    assert "does not exist" in _refused(apple_root_certs_dir=missing)
    assert "is not a directory" in _refused(apple_root_certs_dir=tmp_path / "ca.pem")
    assert "is not a directory" in _refused(storage_local_path=tmp_path / "ca.pem")
    if os.geteuid() != 0:  # root reads everything
        locked = tmp_path / "locked.pem"
        locked.write_text("x")
        locked.chmod(0)
        assert "not readable" in _refused(apns_ca_file=locked)


def test_load_settings_says_it_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APNS_PRODUCTION_URL", "http://apns.example.com")
    monkeypatch.setenv("WEBPUSH_CA_FILE", "/nonexistent/ca.pem")
    with pytest.raises(InvalidSettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("invalid APNS_PRODUCTION_URL: must be https://")
    assert message.endswith("(and 1 more)")


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_the_cli_refuses_in_one_line(tmp_path: Path, command: str) -> None:
    line = _one_line_error(
        _cli(command, cwd=tmp_path, APNS_PRODUCTION_URL="http://apns.example.com")
    )
    assert "APNS_PRODUCTION_URL" in line and "loopback" in line
    line = _one_line_error(_cli(command, cwd=tmp_path, APNS_CA_FILE=str(tmp_path / "no.pem")))
    assert "APNS_CA_FILE" in line and "does not exist" in line


def test_uvicorn_on_the_app_fails_startup_in_one_line(tmp_path: Path) -> None:
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    result = subprocess.run(
        [uvicorn, "stateless.main:app", "--port", "0"],
        env=_env(APNS_PRODUCTION_URL="http://apns.example.com"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "error: invalid APNS_PRODUCTION_URL: must be https://" in output
