"""The cleanup pace (lifecycle/pacing.py): a busy database gets longer rests, a quiet one
shorter, and a backlog that would miss the deadline raises the pace whatever the load."""

from __future__ import annotations

from stateless.lifecycle.pacing import Pacer


def _feed(pacer: Pacer, cost_per_row: float, batches: int, others: int | None = None) -> float:
    """Run `batches` full batches at `cost_per_row` (other sessions seen at work: `others`);
    the rest after the last, per second of work."""
    rest = 0.0
    for _ in range(batches):
        rows = pacer.size
        elapsed = rows * cost_per_row
        rest = pacer.after_batch(rows, elapsed, others) / elapsed
    return rest


def test_a_quiet_database_gets_most_of_the_time_and_a_busy_one_gets_rest() -> None:
    pacer = Pacer(max_batch=50_000)
    quiet = _feed(pacer, 20e-6, 40)
    assert pacer.share == 0.9 and quiet < 0.12  # ~0.11 s of rest per second of deleting
    busy = _feed(pacer, 60e-6, 10)  # the same rows now cost three times as much
    assert pacer.share == 0.1 and busy > 8  # ~9 s of rest per second of deleting
    relaxed = _feed(pacer, 20e-6, 40)  # the requests went away
    assert relaxed < busy / 4


def test_batches_are_sized_to_the_target_time() -> None:
    pacer = Pacer(max_batch=50_000, batch_target_seconds=0.04)
    _feed(pacer, 10e-6, 20)
    assert pacer.size == 4000  # 40 ms at 10 us a row
    _feed(pacer, 1e-6, 40)
    assert 39_000 <= pacer.size <= 40_000  # the average cost converges on 1 us
    capped = Pacer(max_batch=500)
    _feed(capped, 1e-6, 5)
    assert capped.size == 500


def test_a_backlog_that_would_miss_the_deadline_raises_the_pace_under_load() -> None:
    loaded = Pacer(max_batch=50_000)
    _feed(loaded, 20e-6, 5)
    busy = _feed(loaded, 60e-6, 10)
    urgent = Pacer(max_batch=50_000, backlog_rows=5_000_000, oldest_age_seconds=10)
    _feed(urgent, 20e-6, 5)
    pressed = _feed(urgent, 60e-6, 10)
    # 5M rows at 60 us need 300 s of deleting: more than 35 s left allows, so the pace rises
    # to the deadline's floor while the load alone would have given the lowest; the database
    # shows it is busy, so the floor is half the time (one second of rest per second of work).
    assert urgent.share == 0.1 and 0.9 < pressed < 1.1 and busy > 8
    quiet = Pacer(max_batch=50_000, backlog_rows=5_000_000, oldest_age_seconds=10)
    assert _feed(quiet, 20e-6, 20) < 0.12  # no load: the highest share
    small = Pacer(max_batch=50_000, backlog_rows=10_000)
    _feed(small, 20e-6, 5)
    assert _feed(small, 60e-6, 10) > 8  # a small backlog leaves the requests alone


def test_a_partial_batch_teaches_nothing() -> None:
    """The last batch of a drain is short; its cost per row is not a measurement."""
    pacer = Pacer(max_batch=50_000)
    _feed(pacer, 20e-6, 10)
    share, size = pacer.share, pacer.size
    pacer.after_batch(3, 1.0)  # 3 rows in a second: a short tail, not a slow database
    assert (pacer.share, pacer.size) == (share, size)


def test_other_sessions_at_work_make_the_database_busy_though_costs_never_changed() -> None:
    """Load present from the first batch on leaves the cost per row flat, so the costs alone
    would take 90 % of the time; the sessions seen at work say the database is busy."""
    alone = Pacer(max_batch=50_000)
    assert _feed(alone, 30e-6, 20, others=0) < 0.12 and not alone.busy
    shared = Pacer(max_batch=50_000)
    assert _feed(shared, 30e-6, 20, others=3) > 8 and shared.busy  # the least share
    assert shared.current_share == shared.min_share


def test_a_busy_database_gets_what_the_deadline_needs_and_no_more() -> None:
    """1,000,000 rows at 15 us need 15 s of deleting, aimed at three quarters of the 45 s:
    under half the time, not the 90 % a quiet database gets."""
    cohort = Pacer(max_batch=50_000, backlog_rows=1_000_000)
    _feed(cohort, 15e-6, 20, others=3)
    assert 0.4 < cohort.current_share < 0.48
    # The rows got dearer (a checkpoint, a busier minute): the pace catches up, up to 90 %;
    # a backlog that was within reach is never held to half for falling behind.
    _feed(cohort, 60e-6, 10, others=3)
    assert cohort.current_share == cohort.max_share and not cohort.hopeless
    hopeless = Pacer(max_batch=50_000, backlog_rows=5_000_000)
    _feed(hopeless, 30e-6, 20, others=3)  # 150 s of deleting: late at any share
    assert hopeless.current_share == hopeless.congested_deadline_share
    quiet = Pacer(max_batch=50_000, backlog_rows=5_000_000)
    _feed(quiet, 30e-6, 20, others=0)
    assert quiet.current_share == quiet.max_share
