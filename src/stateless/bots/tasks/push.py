"""`push`: the same notification as POST /api/v1/ios/push and/or POST /api/v1/web/push.

`target` picks the channel: `ios` (default; the context is the /ios/push body), `web` (the
context is the /web/push body) or `all` (`{"target": "all", "ios": {...}, "web": {...}}`). The
result is stored with the task record, so it keeps counts and failure reasons only, never device
or subscriber ids.

A broadcast (`all`, or more ids than PUSH_SYNC_MAX) queued for the worker is a resumable job:
keyset pages, each sent whole and journaled (cursor and counts per channel) on the task row, so
a restarted worker resumes after the last recorded page. See docs/bots.md.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from stateless.bots.progress import TaskCancelled, TaskJournal, progress_counts
from stateless.bots.tasks.base import TaskDeps, TaskFailed, TaskRejected, TaskType
from stateless.config import Settings
from stateless.ios.schemas import PushIn
from stateless.ios.service import (
    ApnsNotConfigured,
    ApnsUnreachable,
    PushService,
    credentials_of,
)
from stateless.kit.data.db import session_scope
from stateless.kit.push.pushing import PushTally
from stateless.kit.web.errors import PayloadTooLarge
from stateless.webpush.schemas import WebPushIn
from stateless.webpush.service import WebPushNotConfigured, WebPushService, vapid_of

Target = Literal["ios", "web", "all"]


class NoApnsKey(TaskRejected):
    """Push as a task: a missing APNs key is a 422 of the task request (a 409 on /ios/push)."""

    code = "apns_not_configured"


class NoVapidKeys(TaskRejected):
    """Likewise for Web Push without VAPID keys or contact (a 409 on /web/push)."""

    code = "webpush_not_configured"


class PayloadRejected(TaskRejected):
    code = "payload_too_large"


class PushTaskIn(BaseModel):
    """`target` plus the body of the matching push endpoint (both bodies for `all`)."""

    model_config = ConfigDict(extra="forbid")

    target: Target = "ios"
    ios: PushIn | None = None
    web: WebPushIn | None = None

    @model_validator(mode="before")
    @classmethod
    def _split_by_target(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        rest = dict(value)
        target = rest.pop("target", "ios")
        if target in ("ios", "web"):
            return {"target": target, target: rest}
        if target == "all":
            return {"target": target, **rest}
        return value  # an unknown target fails on the Literal

    @model_validator(mode="after")
    def _both_for_all(self) -> PushTaskIn:
        if self.target == "all" and (self.ios is None or self.web is None):
            raise ValueError('target "all" needs both an "ios" and a "web" push body')
        return self


async def prepare(ctx: PushTaskIn, deps: TaskDeps) -> None:
    kit, tenant = deps.providers.kit, deps.tenant
    if ctx.ios is not None:
        try:
            credentials_of(kit, tenant)
        except ApnsNotConfigured as exc:
            raise NoApnsKey(exc.detail) from exc
    if ctx.web is not None:
        try:
            vapid_of(kit, tenant)
        except WebPushNotConfigured as exc:
            raise NoVapidKeys(exc.detail) from exc


def _summary(sent: int, failed: int, removed: int, reasons: Counter[str]) -> dict[str, Any]:
    return {
        "sent": sent,
        "failed": failed,
        "removed": removed,
        "reasons": dict(sorted(reasons.items())),
    }


async def _run_ios(ctx: PushIn, deps: TaskDeps) -> dict[str, Any]:
    providers = deps.providers
    try:
        # The task owns its transaction: dead tokens are deleted when the push is done.
        async with session_scope(deps.sessionmaker) as session:
            service = PushService(
                session, deps.tenant, providers.kit, providers.apns, providers.metrics
            )
            out = await service.push(ctx)
    except ApnsNotConfigured as exc:
        raise NoApnsKey(exc.detail) from exc
    except ApnsUnreachable as exc:
        raise TaskFailed("APNs could not be reached", transient=True) from exc
    reasons = Counter(r.reason or r.status for r in out.results if r.status != "sent")
    return _summary(out.sent, out.failed, out.removed, reasons)


async def _run_web(ctx: WebPushIn, deps: TaskDeps) -> dict[str, Any]:
    providers = deps.providers
    client = providers.webpush
    try:
        async with session_scope(deps.sessionmaker) as session:
            service = WebPushService(
                session, deps.tenant, providers.kit, client.sender, client.signer, providers.metrics
            )
            out = await service.push(ctx)
    except WebPushNotConfigured as exc:
        raise NoVapidKeys(exc.detail) from exc
    except PayloadTooLarge as exc:
        raise PayloadRejected(exc.detail) from exc
    reasons = Counter(r.reason or r.status for r in out.results if r.status != "sent")
    return _summary(out.sent, out.failed, out.removed, reasons)


def is_broadcast(ctx: PushTaskIn, settings: Settings) -> bool:
    bodies: list[PushIn | WebPushIn | None] = [ctx.ios, ctx.web]
    return any(b is not None and b.is_broadcast(settings.push_sync_max) for b in bodies)


async def _broadcast_channel(
    channel: str, body: PushIn | WebPushIn, deps: TaskDeps, journal: TaskJournal
) -> None:
    """One channel of a broadcast, from its recorded cursor; every page commits its deletions
    and then journals cursor and counts (renewing the lease, noticing a cancel)."""
    providers = deps.providers
    progress = dict(journal.saved)
    state: dict[str, Any] = dict(progress.get(channel) or {})
    async with session_scope(deps.sessionmaker) as session:
        service: PushService | WebPushService
        if isinstance(body, PushIn):
            service = PushService(
                session, deps.tenant, providers.kit, providers.apns, providers.metrics
            )
        else:
            client = providers.webpush
            service = WebPushService(
                session, deps.tenant, providers.kit, client.sender, client.signer, providers.metrics
            )
        if "total" not in state:  # first run: the live audience, counted once
            total = await service.audience(body)  # type: ignore[arg-type]
            await session.commit()
            state = {"cursor": None, "sent": 0, "failed": 0, "removed": 0, "total": total}
            await journal.record({**progress, channel: state})

        tallies: list[PushTally[Any]] = []

        async def on_page(cursor: str | None, tally: PushTally[Any]) -> None:
            tallies[:] = [tally]
            await session.commit()  # this page's deletions, before its cursor is recorded
            state.update(cursor=cursor, sent=tally.sent, failed=tally.failed, removed=tally.removed)
            await journal.record({**journal.saved, channel: dict(state)})

        try:
            await service.broadcast(
                body,  # type: ignore[arg-type]
                start_after=state["cursor"],
                counts=(state["sent"], state["failed"], state["removed"]),
                on_page=on_page,
                page_timeout_seconds=deps.settings.bot_timeout_seconds,
            )
        except TaskCancelled:
            # The sends under way when the cancel was noticed finished and were settled:
            # their deletions and counts belong to the cancelled run's record.
            await session.commit()
            if tallies:
                tally = tallies[0]
                final = {**state, "sent": tally.sent, "failed": tally.failed}
                final["removed"] = tally.removed
                await journal.amend_cancelled({**journal.saved, channel: final})
            raise
    await journal.record({**journal.saved, channel: {**state, "cursor": None, "done": True}})


async def _broadcast(ctx: PushTaskIn, deps: TaskDeps, journal: TaskJournal) -> dict[str, Any]:
    channels: list[tuple[str, PushIn | WebPushIn | None]] = [("ios", ctx.ios), ("web", ctx.web)]
    for channel, body in channels:
        if body is None or (journal.saved.get(channel) or {}).get("done"):
            continue
        try:
            await _broadcast_channel(channel, body, deps, journal)
        except ApnsNotConfigured as exc:
            raise NoApnsKey(exc.detail) from exc
        except ApnsUnreachable as exc:
            raise TaskFailed("APNs could not be reached", transient=True) from exc
        except WebPushNotConfigured as exc:
            raise NoVapidKeys(exc.detail) from exc
        except PayloadTooLarge as exc:
            raise PayloadRejected(exc.detail) from exc
    counts = progress_counts(journal.saved) or {}
    return {**counts, "broadcast": True}


async def run(ctx: PushTaskIn, deps: TaskDeps) -> dict[str, Any]:
    if deps.journal is not None:
        return await _broadcast(ctx, deps, deps.journal)
    if ctx.target == "ios" and ctx.ios is not None:
        return await _run_ios(ctx.ios, deps)
    if ctx.target == "web" and ctx.web is not None:
        return await _run_web(ctx.web, deps)
    assert ctx.ios is not None and ctx.web is not None
    ios = await _run_ios(ctx.ios, deps)
    web = await _run_web(ctx.web, deps)
    return {
        "sent": ios["sent"] + web["sent"],
        "failed": ios["failed"] + web["failed"],
        "removed": ios["removed"] + web["removed"],
        "ios": ios,
        "web": web,
    }


TASK = TaskType(
    name="push",
    context=PushTaskIn,
    run=run,
    prepare=prepare,
    description="Send a notification over APNs (target ios, the default), Web Push (web) or "
    "both (all), as POST /ios/push and POST /web/push.",
    resumable=is_broadcast,
)
