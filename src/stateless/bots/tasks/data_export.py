"""`data_export`: the tenant's live data as one JSON file in storage; the result is its URL.

Every registered kind of data is exported in the form it is kept: keyed hashes stay hashes and
sealed values are not opened (they appear as "[sealed]"), so the file holds no more than the
database does. The download URL expires with the object (stored_files TTL).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ConfigDict, Field

from stateless.bots.repository import LiveRows
from stateless.bots.tasks.base import TaskDeps, TaskRejected, TaskType, store_task_file
from stateless.kit.data.db import session_scope, utcnow
from stateless.kit.wire.bounds import BoundedInput
from stateless.kit.wire.timestamps import format_timestamp

MAX_ROWS_PER_KIND = 100_000
SEALED = "[sealed]"


class UnknownKind(TaskRejected):
    code = "unknown_kind"


class DataExportContext(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    kinds: list[str] | None = Field(
        default=None, max_length=50, description="Kinds to export (default: all)."
    )
    ttl_seconds: int | None = Field(default=None, description="Lifetime of the file.")


def _value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name.endswith("_sealed"):
        return SEALED
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return None
    return value


def _selected(deps: TaskDeps, wanted: list[str] | None) -> list[Any]:
    kinds = deps.providers.lifecycle.kinds()
    if wanted is None:
        return list(kinds)
    known = {k.kind for k in kinds}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise UnknownKind(f"Unknown kinds: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [k for k in kinds if k.kind in wanted]


async def prepare(ctx: DataExportContext, deps: TaskDeps) -> None:
    _selected(deps, ctx.kinds)
    deps.providers.lifecycle.policy.lifetime("stored_files", ctx.ttl_seconds)


async def run(ctx: DataExportContext, deps: TaskDeps) -> dict[str, Any]:
    kinds = _selected(deps, ctx.kinds)
    exported: dict[str, list[dict[str, Any]]] = {}
    async with session_scope(deps.sessionmaker) as session:
        for kind in kinds:
            columns = [c.name for c in kind.model.__table__.columns if c.name != "app_id"]
            rows = await LiveRows(session, deps.tenant, kind.model).all(limit=MAX_ROWS_PER_KIND)
            exported[kind.kind] = [
                {name: _value(name, getattr(row, name)) for name in columns} for row in rows
            ]
        document = {
            "tenant": deps.tenant.app_id,
            "exported_at": format_timestamp(utcnow()),
            "format": "stateless-export/1",
            "note": "keyed hashes and sealed values are exported as stored; none are opened",
            "kinds": exported,
        }
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
        stored = await store_task_file(
            deps,
            session,
            data,
            content_type="application/json",
            filename=f"{deps.tenant.app_id}-export.json",
            ttl_seconds=ctx.ttl_seconds,
        )
    return {**stored, "counts": {kind: len(rows) for kind, rows in exported.items()}}


TASK = TaskType(
    name="data_export",
    context=DataExportContext,
    run=run,
    prepare=prepare,
    description="Export the app's live data as JSON into storage; returns a download URL.",
)
