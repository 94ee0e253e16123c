"""What an APNs push and a Web Push share: rows streamed page by page into a fixed pool of
senders, outcomes counted as they settle, and a per-tenant cap on requests in flight.

Why one module: both pushes read recipients from the database in keyset pages, send each with
bounded concurrency while the next page is read, delete the recipients the push service calls
gone, and report counts (a push to `all`) or one result per listed id. `PushChannel` is that
loop; only the row, the request and the meaning of an answer differ, and those stay with each
service. A broadcast (`push_journaled`) is a pipeline: the pool's workers live across pages and
each page is journaled as soon as its last row has an outcome, while the next one is sent.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
from abc import ABC, abstractmethod
from collections import Counter, deque
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


class _Batch(Generic[RowT, OutcomeT]):
    """The rows of one page in a pool: their outcomes as they come, and how many are out."""

    __slots__ = ("done", "out")

    def __init__(self) -> None:
        self.done: Settled[RowT, OutcomeT] = []
        self.out = 0  # queued or being sent

    def take(self) -> Settled[RowT, OutcomeT]:
        done, self.done = self.done, []
        return done


class SenderPool(Generic[RowT, OutcomeT]):
    """Workers (spawned as rows arrive, at most `workers`) send the rows put in a short queue.

    Each queued row carries the batch (page) it belongs to, so its outcome lands there, and the
    workers live until `finish()` or `cancel()`, across pages. `changed` is set whenever a row
    gets its outcome (a slot of the queue is free again by then). A send that raises is one
    failed row (`on_error()`), never the end of the push.
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
        self._queue: asyncio.Queue[tuple[_Batch[RowT, OutcomeT], RowT] | None] = asyncio.Queue(
            maxsize=workers
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._loose: _Batch[RowT, OutcomeT] = _Batch()  # rows of put(), outcomes for take()
        self.changed = asyncio.Event()

    async def _work(self) -> None:
        while (item := await self._queue.get()) is not None:
            batch, row = item
            try:
                outcome = await self._send(row)
            except Exception as exc:  # isolation boundary: one push, counted as failed
                # The type only: a traceback's locals could hold a token or an endpoint.
                log.error("push_send_failed", error=type(exc).__name__)
                outcome = self._on_error()
            batch.done.append((row, outcome))
            batch.out -= 1
            self.changed.set()

    def _spawn(self) -> None:
        if len(self._tasks) < self._workers:
            self._tasks.append(asyncio.create_task(self._work()))

    def offer(self, batch: _Batch[RowT, OutcomeT], row: RowT) -> bool:
        """Queue `row` under `batch` if the queue has room (False: wait for `changed`)."""
        self._spawn()
        if self._queue.full():
            return False
        self._queue.put_nowait((batch, row))
        batch.out += 1
        return True

    async def put(self, row: RowT) -> None:
        """Queue `row` (waiting for room); its outcome comes back from `take()`."""
        self._spawn()
        self._loose.out += 1
        await self._queue.put((self._loose, row))

    def take(self) -> Settled[RowT, OutcomeT]:
        return self._loose.take()

    async def finish(self) -> Settled[RowT, OutcomeT]:
        """Let every queued row get its outcome, stop the workers, return what `take()` would."""
        for _ in self._tasks:
            await self._queue.put(None)
        await asyncio.gather(*self._tasks)
        self._tasks = []
        return self.take()

    async def wind_down(self) -> None:
        """Send nothing more: drop the rows still queued, let the sends under way get their
        outcomes, stop the workers. What went out is then counted, and nothing else went."""
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                item[0].out -= 1
        await self.finish()

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


@dataclass(eq=False)
class _OpenPage(Generic[RowT, OutcomeT]):
    """A page read and not yet settled: how many of its rows are queued, their outcomes."""

    page: Page[RowT]
    deadline: float  # loop time: its read, send and settle end by then
    batch: _Batch[RowT, OutcomeT] = field(default_factory=_Batch)
    fed: int = 0  # rows queued so far

    @property
    def complete(self) -> bool:
        return self.fed == len(self.page.rows) and self.batch.out == 0


async def push_journaled(
    pool: SenderPool[RowT, OutcomeT],
    *,
    next_page: Callable[[str | None], Awaitable[Page[RowT]]],
    start_after: str | None,
    settle: Settle[RowT, OutcomeT],
    page_timeout_seconds: float,
    on_page: Callable[[Page[RowT]], Awaitable[None]],
) -> None:
    """A broadcast: page after page from `start_after`, pipelined through one pool whose
    workers live across pages. Page N+1 is read (and its rows queued) once page N's rows are
    all queued, while they are still on the wire; page N is settled and `on_page` records its
    cursor as soon as its last row has an outcome, while page N+1's rows go out.

    - Order: pages settle and are recorded in key order, so a run resumed from the last
      recorded cursor skips nobody and repeats at most what was in flight past it: the rows of
      the next page, and the first rows of the one after (never more than two pages).
    - Memory: at most two pages are held (read, not yet settled), plus the pool's queue.
    - Database: `next_page`, `settle` and `on_page` (which share one session) are only ever
      awaited from this one coroutine, one at a time; the workers never touch the database.
    - Time: each page (read, send, settle) is bounded by `page_timeout_seconds` from the start
      of its read (TimeoutError); the pool's workers stop however it ends (an error, a stop
      raised by `on_page`, a timeout, a cancel).
    - Stops: when `on_page` raises (a cancel noticed there), the rows of the next page already
      taken by a worker finish and are settled, the rest are never sent, and the exception
      goes up: the caller's counts then say exactly what went out.
    """
    loop = asyncio.get_running_loop()
    after = start_after
    more = True  # pages left to read
    pages: deque[_OpenPage[RowT, OutcomeT]] = deque()  # read, not settled: oldest first
    bound: float | None = None
    try:
        # One timer for the whole run, moved only when the page it bounds changes (not per row):
        # always the deadline of the oldest open page, none while `on_page` runs.
        async with asyncio.timeout(None) as limit:

            def bound_by(when: float | None) -> None:
                nonlocal bound
                if when != bound:
                    limit.reschedule(when)
                    bound = when

            while True:
                head = pages[0] if pages else None
                if head is not None and head.complete:
                    bound_by(head.deadline)
                    await settle(head.batch.take(), head.page.last)
                    bound_by(None)
                    try:
                        await on_page(head.page)
                    except Exception:
                        # A stop (a cancel, a lost lease) or a failure: the next page's rows
                        # already on the wire finish and are settled, so what was sent is
                        # counted; nothing more is sent.
                        pages.popleft()
                        bound_by(pages[0].deadline if pages else None)
                        await pool.wind_down()
                        for rest in pages:
                            await settle(rest.batch.take(), False)
                        raise
                    pages.popleft()
                    if head.page.last:
                        return
                    continue
                tail = pages[-1] if pages else None
                if tail is not None and tail.fed < len(tail.page.rows):
                    if pool.offer(tail.batch, tail.page.rows[tail.fed]):
                        tail.fed += 1
                        continue
                elif more and len(pages) < 2:
                    deadline = loop.time() + page_timeout_seconds
                    bound_by(deadline if head is None else head.deadline)
                    page = await next_page(after)
                    pages.append(_OpenPage(page, deadline))
                    more, after = not page.last, page.cursor
                    continue
                # Nothing to do until a row gets its outcome (which frees a slot in the queue).
                assert head is not None
                bound_by(head.deadline)
                pool.changed.clear()
                await pool.changed.wait()
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
