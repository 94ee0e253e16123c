"""The broadcast page pipeline (kit/push/pushing.py `push_journaled`) on its own: no app, no
peer. Pages are settled and journaled in order as soon as their last row has an outcome, while
the next page's rows are on the wire; the session is never used by two coroutines at once; a
crash resumes from the last journaled cursor with nobody skipped; the workers always stop."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from stateless.kit.push.pushing import (
    Page,
    SenderPool,
    Settled,
    keyset_pages,
    listed_pages,
    push_journaled,
)

BATCH = 10
WORKERS = 4


class Crash(Exception):
    pass


@dataclass
class Broadcast:
    """One fake audience, session and push service; `journal` is what on_page recorded."""

    rows: list[str]
    delay: float = 0.002
    crash_after_pages: int | None = None  # on_page raises on this page (a dead worker)
    session_busy: bool = False
    sent: Counter[str] = field(default_factory=Counter)
    started: set[str] = field(default_factory=set)
    settled: int = 0
    journal: list[tuple[str | None, int]] = field(default_factory=list)
    overlaps: int = 0  # on_page calls after rows of a later page had been sent
    read_ahead: list[int] = field(default_factory=list)  # pages held (read, unsettled)
    pages_read: int = 0

    async def _use_session(self) -> None:
        assert not self.session_busy, "the session is used by two coroutines at once"
        self.session_busy = True
        try:
            await asyncio.sleep(0)
        finally:
            self.session_busy = False

    async def page_after(self, after: str | None, limit: int) -> Sequence[str]:
        await self._use_session()
        self.pages_read += 1
        self.read_ahead.append(self.pages_read - len(self.journal))
        return [r for r in self.rows if after is None or r > after][:limit]

    async def by_hashes(self, hashes: Sequence[str]) -> Sequence[str]:
        await self._use_session()
        self.pages_read += 1
        self.read_ahead.append(self.pages_read - len(self.journal))
        return [h for h in hashes if h in self.rows]

    async def send(self, row: str) -> str:
        self.started.add(row)
        await asyncio.sleep(self.delay * (1 + random.random()))
        self.sent[row] += 1
        return "ok"

    async def settle(self, settled: Settled[str, str], last: bool) -> None:
        await self._use_session()  # the deletes
        self.settled += len(settled)

    async def on_page(self, page: Page[str]) -> None:
        if page.cursor is not None and any(row > page.cursor for row in self.started):
            self.overlaps += 1
        await self._use_session()  # the commit
        self.journal.append((page.cursor, self.settled))
        if self.crash_after_pages is not None and len(self.journal) == self.crash_after_pages:
            raise Crash

    def pool(self) -> SenderPool[str, str]:
        return SenderPool(self.send, WORKERS, on_error=lambda: "error")

    async def run(self, start_after: str | None = None, timeout: float = 5.0) -> None:
        await push_journaled(
            self.pool(),
            next_page=keyset_pages(self.page_after, str, BATCH),
            start_after=start_after,
            settle=self.settle,
            page_timeout_seconds=timeout,
            on_page=self.on_page,
        )


def audience(n: int) -> list[str]:
    return [f"r{i:04d}" for i in range(n)]


def workers_left() -> list[asyncio.Task[object]]:
    current = asyncio.current_task()
    return [
        t
        for t in asyncio.all_tasks()
        if t is not current and getattr(t.get_coro(), "__qualname__", "") == "SenderPool._work"
    ]


async def test_each_page_is_journaled_with_the_counts_of_the_pages_before_it() -> None:
    rows = audience(5 * BATCH + 3)
    b = Broadcast(rows)
    await b.run()
    assert b.sent == Counter(rows)  # everybody, once
    pages = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
    assert b.journal == [(page[-1], BATCH * i + len(page)) for i, page in enumerate(pages)]
    assert b.overlaps == 5  # every page but the last was journaled after the next one went out
    assert max(b.read_ahead) <= 2  # never more than two pages held
    assert workers_left() == []


async def test_an_exact_multiple_of_the_page_ends_with_an_empty_last_page() -> None:
    rows = audience(3 * BATCH)
    b = Broadcast(rows)
    await b.run()
    assert b.sent == Counter(rows)
    assert [n for _, n in b.journal] == [10, 20, 30, 30]
    assert b.journal[-1][0] == rows[-1]


async def test_a_crash_resumes_from_the_journaled_cursor_with_nobody_skipped() -> None:
    rows = audience(8 * BATCH)
    first = Broadcast(rows, crash_after_pages=3)
    with pytest.raises(Crash):
        await first.run()
    assert workers_left() == []  # the pool stopped with the run
    cursor, counted = first.journal[-1]
    assert counted == 3 * BATCH and cursor == rows[3 * BATCH - 1]
    beyond = [r for r in first.sent if r > rows[3 * BATCH - 1]]
    assert len(beyond) <= 2 * BATCH  # at most the two pages that were open
    second = Broadcast(rows)
    await second.run(start_after=cursor)
    assert set(second.sent) == set(rows[3 * BATCH :])
    both = first.sent + second.sent
    assert set(both) == set(rows)  # nobody skipped
    assert max(both.values()) <= 2
    assert second.journal[-1][1] == len(rows) - 3 * BATCH


async def test_a_page_that_does_not_finish_in_time_stops_the_broadcast() -> None:
    rows = audience(3 * BATCH)
    b = Broadcast(rows)
    stuck = rows[BATCH + 2]
    plain = b.send

    async def send(row: str) -> str:
        if row == stuck:
            await asyncio.sleep(60)
        return await plain(row)

    b.send = send  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await b.run(timeout=0.3)
    assert loop.time() - started < 5
    assert [n for _, n in b.journal] == [BATCH]  # page 1 journaled, page 2 never
    assert workers_left() == []


async def test_listed_pages_count_the_missing_ids_and_journal_in_hash_order() -> None:
    rows = audience(25)
    b = Broadcast(rows)
    listed = [*rows[::2], "zz-unknown-1", "zz-unknown-2"]
    missing: list[int] = []
    await push_journaled(
        b.pool(),
        next_page=listed_pages(listed, b.by_hashes, BATCH, missing.append),
        start_after=None,
        settle=b.settle,
        page_timeout_seconds=5,
        on_page=b.on_page,
    )
    assert b.sent == Counter(rows[::2])
    assert sum(missing) == 2
    assert [cursor for cursor, _ in b.journal] == [
        sorted(listed)[min(i + BATCH, len(listed)) - 1] for i in range(0, len(listed), BATCH)
    ]
    assert workers_left() == []
