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
    assert hopeless.hopeless and hopeless.current_share == hopeless.congested_deadline_share
    quiet = Pacer(max_batch=50_000, backlog_rows=5_000_000)
    _feed(quiet, 30e-6, 20, others=0)
    assert quiet.current_share == quiet.max_share


def test_a_dear_first_batch_does_not_make_a_backlog_late() -> None:
    """The first batch pays for a cold cache and fresh page images: 1,000,000 rows judged at
    its 100 us a row (100 s of deleting) would be late and held to half the time; at the
    10 us the next batches cost they are 10 s of deleting, within the minute."""
    cohort = Pacer(max_batch=50_000, backlog_rows=1_000_000)
    _feed(cohort, 100e-6, 1, others=3)
    assert cohort.hopeless is None  # not judged on one batch
    _feed(cohort, 10e-6, 10, others=3)
    assert cohort.hopeless is False
    assert cohort.current_share > 0.25  # what 45 s need, not what four minutes do


def test_rows_that_expired_during_the_pass_keep_the_deadlines_pace() -> None:
    """The backlog is measured when the pass begins; a cohort still arriving adds rows the
    figure lacks. Once the measured rows are gone the pass measures again, and the rest keeps
    the deadline's pace instead of falling to the least share (seen: 2,600,000 rows left at
    the least share, 275 a second)."""
    pacer = Pacer(max_batch=50_000, backlog_rows=100_000)
    while not pacer.backlog_spent:
        _feed(pacer, 20e-6, 1, others=3)
    assert pacer.current_share == pacer.min_share  # nothing left that the figure knows of
    pacer.remeasured(1_000_000, oldest_age_seconds=20)
    assert not pacer.backlog_spent and pacer.hopeless is None
    _feed(pacer, 20e-6, 1, others=3)
    # 1,000,000 rows at 20 us: 20 s of deleting in the 25 s left, within reach at 90 %: the
    # deadline asks for the most, busy or not
    assert pacer.hopeless is False and pacer.current_share == pacer.max_share


def test_a_late_backlog_is_spread_over_the_late_deadline_while_busy() -> None:
    """5,000,000 rows at 10 us are 50 s of deleting: late for the 45 s at any share. While the
    database is busy they are spread so they are gone within the late deadline (aimed at three
    quarters of its four minutes): about 0.28 of the time, where half would take a third of
    the requests' throughput for the whole drain. Quiet, they go at the most."""
    late = Pacer(max_batch=50_000, backlog_rows=5_000_000)
    _feed(late, 10e-6, 20, others=3)
    assert late.hopeless
    assert 0.25 < late.current_share < 0.3
    quiet = Pacer(max_batch=50_000, backlog_rows=5_000_000)
    _feed(quiet, 10e-6, 20, others=0)
    assert quiet.current_share == quiet.max_share
    # Past the late deadline it is later still: half the time, no more.
    overdue = Pacer(max_batch=50_000, backlog_rows=5_000_000, oldest_age_seconds=300)
    _feed(overdue, 10e-6, 20, others=3)
    assert overdue.current_share == overdue.congested_deadline_share


def test_a_backlog_judged_late_on_dear_early_batches_is_judged_again_as_they_cheapen() -> None:
    """1,000,000 rows judged at 50 us a row (50 s of deleting) look late; at the 15 us the
    later batches cost they are 15 s, within the minute: the pace goes back to what the 45 s
    need, and stays there though the rows get dear again (never held back for falling behind)."""
    cohort = Pacer(max_batch=50_000, backlog_rows=1_000_000)
    _feed(cohort, 50e-6, 6, others=3)
    assert cohort.hopeless
    _feed(cohort, 15e-6, 10, others=3)
    assert cohort.hopeless is False
    assert cohort.current_share > 0.35  # what 45 s need, not what four minutes do
    _feed(cohort, 60e-6, 10, others=3)
    assert cohort.hopeless is False and cohort.current_share == cohort.max_share


def test_a_busy_event_loop_is_not_taken_for_a_slow_database() -> None:
    """In a process that also serves requests at full load, a batch whose statement took 4 ms
    for 1,000 rows spent 50 ms on the wall, waiting for the event loop. Costs and sizes go by
    the statement's time (batches grow to 40 ms of it), the rest and the deadline by the
    wall's: the wait is paid once per batch, and counted in what the backlog still needs."""
    pacer = Pacer(max_batch=50_000, backlog_rows=1_000_000)
    for _ in range(12):
        rows = pacer.size
        rest = pacer.after_batch(rows, rows * 4e-6, others=3, wall=rows * 4e-6 + 0.046)
    assert pacer.size == 10_000  # 40 ms at 4 us a row, not the least size
    assert abs(pacer.overhead - 0.046) < 0.002
    share = pacer.current_share
    assert abs(rest - (0.04 + 0.046) * (1 - share) / share) < 1e-3  # rests by the wall
    # the backlog left: ~890,000 rows at 4 us (3.6 s) + 89 batches' 46 ms (4.1 s) in 45 s
    assert 0.2 < pacer.deadline_share() < 0.3
