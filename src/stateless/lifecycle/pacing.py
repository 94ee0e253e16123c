"""How fast cleanup deletes: as fast as the database shows it can spare, as slow as the deadline
allows. No fixed duty cycle.

After every batch the pacer looks at what the batch cost per row. The lowest recent cost is
what a row costs when nothing else competes; a batch that costs clearly more means requests are
busy on the same cores, locks or disk, so cleanup takes a smaller share of the time
(multiplicative decrease). Cheap batches give it a larger share again, step by step (additive
increase): the AIMD rule TCP uses for the same problem. The uncontended cost is re-learnt
slowly (it drifts up a little per batch), so a database that got slower for good is not
mistaken for one that is busy forever.

A cost that was contended from the first batch on looks uncontended to that rule, so on
Postgres each batch also reports how many other sessions were working in the database (active
or inside a transaction, read from `pg_stat_activity` in the batch's own statement). While
others work, the database is busy whatever the costs say: cleanup takes the least share that
still meets the deadline, and leaves the rest of the time to the requests.

The deadline sets a floor: rows are meant to be gone within about a minute of expiring
(SPEC 2), so when the backlog could not drain before `deadline_seconds` at the current share,
the share rises to what the deadline needs (aiming at three quarters of the time left, so a
cost that rises late still fits), up to `max_share`. A backlog the deadline cannot be met for
even at `max_share` is late whatever the pace. It is judged at its cost per row over the first
few full batches after the first (that one pays for a cold cache and the first page images
after a checkpoint), and judged again at every batch after at the current cost, so rows that
turn out cheaper bring it back within reach (a 1,000,000-row cohort judged late on dear early
batches once took three minutes, not one). While the database is busy a late backlog is spread
over `late_deadline_seconds` (four minutes): the least share that has it gone by then, never
more than half. Half the time for the whole drain of 5,000,000 rows took a third of
register-token's throughput (0.66-0.67x); what spares the requests is spreading it. A backlog
that was within reach is never held back for falling behind; it gets up to `max_share` to
catch up. A quiet database drains a million rows in seconds; a busy one keeps most of its time
and still meets the minute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Pacer:
    """Batch size and rest for one kind's drain; one instance per pass and kind."""

    max_batch: int
    min_batch: int = 100
    batch_target_seconds: float = 0.04
    min_share: float = 0.1
    max_share: float = 0.9
    share: float = 0.5
    congested_at: float = 1.5  # cost per row over the uncontended cost
    # The most a late backlog takes while the database shows it is busy: requests keep half.
    congested_deadline_share: float = 0.5
    # By when a backlog already late for `deadline_seconds` is meant to be gone, while busy.
    late_deadline_seconds: float = 240.0
    congested: bool = False
    relaxed_below: float = 1.2
    # Other sessions at work (smoothed) from which the database counts as busy.
    busy_at: float = 0.5
    others: float | None = None
    drift: float = 1.005  # the uncontended cost is re-learnt at 0.5 % per batch
    deadline_seconds: float = 45.0
    # The pace aims to be done by this part of the time left, so a cost that rises late in
    # the drain (a checkpoint, a busier minute) still finds room before the deadline.
    aim: float = 0.75
    # Whether the backlog could not go by the deadline even at `max_share`: judged at the
    # average cost of full batches 2 to 1 + `judge_batches`, and judged again at every batch
    # after, at the current cost, until it is within reach (then it stays so). Only a late
    # backlog is spread over `late_deadline_seconds` while busy.
    hopeless: bool | None = None
    judge_batches: int = 4
    full_batches: int = 0
    _judged_rows: int = 0
    _judged_seconds: float = 0.0
    backlog_rows: int | None = None  # expired rows when the pass began, if measured
    oldest_age_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    size: int = 0
    deleted: int = 0
    batches: int = 0
    worked: float = 0.0  # seconds spent in batches
    base_cost: float | None = None
    cost: float | None = None
    # Seconds a batch spends around its statement (pool, event loop, commit), smoothed.
    overhead: float = 0.0

    def __post_init__(self) -> None:
        self.min_batch = max(1, min(self.min_batch, self.max_batch))
        if self.size <= 0:
            self.size = min(self.max_batch, max(self.min_batch, 1000))

    @property
    def backlog_spent(self) -> bool:
        """The rows measured when the pass began are deleted (rows that expired since are not
        in the figure: measure again, or they would go at the least share)."""
        return self.backlog_rows is not None and self.deleted >= self.backlog_rows

    def remeasured(self, expired_rows: int, oldest_age_seconds: float) -> None:
        """A fresh measurement of the expired rows left, in the middle of the pass."""
        self.backlog_rows = self.deleted + expired_rows
        self.oldest_age_seconds = oldest_age_seconds - (time.monotonic() - self.started)
        self.hopeless = None  # judged again against the larger backlog

    def assume_left(self, expired_rows: int) -> None:
        """No fresh measurement came; go on as if `expired_rows` were left (the age stays)."""
        self.backlog_rows = self.deleted + expired_rows
        self.hopeless = None

    @property
    def busy(self) -> bool:
        """Other sessions were seen working in the database (Postgres only)."""
        return self.others is not None and self.others >= self.busy_at

    def after_batch(
        self, rows: int, elapsed: float, others: int | None = None, wall: float | None = None
    ) -> float:
        """Record a batch (and the other sessions seen working during it, when known); answer
        how long to rest before the next one (seconds).

        `elapsed` is what the database spent on it (its statement's own time, where the
        database says), `wall` the whole batch as the caller saw it. They differ by the wait
        for the event loop: in a process that also serves requests at full load, that wait
        was most of a batch (350-750 us a row where the statement took a tenth of it), and
        costs read from it took a saturated web process for a slow database, shrank the
        batches to their least size and drained a 1,000,000-row cohort at 1,300 rows/s.
        Costs and sizes go by the database's time; the rest and the deadline by the wall's."""
        wall = elapsed if wall is None else max(wall, elapsed)
        self.deleted += rows
        self.batches += 1
        self.worked += wall
        if others is not None:
            self.others = others if self.others is None else 0.7 * self.others + 0.3 * others
        full = rows >= self.size
        if full and rows > 0 and elapsed > 0:
            self.full_batches += 1
            self.overhead = 0.7 * self.overhead + 0.3 * (wall - elapsed)
            if 1 < self.full_batches <= 1 + self.judge_batches:
                self._judged_rows += rows
                self._judged_seconds += elapsed
            cost = elapsed / rows
            self.cost = cost if self.cost is None else 0.7 * self.cost + 0.3 * cost
            base = self.base_cost
            self.base_cost = cost if base is None else min(cost, base * self.drift)
            ratio = cost / self.base_cost
            self.congested = ratio > self.congested_at or self.busy
            if self.congested:
                self.share = max(self.min_share, self.share * 0.7)
            elif ratio < self.relaxed_below:
                self.share = min(self.max_share, self.share + 0.05)
            wanted = int(self.batch_target_seconds / self.cost)
            self.size = min(self.max_batch, max(self.min_batch, wanted, self.size // 2))
        share = self.current_share
        return wall * (1 - share) / share

    def figures(self) -> dict[str, float | int | bool | None]:
        """What the drain did and saw, for the log line an operator (or the benchmark) reads
        to tell a slow database from a slow pace."""
        wall = time.monotonic() - self.started

        def micros(cost: float | None) -> float | None:
            return None if cost is None else round(cost * 1e6, 1)

        judged = self._judged_seconds / self._judged_rows if self._judged_rows else None
        return {
            "rows": self.deleted,
            "batches": self.batches,
            "seconds": round(wall, 1),
            "share": round(self.worked / wall, 2) if wall > 0 else None,
            "backlog_rows": self.backlog_rows,
            "late": self.hopeless,
            "busy": self.busy,
            "row_us": micros(self.cost),
            "base_row_us": micros(self.base_cost),
            "judged_row_us": micros(judged),
            "overhead_ms": round(self.overhead * 1000, 1),
        }

    @property
    def current_share(self) -> float:
        """The share of the time cleanup deletes now: the load's, or the deadline's if higher."""
        return max(self.share, self.deadline_share())

    def deadline_share(self) -> float:
        """The share of the time the rest of the backlog needs to be gone by the deadline."""
        if self.backlog_rows is None or self.cost is None:
            return self.min_share
        left_rows = max(0, self.backlog_rows - self.deleted)
        waited = self.oldest_age_seconds + (time.monotonic() - self.started)
        # seconds of deleting still to do, at the current cost and each batch's overhead
        work = left_rows * self.cost + left_rows / max(1, self.size) * self.overhead
        left_seconds = max(1.0, self.deadline_seconds - waited)
        if self.hopeless is None and self.full_batches > self.judge_batches:
            judged = left_rows * self._judged_seconds / max(1, self._judged_rows)
            judged += left_rows / max(1, self.size) * self.overhead
            self.hopeless = judged / left_seconds > self.max_share
        elif self.hopeless and work / left_seconds <= self.max_share:
            self.hopeless = False  # the rows got cheaper: within reach after all, and it stays so
        if self.hopeless and self.congested:
            # late at any share: spread over the late deadline, the requests keep half or more
            late_seconds = max(1.0, self.late_deadline_seconds - waited)
            needed = work / (late_seconds * self.aim)
            return min(self.congested_deadline_share, max(self.min_share, needed))
        needed = work / max(1.0, left_seconds * self.aim)
        return min(self.max_share, max(self.min_share, needed))
