"""How fast cleanup deletes: as fast as the database shows it can spare, as slow as the deadline
allows. No fixed duty cycle.

After every batch the pacer looks at what the batch cost per row. The lowest recent cost is
what a row costs when nothing else competes; a batch that costs clearly more means requests are
busy on the same cores, locks or disk, so cleanup takes a smaller share of the time
(multiplicative decrease). Cheap batches give it a larger share again, step by step (additive
increase): the AIMD rule TCP uses for the same problem. The uncontended cost is re-learnt
slowly (it drifts up a little per batch), so a database that got slower for good is not
mistaken for one that is busy forever.

The deadline sets a floor: rows are meant to be gone within about a minute of expiring
(SPEC 2), so when the backlog could not drain before `deadline_seconds` at the current share,
the share rises to what the deadline needs, capped at `max_share`, or at half the time while
the batches show the database busy: a cohort too large for the minute then drains at half
speed rather than taking the requests' time. A quiet database drains a
million rows in seconds; a busy one keeps its requests and still meets the minute.
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
    # The deadline's floor while the database shows it is busy: requests keep at least half.
    congested_deadline_share: float = 0.5
    congested: bool = False
    relaxed_below: float = 1.2
    drift: float = 1.005  # the uncontended cost is re-learnt at 0.5 % per batch
    deadline_seconds: float = 45.0
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

    def after_batch(self, rows: int, elapsed: float) -> float:
        """Record a batch; answer how long to rest before the next one (seconds)."""
        self.deleted += rows
        full = rows >= self.size
        if full and rows > 0 and elapsed > 0:
            cost = elapsed / rows
            self.cost = cost if self.cost is None else 0.7 * self.cost + 0.3 * cost
            base = self.base_cost
            self.base_cost = cost if base is None else min(cost, base * self.drift)
            ratio = cost / self.base_cost
            self.congested = ratio > self.congested_at
            if self.congested:
                self.share = max(self.min_share, self.share * 0.7)
            elif ratio < self.relaxed_below:
                self.share = min(self.max_share, self.share + 0.05)
            wanted = int(self.batch_target_seconds / self.cost)
            self.size = min(self.max_batch, max(self.min_batch, wanted, self.size // 2))
        share = max(self.share, self.deadline_share())
        return elapsed * (1 - share) / share

    def deadline_share(self) -> float:
        """The share of the time the rest of the backlog needs to be gone by the deadline."""
        if self.backlog_rows is None or self.cost is None:
            return self.min_share
        left_rows = max(0, self.backlog_rows - self.deleted)
        waited = self.oldest_age_seconds + (time.monotonic() - self.started)
        left_seconds = max(1.0, self.deadline_seconds - waited)
        needed = left_rows * self.cost / left_seconds
        cap = self.congested_deadline_share if self.congested else self.max_share
        return min(cap, max(self.min_share, needed))
