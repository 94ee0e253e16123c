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

from stateless.affiliate.service import AffiliateService
from stateless.bots.models import BotTask
from stateless.bots.repository import LiveRows
from stateless.bots.tasks.base import TaskDeps, TaskRejected, TaskType, store_task_file
from stateless.ios.service import DeviceTokenService
from stateless.kit.data.db import session_scope, utcnow
from stateless.kit.wire.bounds import BoundedDate, BoundedInput

DEFAULT_DAYS = 30
MAX_DAYS = 366
HEADER = ["metric", "day", "dimension", "count", "value_sum_minor"]
# A year of days times events and currencies; a report beyond it is cut (never seen in practice).
MAX_CONVERSION_ROWS = 100_000


class RangeTooLong(TaskRejected):
    code = "range_too_long"


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


async def prepare(ctx: ReportContext, deps: TaskDeps) -> None:
    since, until = _window(ctx)
    if (until - since).days >= MAX_DAYS:
        raise RangeTooLong(f"A report covers at most {MAX_DAYS} days")
    deps.providers.lifecycle.policy.lifetime("stored_files", ctx.ttl_seconds)


async def _rows(deps: TaskDeps, since: date, until: date) -> tuple[list[list[Any]], dict[str, int]]:
    """Conversions (affiliate service), task outcomes (here) and device tokens (ios service)."""
    rows: list[list[Any]] = []
    totals = {"conversions": 0, "bot_tasks": 0, "push_tasks": 0, "device_tokens": 0}
    providers = deps.providers
    async with session_scope(deps.sessionmaker) as session:
        affiliate = AffiliateService(
            session,
            deps.tenant,
            kit=providers.kit,
            keys=providers.affiliate_keys,
            policy=providers.lifecycle.policy,
            metrics=providers.metrics,
        )
        for row in await affiliate.daily_totals(since, until, MAX_CONVERSION_ROWS):
            currency = row.currency
            dimension = f"{row.event}/{currency}" if currency else str(row.event)
            count = row.conversions
            rows.append(["conversions", str(row.day), dimension, count, str(row.value_sum_minor)])
            totals["conversions"] += count
        tasks = await LiveRows(session, deps.tenant, BotTask).grouped(
            [BotTask.task_type, BotTask.status], [func.count()]
        )
        for task_type, status, count in tasks:
            metric = "push_tasks" if task_type == "push" else "bot_tasks"
            rows.append([metric, "", f"{task_type}/{status}", int(count), ""])
            totals[metric] += int(count)
        tokens = DeviceTokenService(session, deps.tenant, providers.kit, providers.lifecycle.policy)
        for environment, count in (await tokens.live_counts_by_environment()).items():
            rows.append(["device_tokens", "", environment, count, ""])
            totals["device_tokens"] += count
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
