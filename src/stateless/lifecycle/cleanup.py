"""Hard-deletes expired rows in paced, bounded batches (the only code that deletes across
tenants, and only expired rows); erases one tenant's rows through the scoped repository base.
Each batch adds its counts to the erasure counters in its own transaction, and the leader
measures the expired backlog (rows and the oldest one's age) before each pass."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from sqlalchemy import delete, func, inspect, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stateless.kit.data.db import checkpoint_sqlite_wal, utcnow
from stateless.kit.data.tenancy import TenantScopedRepository
from stateless.kit.observe.metrics import Metrics
from stateless.lifecycle.models import ErasureCount
from stateless.lifecycle.pacing import Pacer
from stateless.lifecycle.registry import ExpiringKind, LifecycleRegistry
from stateless.lifecycle.repository import BUCKET_LIFETIME, add_erasure_counts, hour_of
from stateless.tenants.schemas import TenantContext, VerifiedAppId

log = structlog.get_logger("stateless.cleanup")

# The most expired rows one backlog measurement counts (per kind).
BACKLOG_COUNT_CAP = 1_000_000
# How often a drain that runs on logs its pace (info).
PROGRESS_EVERY_SECONDS = 10.0


@dataclass
class CleanupReport:
    deleted: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True, slots=True)
class Batch:
    """What one batch did: rows deleted, whether the kind is drained, and how many other
    sessions were working in the database meanwhile (Postgres; None where unknown)."""

    deleted: int
    drained: bool
    others: int | None = None
    seconds: float | None = None  # the database's own time for the batch's statement


@dataclass(slots=True)
class Walk:
    """Where a drain reads next in physical order (Postgres 14 and later).

    Deleting leaves each row's index entries in place until a vacuum; an index scan for "the
    oldest expired rows" steps over every entry a previous batch deleted. Over a cohort of
    1,000,000 rows with one expiry, batch after batch, that walk grew with each batch (35 ms
    to find 1,000 rows with 300,000 gone, measured under load), batches shrank to their least
    size and the drain took 100 times what its rows cost. Rows written together lie together,
    so once a batch found its rows dense on few pages, the next batches read on from there by
    heap page (a TID range scan, which sees no index), and go back to the index when a range
    runs out of expired rows."""

    page: int | None = None  # the next batch reads from this heap page
    rows_per_page: float = 0.0
    walked: int = 0  # batches that read by page


# A batch whose rows fill at least this many rows per page found a cohort written together.
WALK_MIN_DENSITY = 4.0

BatchFn = Callable[[ExpiringKind, int, Walk], Awaitable[Batch]]

# Other client sessions of this database that are running a statement or are inside a
# transaction: the requests cleanup shares the database with. Read in the batch's own statement.
_OTHERS_AT_WORK = (
    "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
    "AND state IN ('active', 'idle in transaction'))"
)


@dataclass(frozen=True, slots=True)
class Backlog:
    """Expired rows of one kind not yet erased, and how long the oldest has waited (whole
    seconds, 0 when there is none)."""

    expired_rows: int
    oldest_age_seconds: int

    @classmethod
    def measured(cls, expired_rows: int, oldest: datetime | None, now: datetime) -> Backlog:
        age = 0 if oldest is None else max(0, int((now - oldest).total_seconds()))
        return cls(expired_rows, age)


class CleanupService:
    """Expired rows of every tenant (or one) in paced batches; one tenant's rows on request.

    Pacing keeps request writes fast while a large backlog drains, and still erases within
    about a minute: each kind's drain has a `Pacer` (lifecycle/pacing.py) that sizes batches to
    run for about `batch_target_seconds` and rests between them by what the last batches cost
    per row against the uncontended cost (busy database: rest longer) and by what the backlog
    needs to be gone by the deadline. docs/lifecycle.md has the measured figures.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        registry: LifecycleRegistry,
        metrics: Metrics,
        batch_size: int,
        *,
        is_sqlite: bool,
        hook_batch_size: int | None = None,
        clock: Callable[[], datetime] = utcnow,
        batch_target_seconds: float = 0.04,
        deadline_seconds: float = 45.0,
        min_batch_size: int = 100,
        backlog_count_cap: int = BACKLOG_COUNT_CAP,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.registry = registry
        self.metrics = metrics
        self.batch_size = batch_size
        self.hook_batch_size = min(hook_batch_size or batch_size, batch_size)
        self.is_sqlite = is_sqlite
        self.clock = clock
        self.batch_target_seconds = batch_target_seconds
        self.deadline_seconds = deadline_seconds
        self.min_batch_size = min(min_batch_size, batch_size)
        self.backlog_count_cap = backlog_count_cap

    async def run_once(
        self,
        app_id: str | None = None,
        stop: asyncio.Event | None = None,
        backlog: Mapping[str, Backlog] | None = None,
    ) -> CleanupReport:
        """Delete expired rows (of one tenant, or of all). Live rows are never touched here.

        Each batch is its own transaction, so stopping between batches leaves no partial state.
        `backlog` (the leader's measurement before the pass) lets the pace meet the deadline.
        """
        report = await self._run(
            stop, lambda kind, n, walk: self._expired_batch(kind, app_id, n, walk), backlog or {}
        )
        if not report.interrupted:
            try:
                await self._purge_expired_counters(app_id)
            except Exception as exc:  # isolation boundary: the counters must not fail the pass
                report.errors["erasure_counts"] = type(exc).__name__
                self.metrics.cleanup_errors.labels(kind="erasure_counts").inc()
                log.error("cleanup_counters_failed", error_type=type(exc).__name__, exc_info=exc)
        return report

    async def backlog(self) -> dict[str, Backlog]:
        """Every tenant's expired rows awaiting erasure, per kind: one index range on
        `expires_at` each (count and minimum), never a table scan. For the leader's gauges."""
        async with self.sessionmaker() as session:
            return {
                kind.kind: await self._kind_backlog(session, kind) for kind in self.registry.kinds()
            }

    async def _kind_backlog(self, session: AsyncSession, kind: ExpiringKind) -> Backlog:
        """Counted up to `backlog_count_cap` rows, oldest first: counting 5,000,000 expired rows
        of a busy table ran past the statement timeout, and the pass then went without its
        figures, at the least share. A larger backlog reads as the cap; once that many are
        deleted the pass measures again, so the pace still rises as the backlog waits."""
        now = self.clock()
        table: Any = kind.model.__table__
        first = (
            select(table.c.expires_at.label("expires_at"))
            .where(table.c.expires_at <= now)
            .order_by(table.c.expires_at)
            .limit(self.backlog_count_cap)
            .subquery()
        )
        stmt = select(func.count(), func.min(first.c.expires_at))
        count, oldest = (await session.execute(stmt)).one()
        count = int(count)
        if count >= self.backlog_count_cap and not self.is_sqlite:
            # More than the cap: the planner's estimate says how many more (from the last
            # ANALYZE; stale, it says too few, and the cap stands). Pacing a 5,000,000-row
            # cohort by the cap alone planned a million at a time, dawdled, and finished with
            # 14 s of the five minutes to spare.
            count = max(count, await self._estimated_expired(session, table, now))
        return Backlog.measured(count, oldest, now)

    @staticmethod
    async def _estimated_expired(session: AsyncSession, table: Any, now: datetime) -> int:
        """The planner's row estimate for the expired rows of `table` (Postgres; no scan)."""
        sql = (
            f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table.name}"  # noqa: S608 - table from metadata
            " WHERE expires_at <= :now"
        )
        plan = (await session.execute(text(sql), {"now": now})).scalar_one()
        doc = orjson.loads(plan) if isinstance(plan, str | bytes) else plan
        return int(doc[0]["Plan"]["Plan Rows"])

    async def _remeasure(self, kind: ExpiringKind, pacer: Pacer) -> None:
        """Rows that expired during a long pass (a cohort still arriving, a second one) are not
        in the backlog measured before it; once that is deleted, measure again so they keep
        the deadline's pace instead of the least share."""
        try:
            async with self.sessionmaker() as session:
                found = await self._kind_backlog(session, kind)
        except Exception as exc:  # isolation boundary: measuring must never stop the deleting
            self.metrics.cleanup_errors.labels(kind="backlog").inc()
            log.error("cleanup_backlog_failed", error_type=type(exc).__name__, exc_info=exc)
            # A count that could not finish (past the statement timeout: the index entries of
            # the rows just deleted are still there to step over) met a large backlog, not
            # none: the pass goes on as if the cap were left, and measures again after that.
            pacer.assume_left(self.backlog_count_cap)
            return
        pacer.remeasured(found.expired_rows, found.oldest_age_seconds)

    async def next_expiry(self) -> datetime | None:
        """The soonest instant a live row of any kind expires (one index probe per kind)."""
        now = self.clock()
        soonest: datetime | None = None
        async with self.sessionmaker() as session:
            for kind in self.registry.kinds():
                table: Any = kind.model.__table__
                stmt = select(func.min(table.c.expires_at)).where(table.c.expires_at > now)
                found = (await session.execute(stmt)).scalar_one_or_none()
                if found is not None and (soonest is None or found < soonest):
                    soonest = found
        return soonest

    async def erase_tenant(
        self, tenant: TenantContext | VerifiedAppId, stop: asyncio.Event | None = None
    ) -> CleanupReport:
        """Delete every row of one tenant, live ones included (the "erase my data" request).

        Goes through the scoped repository base (`erase_tenant`), so it takes a verified tenant
        and can reach no other tenant's rows; there is no "every tenant" form.
        """
        app_id = tenant.app_id if isinstance(tenant, TenantContext) else str(tenant)
        if not app_id:
            raise ValueError("erase_tenant needs a tenant")
        return await self._run(
            stop, lambda kind, n, walk: self._tenant_batch(kind, tenant, app_id, n), {}
        )

    async def _run(
        self,
        stop: asyncio.Event | None,
        batch: BatchFn,
        backlog: Mapping[str, Backlog],
    ) -> CleanupReport:
        report = CleanupReport()
        started = time.perf_counter()
        for kind in self.registry.kinds():
            try:
                pacer = self._pacer(kind, backlog.get(kind.kind))
                report.deleted[kind.kind] = await self._purge_kind(kind, stop, batch, pacer)
            except Exception as exc:  # isolation boundary: one kind failing must not stop the rest
                report.errors[kind.kind] = type(exc).__name__
                self.metrics.cleanup_errors.labels(kind=kind.kind).inc()
                log.error(
                    "cleanup_kind_failed",
                    kind=kind.kind,
                    error_type=type(exc).__name__,
                    exc_info=exc,
                )
            if stop is not None and stop.is_set():
                report.interrupted = True
                break
        if self.is_sqlite and any(report.deleted.values()):
            await self._sqlite_checkpoint()
        self.metrics.cleanup_seconds.observe(time.perf_counter() - started)
        return report

    def _pacer(self, kind: ExpiringKind, backlog: Backlog | None) -> Pacer:
        limit = self.hook_batch_size if kind.before_delete is not None else self.batch_size
        return Pacer(
            max_batch=limit,
            min_batch=self.min_batch_size,
            batch_target_seconds=self.batch_target_seconds,
            deadline_seconds=self.deadline_seconds,
            backlog_rows=None if backlog is None else backlog.expired_rows,
            oldest_age_seconds=0.0 if backlog is None else backlog.oldest_age_seconds,
        )

    async def _purge_kind(
        self,
        kind: ExpiringKind,
        stop: asyncio.Event | None,
        batch: BatchFn,
        pacer: Pacer,
    ) -> int:
        total = 0
        walk = Walk()
        next_report = time.monotonic() + PROGRESS_EVERY_SECONDS
        while True:
            started = time.perf_counter()
            done = await batch(kind, pacer.size, walk)
            wall = time.perf_counter() - started
            elapsed = wall if done.seconds is None else min(wall, done.seconds)
            total += done.deleted
            if done.deleted:
                self.metrics.cleanup_deleted.labels(kind=kind.kind).inc(done.deleted)
            if done.drained or (stop is not None and stop.is_set()):
                if total:
                    pacer.after_batch(done.deleted, elapsed, done.others, wall)  # the last too
                    log.info(
                        "cleanup_kind_drained",
                        kind=kind.kind,
                        walked=walk.walked,
                        **pacer.figures(),
                    )
                return total
            # Yield the database for as long as the pacer says (busy database: longer).
            rest = pacer.after_batch(done.deleted, elapsed, done.others, wall)
            if pacer.backlog_spent:
                await self._remeasure(kind, pacer)
            if time.monotonic() >= next_report:  # a long drain says how it goes
                next_report += PROGRESS_EVERY_SECONDS
                log.info(
                    "cleanup_kind_draining", kind=kind.kind, walked=walk.walked, **pacer.figures()
                )
            self.metrics.cleanup_share.labels(kind=kind.kind).set(pacer.current_share)
            if pacer.others is not None:
                self.metrics.cleanup_others_at_work.labels(kind=kind.kind).set(pacer.others)
            await asyncio.sleep(rest)

    async def _expired_batch(
        self, kind: ExpiringKind, app_id: str | None, n: int, walk: Walk
    ) -> Batch:
        model: Any = kind.model
        async with self.sessionmaker() as session:
            if kind.before_delete is None:
                result = await self._delete_batch_direct(session, kind.kind, model, app_id, n, walk)
            else:
                conditions = [model.expires_at <= self.clock()]
                if app_id is not None:
                    conditions.append(model.app_id == app_id)
                by_tenant, drained = await self._delete_batch_with_rows(
                    session, kind, model, conditions, n
                )
                await self._count_erased(session, kind.kind, by_tenant)
                result = Batch(sum(by_tenant.values()), drained)
            await session.commit()
        return result

    async def _tenant_batch(
        self, kind: ExpiringKind, tenant: TenantContext | VerifiedAppId, app_id: str, n: int
    ) -> Batch:
        model: Any = kind.model
        async with self.sessionmaker() as session:
            if kind.before_delete is None:
                repo = TenantScopedRepository.for_model(model)(session, tenant, self.clock)
                deleted = await repo.erase_tenant(app_id, limit=n)
                by_tenant, drained = {app_id: deleted}, deleted < n
            else:
                by_tenant, drained = await self._delete_batch_with_rows(
                    session, kind, model, [model.app_id == app_id], n
                )
            await self._count_erased(session, kind.kind, by_tenant)
            await session.commit()
        return Batch(sum(by_tenant.values()), drained)

    async def _count_erased(
        self, session: AsyncSession, kind: str, by_tenant: Mapping[str, int]
    ) -> None:
        """Add a batch's deletions to the erasure counters, in the batch's transaction."""
        counts = {(app_id, kind): count for app_id, count in by_tenant.items() if count}
        if counts:
            await add_erasure_counts(session, counts, self.clock())

    async def _purge_expired_counters(self, app_id: str | None) -> None:
        """Erasure counter buckets past their 24 hours (of one tenant, or of all)."""
        table: Any = ErasureCount.__table__
        stmt = delete(table).where(table.c.expires_at <= self.clock())
        if app_id is not None:
            stmt = stmt.where(table.c.app_id == app_id)
        async with self.sessionmaker() as session:
            await session.execute(stmt)
            await session.commit()

    async def _delete_batch_direct(
        self,
        session: AsyncSession,
        kind: str,
        model: Any,
        app_id: str | None,
        n: int,
        walk: Walk | None = None,
    ) -> Batch:
        """One statement per batch, by physical row id (Postgres ctid, a TID scan; SQLite rowid):
        no rows travel to Python, no primary-key probes, locks held only for the batch, and on
        Postgres SKIP LOCKED so it never waits on a writer. Expired rows only, oldest first
        (walking a cohort, in the order it was written).

        `ORDER BY expires_at` keeps the batch on the expiry index. Without it, once statistics
        say a large share of the table has expired, the planner reads the table from its start
        for `LIMIT n` rows it expects everywhere; a cohort written last sits at the end, and
        each batch of 1,000 then read 6,600,000 rows (1.6 s, measured on 15,000,000).

        The batch's deletions per tenant go to the erasure counters in the same transaction:
        on Postgres inside the same statement (the deleted rows' app ids grouped and upserted
        by data-modifying CTEs: a separate upsert cost a round trip per batch and, measured,
        most of the batch's time budget); SQLite returns each deleted row's app id. On Postgres
        the same statement counts the other sessions at work, for the pacer.

        On Postgres 14 and later a batch that found its rows on few pages hands on a `Walk`: the
        next batches take the expired rows from there by heap page, not by the index."""
        table = model.__table__.name  # our own metadata, never user input
        now = self.clock()
        # SQLite keeps naive UTC text in SQLAlchemy's format (see UTCDateTime)
        params: dict[str, Any] = {
            "n": n,
            "now": now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if self.is_sqlite else now,
        }
        where = ["expires_at <= :now"]
        if app_id is not None:
            where.append("app_id = :app_id")
            params["app_id"] = app_id
        condition = " AND ".join(where)
        if self.is_sqlite:
            sql = (
                f"DELETE FROM {table} WHERE rowid IN ("  # noqa: S608 - table from metadata
                f"SELECT rowid FROM {table} WHERE {condition} ORDER BY expires_at LIMIT :n) "
                "RETURNING app_id"
            )
            result = await session.execute(text(sql), params)
            by_tenant = Counter(str(app) for (app,) in result.all())
            await self._count_erased(session, kind, by_tenant)
            deleted = sum(by_tenant.values())
            return Batch(deleted, deleted < n)
        # The batch need not wait for its WAL to reach the disk: a crash can only lose whole
        # batches (rows and their counts together), which were expired, invisible, and go
        # again on the next pass. Requests' own commits then stop queueing behind a burst
        # of deletion WAL flushes.
        await session.execute(text("SET LOCAL synchronous_commit = off"))
        hour = hour_of(now)
        params.update(kind=kind, hour=hour, bucket_expires=hour + BUCKET_LIFETIME)
        walks = walk is not None and _walks(session)
        walking = walks and walk is not None and walk.page is not None
        if walking:
            assert walk is not None and walk.page is not None
            walk.walked += 1
            # Enough pages for twice the batch at the density the last batch found.
            span = int(2 * n / walk.rows_per_page) + 1
            params.update(lo=(walk.page, 0), hi=(walk.page + span, 0))  # (page, item) tids
            where.insert(0, "ctid >= CAST(:lo AS tid) AND ctid < CAST(:hi AS tid)")
            chosen = " AND ".join(where) + " LIMIT :n"
        else:
            chosen = condition + " ORDER BY expires_at LIMIT :n"
        sql = (
            f"WITH gone AS (DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # noqa: S608
            f"SELECT ctid FROM {table} WHERE {chosen} "
            "FOR UPDATE SKIP LOCKED)) "
            "RETURNING app_id, ctid), "
            "tally AS (SELECT app_id, count(*) AS n FROM gone GROUP BY app_id), "
            "counted AS (INSERT INTO erasure_counts "
            "(app_id, kind, hour, erased, created_at, expires_at) "
            "SELECT app_id, :kind, :hour, n, :now, :bucket_expires FROM tally "
            "ON CONFLICT (app_id, kind, hour) "
            "DO UPDATE SET erased = erasure_counts.erased + excluded.erased) "
            f"SELECT coalesce(sum(n), 0), {_OTHERS_AT_WORK}, "
            + (  # the first and last heap page the batch emptied rows on (min(tid): 14+)
                "(SELECT (min(ctid)::text::point)[0] FROM gone), "
                "(SELECT (max(ctid)::text::point)[0] FROM gone), "
                if walks
                else "NULL, NULL, "
            )
            # the statement's own time, as the database saw it (the wall clock in a busy
            # process also counts the wait for the event loop)
            + "extract(epoch FROM clock_timestamp() - statement_timestamp()) FROM tally"
        )
        row = (await session.execute(text(sql), params)).one()
        deleted, others, first, last, seconds = row
        deleted = int(deleted)
        if walk is not None and walks:
            _walk_on(walk, deleted, n, first, last)
        # A range that ran out of expired rows says nothing of the rest: the index does.
        return Batch(deleted, deleted < n and not walking, int(others), float(seconds))

    async def _delete_batch_with_rows(
        self,
        session: AsyncSession,
        kind: ExpiringKind,
        model: Any,
        conditions: list[Any],
        n: int,
    ) -> tuple[dict[str, int], bool]:
        """Load one batch, run the kind's hook on it (bodies before rows), then delete it.
        Answers the rows deleted per tenant and whether the kind is drained."""
        pk_columns = list(inspect(model).primary_key)
        stmt = select(model).where(*conditions).order_by(model.expires_at).limit(n)
        if not self.is_sqlite:
            stmt = stmt.with_for_update(skip_locked=True)
        rows = (await session.scalars(stmt)).all()
        if not rows:
            return {}, True
        if kind.before_delete is not None:
            await kind.before_delete(rows)
        keys = [tuple(getattr(row, col.key) for col in pk_columns) for row in rows]
        await session.execute(
            delete(model)
            .where(tuple_(*pk_columns).in_(keys))
            .execution_options(synchronize_session=False)
        )
        # The rows are locked (Postgres) or the writer is alone (SQLite): all of them went.
        return dict(Counter(str(row.app_id) for row in rows)), len(rows) < n

    async def _sqlite_checkpoint(self) -> None:
        """Fold the WAL into the main file and truncate it, so erased pages leave no copy behind."""
        async with self.sessionmaker() as session:
            await checkpoint_sqlite_wal(session)


def _walks(session: AsyncSession) -> bool:
    """TID range scans came with Postgres 14; before, `ctid >= ...` reads the whole table."""
    version = session.get_bind().dialect.server_version_info or (0,)
    return tuple(version) >= (14,)


def _walk_on(walk: Walk, deleted: int, n: int, first: float | None, last: float | None) -> None:
    """After a batch: read on by page from where it ended if it filled its batch with rows
    packed on few pages, else go back to the index."""
    if deleted < n or first is None or last is None:
        walk.page = None
        return
    density = deleted / (int(last) - int(first) + 1)
    if walk.page is None and density < WALK_MIN_DENSITY:
        return  # rows scattered over the table: the index finds them best
    # The last page may hold expired rows the batch's limit left: start there.
    walk.page, walk.rows_per_page = int(last), max(density, 1.0)
