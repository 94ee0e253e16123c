"""RFC 9457: a problem type's `title` does not change between occurrences. Every code has
exactly one title, wherever it is raised (kit/web/errors.py title_for)."""

from __future__ import annotations

import importlib
import pkgutil
from collections import defaultdict

import stateless
from stateless.kit.web.errors import ProblemError, title_for
from tests.bots.conftest import execute
from tests.conftest import Client, TenantHandle
from tests.test_core import assert_problem


def every_problem_class() -> list[type[ProblemError]]:
    for module in pkgutil.walk_packages(stateless.__path__, "stateless."):
        if ".migrations." not in module.name:
            importlib.import_module(module.name)
    found: list[type[ProblemError]] = []
    pending = [ProblemError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_code_has_exactly_one_title() -> None:
    titles: dict[str, set[str]] = defaultdict(set)
    for cls in every_problem_class():
        titles[cls.code].add(cls.title)
        assert cls.title == title_for(cls.code), cls
    assert len(titles) > 30
    several = {code: found for code, found in titles.items() if len(found) != 1}
    assert not several


def test_the_named_offenders() -> None:
    from stateless.kit.web.errors import BadGateway
    from stateless.storekit.receipts import ProviderError

    assert ProviderError().title == BadGateway().title == "Upstream provider failed"
    assert title_for("invalid_signature") == "Invalid signature"
    assert title_for("webhook_not_configured") == "Webhook not configured"


async def test_titles_on_the_wire(client: Client, tenant: TenantHandle) -> None:
    r = await client.get("/api/v1/storage/downloads/not.a.signed.token", headers=tenant.sk)
    assert assert_problem(r, 403, "invalid_signature")["title"] == "Invalid signature"
    r = await execute(client, tenant, "webhook", {"data": {}})
    body = assert_problem(r, 422, "webhook_not_configured")
    assert body["title"] == "Webhook not configured"
