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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

import structlog

RowT = TypeVar("RowT")
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
