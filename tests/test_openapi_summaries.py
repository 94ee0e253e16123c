"""What /docs lists: every operation's summary reads as a sentence for people, not a route name
("Register an APNs device token", never "Ios.Register Token")."""

from __future__ import annotations

from tests.conftest import Client


async def test_every_operation_has_a_summary_for_people(client: Client) -> None:
    document = (await client.get("/openapi.json")).json()
    seen = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            summary = operation.get("summary") or ""
            seen += 1
            assert summary[:1].isupper(), (method, path, summary)
            assert "." not in summary and "_" not in summary, (method, path, summary)
            assert len(summary.split()) >= 2, (method, path, summary)
    assert seen > 40
