"""The console email provider shows the email in development, and never elsewhere."""

from __future__ import annotations

import pytest

from tests.bots.conftest import execute
from tests.conftest import ClientFactory, TenantFactory

CONTEXT = {"subject": "Welcome {{name}}", "text": "Hello from the console provider."}


async def _send(make_client: ClientFactory, make_tenant: TenantFactory, environment: str) -> None:
    # the app is built during the test so its log handler writes into capsys
    client = await make_client(environment=environment)
    tenant = await make_tenant("console-mail", notify_email="owner@example.com")
    context = {**CONTEXT, "to": ["reader@example.com"]}
    response = await execute(client, tenant, "email", context)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["provider"] == "console"
    assert "reader@example.com" not in response.text  # the stored result keeps no address


async def test_development_prints_to_subject_and_text(
    capsys: pytest.CaptureFixture[str], make_client: ClientFactory, make_tenant: TenantFactory
) -> None:
    await _send(make_client, make_tenant, "development")
    out = capsys.readouterr().out
    assert "To: reader@example.com" in out
    assert "Subject: Welcome {{name}}" in out
    assert "Hello from the console provider." in out
    assert "email_sent_console" in out


@pytest.mark.parametrize("environment", ["production", "test"])
async def test_other_environments_never_print_the_email(
    capsys: pytest.CaptureFixture[str],
    make_client: ClientFactory,
    make_tenant: TenantFactory,
    environment: str,
) -> None:
    await _send(make_client, make_tenant, environment)
    captured = capsys.readouterr()
    everything = captured.out + captured.err
    assert "email_sent_console" in everything  # it did send, and logged a count
    for private in ("reader@example.com", "owner@example.com", "Hello from the console"):
        assert private not in everything
