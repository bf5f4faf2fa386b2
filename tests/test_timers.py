"""The scheduler's timer heap (the poll ticks and deadlines) on its own, on a clock the test moves.

The clock stands still unless the test moves it, so "not yet" is certain rather than a matter
of how fast the machine is: the timer thread re-reads the clock (counted) and must not fire
until the clock reaches the deadline. Only "fired" is waited for, with ``wait_until``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest
from conftest import wait_until

from exporter.scheduler import Timers

START = 100.0
STEP = 0.05  # deadlines this far ahead: a standing clock is re-read every STEP seconds of real time


class ManualClock:
    def __init__(self, now: float = START) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def dog(clock: ManualClock) -> Iterator[Timers]:
    watchdog = Timers(clock)
    yield watchdog
    watchdog.stop()


def recorder(clock: ManualClock, fired: list[tuple[str, float]], name: str) -> Callable[[], None]:
    return lambda: fired.append((name, clock.now))


def settle(clock: ManualClock, reads: int = 3) -> None:
    """Let the watchdog look at the standing clock a few more times."""
    seen = clock.reads
    wait_until(lambda: clock.reads >= seen + reads, timeout=10, message="the watchdog to re-read the clock")


def test_a_stuck_poll_is_aborted_at_its_deadline_and_not_before(dog: Timers, clock: ManualClock) -> None:
    deadline = START + STEP
    aborted = threading.Event()
    fired: list[float] = []

    def expire() -> None:  # what Scheduler._expired does: abort the connection under the poll
        fired.append(clock.now)
        aborted.set()

    token = dog.call_at(deadline, expire)
    result: list[str] = []
    poll = threading.Thread(target=lambda: result.append("aborted" if aborted.wait(30) else "hung"))
    poll.start()
    clock.now = deadline - STEP / 2
    settle(clock)
    assert fired == [] and poll.is_alive(), "fired before the deadline"
    clock.now = deadline
    wait_until(lambda: fired, timeout=10, message="the watchdog to fire at the deadline")
    poll.join(10)
    assert fired == [deadline]
    assert result == ["aborted"]
    assert dog.finish(token) is False, "a fired watch must not report 'finished in time'"


def test_a_watch_finished_in_time_never_fires(dog: Timers, clock: ManualClock) -> None:
    fired: list[tuple[str, float]] = []
    token = dog.call_at(START + STEP, recorder(clock, fired, "finished"))
    assert dog.finish(token) is True
    clock.now = START + 10 * STEP  # far past the finished deadline
    dog.call_at(clock.now, recorder(clock, fired, "later"))  # due now: fires after the finished one would have
    wait_until(lambda: fired, timeout=10, message="the later watch to fire")
    assert [name for name, _ in fired] == ["later"]


def test_a_cancelled_call_never_fires_and_cancel_never_waits(dog: Timers, clock: ManualClock) -> None:
    """The scheduler cancels a removed target's tick while holding its own lock, which a running
    tick takes: cancel must not wait for a running call as finish does."""
    fired: list[tuple[str, float]] = []
    entered, release = threading.Event(), threading.Event()

    def held() -> None:
        entered.set()
        release.wait(10)
    running = dog.call_at(START, held)
    assert entered.wait(10)
    dog.cancel(running)  # returns at once although the call is still running
    release.set()
    token = dog.call_at(START + STEP, recorder(clock, fired, "cancelled"))
    dog.cancel(token)
    dog.cancel(token)  # twice, or an unknown token: nothing
    assert dog.pending() == 0
    clock.now = START + 10 * STEP
    dog.call_at(clock.now, recorder(clock, fired, "later"))
    wait_until(lambda: fired, timeout=10, message="the later call to fire")
    assert [name for name, _ in fired] == ["later"]


def test_deadlines_fire_in_deadline_order_each_once(dog: Timers, clock: ManualClock) -> None:
    fired: list[tuple[str, float]] = []
    for name, offset in (("c", 3), ("a", 1), ("d", 4), ("b", 2)):
        dog.call_at(START + offset * STEP, recorder(clock, fired, name))
    clock.now = START + 3 * STEP  # a, b and c are due; d is not
    wait_until(lambda: len(fired) == 3, timeout=10, message="three watches to fire")
    settle(clock)
    assert [name for name, _ in fired] == ["a", "b", "c"]
    clock.now = START + 4 * STEP
    dog.call_at(clock.now + STEP, recorder(clock, fired, "marker"))
    clock.now += STEP  # everything is due: the marker fires last, after anything fired twice would have
    wait_until(lambda: fired and fired[-1][0] == "marker", timeout=10, message="the marker to fire")
    assert [name for name, _ in fired] == ["a", "b", "c", "d", "marker"]


def test_an_earlier_deadline_wakes_a_sleeping_watchdog(clock: ManualClock) -> None:
    """The watchdog sleeps until its earliest deadline; a new, earlier one must cut that sleep short."""
    dog = Timers(clock)
    try:
        fired: list[tuple[str, float]] = []
        dog.call_at(START + 3600, recorder(clock, fired, "late"))  # one hour of real sleep if not woken
        settle(clock, reads=1)
        clock.now = START + 1
        dog.call_at(START + 1, recorder(clock, fired, "early"))
        wait_until(lambda: fired, timeout=10, message="the early watch to fire")
        assert [name for name, _ in fired] == ["early"]
    finally:
        dog.stop()


def test_a_failing_callback_does_not_stop_the_watchdog(dog: Timers, clock: ManualClock,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    fired: list[tuple[str, float]] = []

    def boom() -> None:
        raise RuntimeError("boom")

    failing = dog.call_at(START + STEP, boom)
    dog.call_at(START + 2 * STEP, recorder(clock, fired, "after"))
    with caplog.at_level(logging.ERROR, logger="exporter.scheduler"):
        clock.now = START + 2 * STEP
        wait_until(lambda: fired, timeout=10, message="the watch after the failing one to fire")
    assert any("timer callback failed" in r.getMessage() for r in caplog.records)
    assert dog.finish(failing) is False


def test_stop_ends_the_thread(clock: ManualClock) -> None:
    dog = Timers(clock)
    fired: list[tuple[str, float]] = []
    dog.call_at(START + STEP, recorder(clock, fired, "pending"))
    clock.now = START + 10  # past the pending deadline as the watchdog is told to stop
    dog.stop()
    dog._thread.join(10)
    assert not dog._thread.is_alive()
    assert fired == []  # stopping ends it: a deadline passed meanwhile fires nothing
