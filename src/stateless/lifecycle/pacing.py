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
even at `max_share`, judged at its cost per row over the first few full batches after the
first (that one pays for a cold cache and the first page images after a checkpoint: a
1,000,000-row cohort judged by it alone was taken for late), drains at half the time while
the database is busy: it is late either way, and the requests keep their half. (Spreading a
late backlog over four minutes instead spared the requests, 1.07x, but a 1,000,000-row cohort
judged late under load then took three minutes, not one: the minute is the promise.) A
backlog that was within reach is never held back for falling behind; it gets up to
`max_share` to catch up. A quiet database drains a million rows in seconds; a busy one keeps
most of its time and still meets the minute.
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
    # What a late backlog takes while the database shows it is busy: requests keep half.
    congested_deadline_share: float = 0.5
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
    # Whether the backlog could not go by the deadline even at `max_share`, judged once, at
    # the average cost of full batches 2 to 1 + `judge_batches`; only such a backlog is held
    # to half the time while busy.
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
    base_cost: float | None = None
    cost: float | None = None

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

    @property
    def busy(self) -> bool:
        """Other sessions were seen working in the database (Postgres only)."""
        return self.others is not None and self.others >= self.busy_at

    def after_batch(self, rows: int, elapsed: float, others: int | None = None) -> float:
        """Record a batch (and the other sessions seen working during it, when known); answer
        how long to rest before the next one (seconds)."""
        self.deleted += rows
        if others is not None:
            self.others = others if self.others is None else 0.7 * self.others + 0.3 * others
        full = rows >= self.size
        if full and rows > 0 and elapsed > 0:
            self.full_batches += 1
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
        return elapsed * (1 - share) / share

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
        work = left_rows * self.cost  # seconds of deleting still to do, at the current cost
        left_seconds = max(1.0, self.deadline_seconds - waited)
        if self.hopeless is None and self.full_batches > self.judge_batches:
            judged = left_rows * self._judged_seconds / max(1, self._judged_rows)
            self.hopeless = judged / left_seconds > self.max_share
        if self.hopeless and self.congested:
            return self.congested_deadline_share  # late at any share: requests keep half
        needed = work / max(1.0, left_seconds * self.aim)
        return min(self.max_share, max(self.min_share, needed))
