"""`report_generation`: an aggregate CSV (conversions, bot tasks, push) into storage.

Rows: metric,day,dimension,count,value_sum_minor. Aggregation runs in SQL over live rows only;
the report holds counts and sums, never identifiers.
"""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Any

from pydantic import ConfigDict, Field, model_validator
from sqlalchemy import func

from stateless.bots.models import BotTask
from stateless.bots.repository import LiveRows
from stateless.bots.tasks.base import TaskDeps, TaskRejected, TaskType, store_task_file
from stateless.kit.bounds import BoundedDate, BoundedInput
from stateless.kit.db import session_scope, utcnow

DEFAULT_DAYS = 30
MAX_DAYS = 366
HEADER = ["metric", "day", "dimension", "count", "value_sum_minor"]


class ReportContext(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    since: BoundedDate | None = Field(
        default=None, description="First day (UTC), default 30 days ago."
    )
    until: BoundedDate | None = Field(default=None, description="Last day (UTC), default today.")
    ttl_seconds: int | None = Field(default=None, description="Lifetime of the file.")

    @model_validator(mode="after")
    def _ordered(self) -> ReportContext:
        if self.since and self.until and self.since > self.until:
            raise ValueError("since must not be after until")
        return self


def _window(ctx: ReportContext) -> tuple[date, date]:
    until = ctx.until or utcnow().date()
    since = ctx.since or until - timedelta(days=DEFAULT_DAYS - 1)
    return since, until


def _model(deps: TaskDeps, kind: str) -> type[Any] | None:
    registry = deps.container.services["lifecycle"]
    try:
        model: type[Any] = registry.get(kind).model
    except KeyError:
        return None
    return model


async def prepare(ctx: ReportContext, deps: TaskDeps) -> None:
    since, until = _window(ctx)
    if (until - since).days >= MAX_DAYS:
        raise TaskRejected(f"A report covers at most {MAX_DAYS} days").with_code("range_too_long")
    deps.container.services["lifecycle"].policy.lifetime("stored_files", ctx.ttl_seconds)


async def _rows(deps: TaskDeps, since: date, until: date) -> tuple[list[list[Any]], dict[str, int]]:
    rows: list[list[Any]] = []
    totals = {"conversions": 0, "bot_tasks": 0, "push_tasks": 0, "device_tokens": 0}
    async with session_scope(deps.sessionmaker) as session:
        aggregates = _model(deps, "affiliate_aggregates")
        if aggregates is not None:
            found = await LiveRows(session, deps.tenant, aggregates).grouped(
                [aggregates.day, aggregates.event, aggregates.currency],
                [func.sum(aggregates.conversions), func.sum(aggregates.value_sum_minor)],
                aggregates.day >= since,
                aggregates.day <= until,
            )
            for day, event, currency, count, value in found:
                dimension = f"{event}/{currency}" if currency else str(event)
                rows.append(["conversions", str(day), dimension, int(count or 0), str(value or 0)])
                totals["conversions"] += int(count or 0)
        tasks = await LiveRows(session, deps.tenant, BotTask).grouped(
            [BotTask.task_type, BotTask.status], [func.count()]
        )
        for task_type, status, count in tasks:
            metric = "push_tasks" if task_type == "push" else "bot_tasks"
            rows.append([metric, "", f"{task_type}/{status}", int(count), ""])
            totals[metric] += int(count)
        tokens = _model(deps, "device_tokens")
        if tokens is not None and hasattr(tokens, "environment"):
            for environment, count in await LiveRows(session, deps.tenant, tokens).grouped(
                [tokens.environment], [func.count()]
            ):
                rows.append(["device_tokens", "", str(environment), int(count), ""])
                totals["device_tokens"] += int(count)
    return rows, totals


async def run(ctx: ReportContext, deps: TaskDeps) -> dict[str, Any]:
    since, until = _window(ctx)
    rows, totals = await _rows(deps, since, until)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    async with session_scope(deps.sessionmaker) as session:
        stored = await store_task_file(
            deps,
            session,
            data,
            content_type="text/csv",
            filename=f"{deps.tenant.app_id}-report-{since}-{until}.csv",
            ttl_seconds=ctx.ttl_seconds,
        )
    return {
        **stored,
        "since": str(since),
        "until": str(until),
        "rows": len(rows),
        "totals": totals,
    }


TASK = TaskType(
    name="report_generation",
    context=ReportContext,
    run=run,
    prepare=prepare,
    description="Aggregate report (conversions, tasks, push) as CSV in storage; returns a URL.",
)
