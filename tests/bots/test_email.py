"""Email over the SendGrid v3 peer, a real SMTP server (aiosmtpd) and the console backend."""

from __future__ import annotations

import time

import pytest

from stateless.config import Settings
from tests.bots.conftest import SENDGRID_KEY, execute
from tests.conftest import ClientFactory, TenantFactory, TenantHandle
from tests.peers.sendgrid import running_sendgrid, sendgrid_error
from tests.peers.smtp import running_smtp
from tests.peers.webhook import Answer
from tests.privacy import assert_not_stored
from tests.test_core import assert_problem


async def test_sendgrid_request_is_exactly_v3_mail_send(
    make_client: ClientFactory, make_tenant: TenantFactory
) -> None:
    with running_sendgrid(SENDGRID_KEY) as peer:
        client = await make_client(
            sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url
        )
        tenant = await make_tenant("shop", email_from="Shop <hello@shop.example>")
        context = {
            "to": ["ann@example.com", "bob@example.com"],
            "subject": "Your order",
            "text": "Thanks!",
            "html": "<p>Thanks!</p>",
            "reply_to": "support@shop.example",
        }
        r = await execute(client, tenant, "email", context)
        assert r.status_code == 200, r.text
        assert peer.headers[0]["authorization"] == f"Bearer {SENDGRID_KEY}"
        assert peer.headers[0]["content-type"] == "application/json"
        assert peer.requests[0] == {
            "personalizations": [
                {"to": [{"email": "ann@example.com"}]},
                {"to": [{"email": "bob@example.com"}]},
            ],
            "from": {"email": "hello@shop.example", "name": "Shop"},
            "subject": "Your order",
            "content": [
                {"type": "text/plain", "value": "Thanks!"},
                {"type": "text/html", "value": "<p>Thanks!</p>"},
            ],
            "reply_to": {"email": "support@shop.example"},
        }
        result = r.json()["result"]
        assert result == {
            "provider": "sendgrid",
            "message_id": peer.message_ids[0],
            "message_ids": peer.message_ids,
            "recipients": 2,
        }
        assert "example.com" not in r.text


async def test_sendgrid_dynamic_template_and_default_sender(
    make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    with running_sendgrid(SENDGRID_KEY) as peer:
        client = await make_client(
            sendgrid_api_key=SENDGRID_KEY,
            sendgrid_api_base_url=peer.base_url,
            email_from="robot@backend.example",
        )
        context = {
            "to": "ann@example.com",
            "subject": "Welcome",
            "template_id": "d-0123456789abcdef",
            "dynamic_template_data": {"name": "Ann", "plan": "pro"},
        }
        r = await execute(client, tenant, "email", context)
        assert r.status_code == 200, r.text
        sent = peer.requests[0]
        assert sent["template_id"] == "d-0123456789abcdef"
        assert sent["from"] == {"email": "robot@backend.example"}
        assert sent["personalizations"] == [
            {
                "to": [{"email": "ann@example.com"}],
                "dynamic_template_data": {"name": "Ann", "plan": "pro"},
            }
        ]
        assert "content" not in sent


async def test_sendgrid_429_honours_retry_after(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    with running_sendgrid(
        SENDGRID_KEY, Answer(429, b'{"errors":[]}', {"Retry-After": "1"})
    ) as peer:
        client = await make_client(
            sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url
        )
        started = time.monotonic()
        r = await execute(client, tenant, "email", {"to": "a@example.com", "subject": "s"})
        assert r.status_code == 200, r.text
        assert time.monotonic() - started >= 0.95
        assert len(peer.requests) == 2
        assert r.json()["result"]["message_id"] == peer.message_ids[0]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (sendgrid_error(400, "from.email", "does not match a verified Sender Identity"), "invalid"),
        (sendgrid_error(403, None, "access forbidden"), "not verified"),
        (sendgrid_error(413, None, "too large"), "too large"),
    ],
)
async def test_sendgrid_refusals_are_502_with_a_clear_sanitized_detail(
    make_client: ClientFactory,
    tenant: TenantHandle,
    settings: Settings,
    answer: Answer,
    expected: str,
) -> None:
    with running_sendgrid(SENDGRID_KEY, answer) as peer:
        client = await make_client(
            sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url
        )
        r = await execute(client, tenant, "email", {"to": "victim@example.com", "subject": "s"})
        body = assert_problem(r, 502, "provider_error")
        assert expected in body["detail"] and str(answer.status) in body["detail"]
        assert "victim@example.com" not in r.text and SENDGRID_KEY not in r.text
        assert len(peer.requests) == 1  # permanent errors are not retried
    await assert_not_stored(settings, ["victim@example.com", SENDGRID_KEY])


async def test_sendgrid_wrong_key_and_persistent_5xx(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    with running_sendgrid("another-key") as peer:
        client = await make_client(
            sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url
        )
        r = await execute(client, tenant, "email", {"to": "a@example.com", "subject": "s"})
        body = assert_problem(r, 502, "provider_error")
        assert "API key" in body["detail"] and "401" in body["detail"]
    with running_sendgrid(SENDGRID_KEY, *[Answer(500)] * 3) as peer:
        client = await make_client(
            sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url
        )
        r = await execute(client, tenant, "email", {"to": "a@example.com", "subject": "s"})
        assert_problem(r, 502, "provider_error")
        assert len(peer.requests) == 3  # bounded retries, then the failure is reported


async def test_campaign_is_batched_at_one_thousand_with_substitutions(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    with running_sendgrid(SENDGRID_KEY) as peer:
        client = await make_client(
            sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url
        )
        recipients = [
            {"to": f"user{i}@example.com", "substitutions": {"name": f"User {i}"}}
            for i in range(1001)
        ]
        recipients.append({"to": "USER0@example.com", "substitutions": {"name": "dup"}})
        context = {
            "subject": "Hi {{name}}",
            "text": "Hello {{name}}, news!",
            "recipients": recipients,
        }
        r = await execute(client, tenant, "email_campaign", context)
        assert r.status_code == 200, r.text
        assert [len(b["personalizations"]) for b in peer.requests] == [1000, 1]
        first = peer.requests[0]["personalizations"][0]
        assert first == {
            "to": [{"email": "user0@example.com"}],
            "substitutions": {"{{name}}": "User 0"},
        }
        assert peer.requests[1]["personalizations"][0]["to"] == [{"email": "user1000@example.com"}]
        assert peer.requests[0]["subject"] == "Hi {{name}}"
        result = r.json()["result"]
        assert result["recipients"] == 1001 and result["batches"] == 2
        assert result["message_ids"] == peer.message_ids


async def test_campaign_with_template_puts_substitutions_in_template_data(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    with running_sendgrid(SENDGRID_KEY) as peer:
        client = await make_client(
            sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url
        )
        context = {
            "subject": "x",
            "template_id": "d-abc",
            "dynamic_template_data": {"brand": "Shop"},
            "recipients": [{"to": "a@example.com", "substitutions": {"name": "A"}}],
        }
        r = await execute(client, tenant, "email_campaign", context)
        assert r.status_code == 200, r.text
        assert peer.requests[0]["personalizations"][0]["dynamic_template_data"] == {
            "brand": "Shop",
            "name": "A",
        }


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smtp_delivers_one_message_per_recipient_with_login(
    make_client: ClientFactory, make_tenant: TenantFactory
) -> None:
    with running_smtp("mailer", "s3cret-pass") as peer:
        client = await make_client(smtp_url=peer.url)
        tenant = await make_tenant("smtp-app", email_from="App <app@sender.example>")
        context = {
            "to": ["ann@example.com", "bob@example.com"],
            "subject": "Hello",
            "text": "plain body",
            "html": "<b>html body</b>",
            "reply_to": "help@sender.example",
        }
        r = await execute(client, tenant, "email", context)
        assert r.status_code == 200, r.text
        assert peer.logins == ["mailer", "mailer"] or peer.logins == ["mailer"]
        assert [d.rcpt_tos for d in peer.delivered] == [["ann@example.com"], ["bob@example.com"]]
        first = peer.delivered[0].message
        assert first["To"] == "ann@example.com"
        assert first["From"] == "App <app@sender.example>"
        assert first["Subject"] == "Hello"
        assert first["Reply-To"] == "help@sender.example"
        assert peer.delivered[0].mail_from == "app@sender.example"
        parts = {p.get_content_type(): p.get_payload(decode=True) for p in first.walk()}
        assert b"plain body" in parts["text/plain"] and b"html body" in parts["text/html"]
        result = r.json()["result"]
        assert result["provider"] == "smtp" and result["recipients"] == 2
        assert result["message_ids"] == [d.message["Message-ID"] for d in peer.delivered]


async def test_smtp_campaign_substitutes_locally(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    with running_smtp() as peer:
        client = await make_client(smtp_url=peer.url)
        context = {
            "subject": "Hi {{name}}",
            "text": "Code: {{ code }}",
            "recipients": [
                {"to": "a@example.com", "substitutions": {"name": "Ann", "code": "A1"}},
                {"to": "b@example.com", "substitutions": {"name": "Bob", "code": "B2"}},
            ],
        }
        r = await execute(client, tenant, "email_campaign", context)
        assert r.status_code == 200, r.text
        subjects = [d.message["Subject"] for d in peer.delivered]
        assert subjects == ["Hi Ann", "Hi Bob"]
        assert "Code: B2" in peer.delivered[1].message.get_payload()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smtp_refuses_templates_and_wrong_login(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    with running_smtp("mailer", "right") as peer:
        client = await make_client(smtp_url=peer.url.replace("right", "wrong"))
        r = await execute(client, tenant, "email", {"to": "a@example.com", "subject": "s"})
        body = assert_problem(r, 502, "provider_error")
        assert "login" in body["detail"] and "wrong" not in body["detail"]
        r = await execute(
            client, tenant, "email", {"to": "a@example.com", "subject": "s", "template_id": "d-1"}
        )
        assert_problem(r, 422, "template_unsupported")
        assert peer.delivered == []


async def test_email_traffic_leaves_no_address_or_key_at_rest_or_in_logs(
    capsys: pytest.CaptureFixture[str],
    make_client: ClientFactory,
    make_tenant: TenantFactory,
    settings: Settings,
) -> None:
    addresses = [f"person.{i}@private-example.org" for i in range(5)]
    with running_sendgrid(SENDGRID_KEY, sendgrid_error(400, None, "bad")) as peer:
        client = await make_client(
            sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url
        )
        tenant = await make_tenant("private", notify_email="owner@private-example.org")
        await execute(client, tenant, "email", {"to": addresses[0], "subject": "fails"})
        await execute(client, tenant, "email", {"subject": "to the owner"})
        await execute(client, tenant, "email", {"to": addresses[:2], "subject": "s"}, mode="async")
        r = await execute(
            client,
            tenant,
            "email_campaign",
            {"subject": "c", "text": "t", "recipients": [{"to": a} for a in addresses]},
            headers={"Idempotency-Key": "campaign-1"},
        )
        assert r.status_code == 200
        assert len(peer.accepted) == 2
    logs = capsys.readouterr().out
    assert "bots.execute" in logs or "/api/v1/bots/execute" in logs  # logs were captured
    await assert_not_stored(
        settings, [*addresses, "owner@private-example.org", SENDGRID_KEY, "campaign-1"], logs=logs
    )
