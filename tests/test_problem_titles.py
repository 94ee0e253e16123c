"""RFC 9457: a problem type's `title` does not change between occurrences. Every code has
exactly one title, derived from one table (kit/errors.py TITLES)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import stateless
from stateless.kit.errors import _CODES_BY_STATUS, TITLES, ProblemError, problem_body, title_for
from tests.bots.conftest import execute
from tests.conftest import Client, TenantHandle
from tests.test_core import assert_problem

SOURCE = Path(stateless.__file__).parent
_LITERAL_CODES = re.compile(
    r'with_code\("([a-z_]+)"\)|code="([a-z_]+)"|\bcode(?:, title)? = "([a-z_]+)"'
    r'|status, code(?:, title)? = \d+, "([a-z_]+)"'
)


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


def every_code() -> set[str]:
    codes = set(TITLES) | set(_CODES_BY_STATUS.values())
    for path in SOURCE.rglob("*.py"):
        for match in _LITERAL_CODES.finditer(path.read_text()):
            codes.update(group for group in match.groups() if group)
    codes.update(cls.code for cls in every_problem_class())
    return codes


def test_every_code_has_exactly_one_title() -> None:
    codes = every_code()
    assert len(codes) > 40
    for code in sorted(codes):
        titles = {
            problem_body(status, code=code, title=other)["title"]
            for status in (400, 401, 403, 404, 409, 422, 429, 500, 502, 503)
            for other in (None, "Validation error", "Insufficient scope", "Something else")
        }
        assert titles == {title_for(code)}, code
        assert title_for(code).strip()


def test_no_problem_class_carries_its_own_title() -> None:
    for cls in every_problem_class():
        assert "title" not in vars(cls) or cls is ProblemError, cls
        assert cls.code and title_for(cls.code)


def test_the_named_offenders() -> None:
    from stateless.kit.errors import BadGateway
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
