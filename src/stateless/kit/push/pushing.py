"""What an APNs push and a Web Push share: rows streamed page by page into a fixed pool of
senders, outcomes counted as they settle, and a per-tenant cap on requests in flight.

Why one module: both pushes read recipients from the database in keyset pages, send each with
bounded concurrency while the next page is read, delete the recipients the push service calls
gone, and report counts (a push to `all`) or one result per listed id. Only the row, the
request and the meaning of an answer differ; those stay with each service.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

import structlog
from prometheus_client import Counter as MetricCounter

RowT = TypeVar("RowT")
RowT_co = TypeVar("RowT_co", covariant=True)
OutcomeT = TypeVar("OutcomeT")
ResultT = TypeVar("ResultT")

Status = Literal["sent", "removed", "failed"]
Settled = list[tuple[RowT, OutcomeT]]
# settle(outcomes, last): called after each page and once more, with `last`, at the end.
Settle = Callable[[Settled[RowT, OutcomeT], bool], Awaitable[None]]

log = structlog.get_logger("stateless.kit.push.pushing")


class SenderPool(Generic[RowT, OutcomeT]):
    """Workers (spawned as rows arrive, at most `workers`) send the rows put in a short queue.

    Rows in memory: one page plus `2 * workers`; outcomes collect in `done` until `take()`.
    A send that raises is one failed row (`on_error()`), never the end of the push.
    """

    def __init__(
        self,
        send: Callable[[RowT], Awaitable[OutcomeT]],
        workers: int,
        on_error: Callable[[], OutcomeT],
    ) -> None:
        self._send = send
        self._workers = workers
        self._on_error = on_error
        self._queue: asyncio.Queue[RowT | None] = asyncio.Queue(maxsize=workers)
        self._tasks: list[asyncio.Task[None]] = []
        self.done: Settled[RowT, OutcomeT] = []

    async def _work(self) -> None:
        while (row := await self._queue.get()) is not None:
            try:
                outcome = await self._send(row)
            except Exception as exc:  # isolation boundary: one push, counted as failed
                # The type only: a traceback's locals could hold a token or an endpoint.
                log.error("push_send_failed", error=type(exc).__name__)
                outcome = self._on_error()
            self.done.append((row, outcome))

    async def put(self, row: RowT) -> None:
        if len(self._tasks) < self._workers:
            self._tasks.append(asyncio.create_task(self._work()))
        await self._queue.put(row)

    def take(self) -> Settled[RowT, OutcomeT]:
        done, self.done = self.done, []
        return done

    async def finish(self) -> Settled[RowT, OutcomeT]:
        for _ in self._tasks:
            await self._queue.put(None)
        await asyncio.gather(*self._tasks)
        self._tasks = []
        return self.take()

    async def cancel(self) -> None:
        """Stop the workers (a push that ended early); a no-op after `finish()`."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


async def push_pages(
    page_after: Callable[[str | None, int], Awaitable[Sequence[RowT]]],
    key: Callable[[RowT], str],
    pool: SenderPool[RowT, OutcomeT],
    settle: Settle[RowT, OutcomeT],
    batch_size: int,
) -> None:
    """Every row, page after page (keyset on `key`): a page is read while the previous one is
    still on the wire, outcomes settle as they come."""
    after: str | None = None
    while True:
        rows = await page_after(after, batch_size)
        for row in rows:
            await pool.put(row)
        await settle(pool.take(), False)
        if len(rows) < batch_size:
            break
        after = key(rows[-1])
    await settle(await pool.finish(), True)


async def push_listed(
    hashes: Sequence[str],
    by_hashes: Callable[[Sequence[str]], Awaitable[Sequence[RowT]]],
    key: Callable[[RowT], str],
    pool: SenderPool[RowT, OutcomeT],
    settle: Settle[RowT, OutcomeT],
    batch_size: int,
) -> set[str]:
    """The rows of the listed hashes, `batch_size` at a time; returns the hashes found."""
    found: set[str] = set()
    for start in range(0, len(hashes), batch_size):
        rows = await by_hashes(hashes[start : start + batch_size])
        found.update(key(row) for row in rows)
        for row in rows:
            await pool.put(row)
        await settle(pool.take(), False)
    await settle(await pool.finish(), True)
    return found


async def deliver(
    pool: SenderPool[RowT, OutcomeT],
    *,
    names: dict[str, str] | None,
    page_after: Callable[[str | None, int], Awaitable[Sequence[RowT]]],
    by_hashes: Callable[[Sequence[str]], Awaitable[Sequence[RowT]]],
    key: Callable[[RowT], str],
    settle: Settle[RowT, OutcomeT],
    batch_size: int,
    tally: PushTally[ResultT],
    missing: Callable[[str], ResultT],
    name_of: Callable[[ResultT], str],
) -> None:
    """One push: every row (`names` None) or the listed ones (hash -> caller's id), whose
    missing ids end as `missing(id)` results in the caller's order. The pool's workers are
    stopped however the push ends."""
    try:
        if names is None:
            await push_pages(page_after, key, pool, settle, batch_size)
        else:
            found = await push_listed(list(names), by_hashes, key, pool, settle, batch_size)
            tally.finish_listed(names, found, missing, name_of)
    finally:
        await pool.cancel()  # only does something when the push stopped early


@dataclass(frozen=True)
class Page(Generic[RowT]):
    """One page of a broadcast: its rows and the key the next page starts after."""

    rows: Sequence[RowT]
    cursor: str | None
    last: bool


async def push_journaled(
    pool: SenderPool[RowT, OutcomeT],
    *,
    next_page: Callable[[str | None], Awaitable[Page[RowT]]],
    start_after: str | None,
    settle: Settle[RowT, OutcomeT],
    page_timeout_seconds: float,
    on_page: Callable[[Page[RowT]], Awaitable[None]],
) -> None:
    """A broadcast: page after page from `start_after`, each page sent and settled whole before
    `on_page` records its cursor, so a run resumed from the last recorded cursor skips nobody
    and repeats at most the page that was in flight. Each page (read, send, settle) is bounded
    by `page_timeout_seconds` (TimeoutError); the pool's workers stop however it ends."""
    after = start_after
    try:
        while True:
            async with asyncio.timeout(page_timeout_seconds):
                page = await next_page(after)
                for row in page.rows:
                    await pool.put(row)
                await settle(await pool.finish(), page.last)
            await on_page(page)
            if page.last:
                return
            after = page.cursor
    finally:
        await pool.cancel()


def keyset_pages(
    page_after: Callable[[str | None, int], Awaitable[Sequence[RowT]]],
    key: Callable[[RowT], str],
    batch_size: int,
) -> Callable[[str | None], Awaitable[Page[RowT]]]:
    """Every live row, by key (no OFFSET): constant cost per page however far in."""

    async def next_page(after: str | None) -> Page[RowT]:
        rows = await page_after(after, batch_size)
        cursor = key(rows[-1]) if rows else after
        return Page(rows, cursor, last=len(rows) < batch_size)

    return next_page


def listed_pages(
    hashes: Sequence[str],
    by_hashes: Callable[[Sequence[str]], Awaitable[Sequence[RowT]]],
    batch_size: int,
    on_missing: Callable[[int], None],
) -> Callable[[str | None], Awaitable[Page[RowT]]]:
    """The listed hashes in key order, `batch_size` at a time; the cursor is the last hash of
    the chunk (found or not), and `on_missing(n)` counts those with no live row."""
    ordered = sorted(set(hashes))

    async def next_page(after: str | None) -> Page[RowT]:
        start = 0 if after is None else bisect.bisect_right(ordered, after)
        chunk = ordered[start : start + batch_size]
        rows = await by_hashes(chunk) if chunk else []
        on_missing(len(chunk) - len(rows))
        last = start + batch_size >= len(ordered)
        return Page(rows, chunk[-1] if chunk else after, last)

    return next_page


def names_by_hash(ids: Iterable[str], hash_of: Callable[[str], str]) -> dict[str, str]:
    """hash -> the caller's id, in the caller's order; a repeated id is pushed once."""
    names: dict[str, str] = {}
    for name in ids:
        names.setdefault(hash_of(name), name)
    return names


@dataclass
class PushTally(Generic[ResultT]):
    """Counts of one push, and the per-id results when the caller listed ids."""

    sent: int = 0
    failed: int = 0
    removed: int = 0
    results: list[ResultT] = field(default_factory=list)

    def count(self, status: Status) -> None:
        if status == "sent":
            self.sent += 1
        elif status == "removed":
            self.removed += 1
        else:
            self.failed += 1

    def finish_listed(
        self,
        names: dict[str, str],
        found: set[str],
        missing: Callable[[str], ResultT],
        name_of: Callable[[ResultT], str],
    ) -> None:
        """Listed ids with no live row fail as `missing(id)`; results follow the caller's order."""
        for hashed, name in names.items():
            if hashed not in found:
                self.failed += 1
                self.results.append(missing(name))
        order = {name: i for i, name in enumerate(names.values())}
        self.results.sort(key=lambda result: order[name_of(result)])


class PushRows(Protocol[RowT_co]):
    """A tenant's live recipients of one channel, keyed by hash (the channel's repository)."""

    async def count(self) -> int: ...

    async def page_after(self, after_hash: str | None, limit: int, /) -> Sequence[RowT_co]: ...

    async def by_hashes(self, hashes: Sequence[str], /) -> Sequence[RowT_co]: ...

    async def delete_hashes(self, hashes: Sequence[str], /) -> int: ...


class PushChannel(ABC, Generic[RowT, OutcomeT, ResultT]):
    """The push loop every channel (APNs, Web Push) shares: the audience, a broadcast (keyset
    or listed pages, journaled), a push now (counts, or one result per listed id, logged as
    `log_event`), and the settling of outcomes (count, name, meter, delete the gone rows).

    A channel sets `repo`, `batch_size` and `app_id`, and says what differs: how an id is hashed
    and a row keyed, what an outcome means, its result type, its metric, and (`after_settle`)
    any rule of its own that may stop a push.
    """

    repo: PushRows[RowT]
    batch_size: int
    app_id: str
    logger: ClassVar[Any]  # the channel's structlog logger
    log_event: ClassVar[str]  # logged once per push now, with its counts

    @abstractmethod
    def hash_id(self, name: str) -> str:
        """The keyed hash a caller's id is stored under."""

    @abstractmethod
    def key(self, row: RowT) -> str:
        """The row's hash (its key in pages, in `names`, and for deletion)."""

    @abstractmethod
    def classify(self, outcome: OutcomeT) -> tuple[Status, str | None]:
        """sent, removed (the push service called the recipient gone: its row is deleted) or
        failed, and the reason reported for it."""

    @abstractmethod
    def result(self, name: str, status: Status, reason: str | None) -> ResultT:
        """The per-id result of a listed id that had a row."""

    @abstractmethod
    def missing(self, name: str) -> ResultT:
        """The per-id result of a listed id with no live row."""

    @abstractmethod
    def name_of(self, result: ResultT) -> str:
        """The caller's id a result is about."""

    @abstractmethod
    def outcome_metric(self) -> MetricCounter | None:
        """The counter (labelled by `outcome`: sent, removed, failed) of this channel, if any."""

    def new_tally(self, sent: int = 0, failed: int = 0, removed: int = 0) -> PushTally[ResultT]:
        return PushTally(sent=sent, failed=failed, removed=removed)

    def after_settle(
        self, tally: PushTally[ResultT], settled: Settled[RowT, OutcomeT], last: bool
    ) -> None:
        """Called after every settle (`last`: the push's final one); may raise to stop it."""

    def names(self, ids: Iterable[str]) -> dict[str, str]:
        """hash -> the caller's id, in the caller's order; a repeated id is pushed once."""
        return names_by_hash(ids, self.hash_id)

    async def audience_of(self, ids: list[str] | None) -> int:
        """How many recipients a broadcast addresses: live rows (one COUNT) or distinct ids."""
        if ids is None:
            return await self.repo.count()
        return len(self.names(ids))

    async def run_broadcast(
        self,
        pool: SenderPool[RowT, OutcomeT],
        ids: list[str] | None,
        *,
        start_after: str | None,
        counts: tuple[int, int, int],
        on_page: Callable[[str | None, PushTally[ResultT]], Awaitable[None]],
        page_timeout_seconds: float,
    ) -> PushTally[ResultT]:
        """A push as a resumable job: keyset pages (or the listed ids, in hash order) from
        `start_after`, counts only (`counts`: sent, failed, removed so far), and
        `on_page(cursor, tally)` after each settled page (see `push_journaled`)."""
        sent, failed, removed = counts
        tally = self.new_tally(sent, failed, removed)
        next_page: Callable[[str | None], Awaitable[Page[RowT]]]
        if ids is None:
            next_page = keyset_pages(self.repo.page_after, self.key, self.batch_size)
        else:

            def missing(n: int) -> None:
                tally.failed += n

            hashes = list(self.names(ids))
            next_page = listed_pages(hashes, self.repo.by_hashes, self.batch_size, missing)

        async def page_done(page: Page[RowT]) -> None:
            await on_page(page.cursor, tally)

        await push_journaled(
            pool,
            next_page=next_page,
            start_after=start_after,
            settle=functools.partial(self.settle, tally=tally, names=None),
            page_timeout_seconds=page_timeout_seconds,
            on_page=page_done,
        )
        return tally

    async def run_push(
        self, pool: SenderPool[RowT, OutcomeT], ids: list[str] | None
    ) -> PushTally[ResultT]:
        """A push now: every live row (`ids` None: counts) or the listed ids (one result each,
        in the caller's order)."""
        tally = self.new_tally()
        names = None if ids is None else self.names(ids)
        await deliver(
            pool,
            names=names,
            page_after=self.repo.page_after,
            by_hashes=self.repo.by_hashes,
            key=self.key,
            settle=functools.partial(self.settle, tally=tally, names=names),
            batch_size=self.batch_size,
            tally=tally,
            missing=self.missing,
            name_of=self.name_of,
        )
        self.logger.info(
            self.log_event,
            tenant=self.app_id,
            sent=tally.sent,
            failed=tally.failed,
            removed=tally.removed,
        )
        return tally

    async def settle(
        self,
        settled: Settled[RowT, OutcomeT],
        last: bool,
        *,
        tally: PushTally[ResultT],
        names: dict[str, str] | None,
    ) -> None:
        """Count outcomes, name the ids the caller listed, meter them, delete the gone rows."""
        gone: list[str] = []
        counts: Counter[str] = Counter()
        for row, outcome in settled:
            status, reason = self.classify(outcome)
            if status == "removed":
                gone.append(self.key(row))
            tally.count(status)
            counts[status] += 1
            if names is not None:
                tally.results.append(self.result(names[self.key(row)], status, reason))
        metric = self.outcome_metric()
        if metric is not None:
            for kind, count in counts.items():
                metric.labels(outcome=kind).inc(count)
        await self.repo.delete_hashes(gone)
        self.after_settle(tally, settled, last)


class TenantGates:
    """One semaphore per tenant with requests in flight, so one tenant's broadcast cannot take
    every connection slot of the process; a tenant's gate is dropped once it is idle."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._gates: dict[str, _Gate] = {}

    def enter(self, tenant: str) -> _Gate:
        """Register a sender for `tenant` (pair with `leave`); `gate.semaphore` caps it."""
        gate = self._gates.get(tenant)
        if gate is None:
            gate = self._gates[tenant] = _Gate(self.limit)
        gate.users += 1
        return gate

    def leave(self, tenant: str, gate: _Gate) -> None:
        gate.users -= 1
        if gate.users == 0 and self._gates.get(tenant) is gate:
            del self._gates[tenant]


class _Gate:
    __slots__ = ("semaphore", "users")

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0
