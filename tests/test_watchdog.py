"""The scheduler's Watchdog on its own, on a clock the test moves.

The clock stands still unless the test moves it, so "not yet" is certain rather than a matter
of how fast the machine is: the watchdog re-reads the clock (counted) and must not fire until
the clock reaches the deadline. Only "fired" is waited for, with ``wait_until``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest
from conftest import wait_until

from exporter.scheduler import Watchdog

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
def dog(clock: ManualClock) -> Iterator[Watchdog]:
    watchdog = Watchdog(clock)
    yield watchdog
    watchdog.stop()


def recorder(clock: ManualClock, fired: list[tuple[str, float]], name: str) -> Callable[[], None]:
    return lambda: fired.append((name, clock.now))


def settle(clock: ManualClock, reads: int = 3) -> None:
    """Let the watchdog look at the standing clock a few more times."""
    seen = clock.reads
    wait_until(lambda: clock.reads >= seen + reads, timeout=10, message="the watchdog to re-read the clock")


def test_a_stuck_poll_is_aborted_at_its_deadline_and_not_before(dog: Watchdog, clock: ManualClock) -> None:
    deadline = START + STEP
    aborted = threading.Event()
    fired: list[float] = []

    def expire() -> None:  # what Scheduler._expired does: abort the connection under the poll
        fired.append(clock.now)
        aborted.set()

    token = dog.watch(deadline, expire)
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


def test_a_watch_finished_in_time_never_fires(dog: Watchdog, clock: ManualClock) -> None:
    fired: list[tuple[str, float]] = []
    token = dog.watch(START + STEP, recorder(clock, fired, "finished"))
    assert dog.finish(token) is True
    clock.now = START + 10 * STEP  # far past the finished deadline
    dog.watch(clock.now, recorder(clock, fired, "later"))  # due now: fires after the finished one would have
    wait_until(lambda: fired, timeout=10, message="the later watch to fire")
    assert [name for name, _ in fired] == ["later"]


def test_deadlines_fire_in_deadline_order_each_once(dog: Watchdog, clock: ManualClock) -> None:
    fired: list[tuple[str, float]] = []
    for name, offset in (("c", 3), ("a", 1), ("d", 4), ("b", 2)):
        dog.watch(START + offset * STEP, recorder(clock, fired, name))
    clock.now = START + 3 * STEP  # a, b and c are due; d is not
    wait_until(lambda: len(fired) == 3, timeout=10, message="three watches to fire")
    settle(clock)
    assert [name for name, _ in fired] == ["a", "b", "c"]
    clock.now = START + 4 * STEP
    dog.watch(clock.now + STEP, recorder(clock, fired, "marker"))
    clock.now += STEP  # everything is due: the marker fires last, after anything fired twice would have
    wait_until(lambda: fired and fired[-1][0] == "marker", timeout=10, message="the marker to fire")
    assert [name for name, _ in fired] == ["a", "b", "c", "d", "marker"]


def test_an_earlier_deadline_wakes_a_sleeping_watchdog(clock: ManualClock) -> None:
    """The watchdog sleeps until its earliest deadline; a new, earlier one must cut that sleep short."""
    dog = Watchdog(clock)
    try:
        fired: list[tuple[str, float]] = []
        dog.watch(START + 3600, recorder(clock, fired, "late"))  # one hour of real sleep if not woken
        settle(clock, reads=1)
        clock.now = START + 1
        dog.watch(START + 1, recorder(clock, fired, "early"))
        wait_until(lambda: fired, timeout=10, message="the early watch to fire")
        assert [name for name, _ in fired] == ["early"]
    finally:
        dog.stop()


def test_a_failing_callback_does_not_stop_the_watchdog(dog: Watchdog, clock: ManualClock,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    fired: list[tuple[str, float]] = []

    def boom() -> None:
        raise RuntimeError("boom")

    failing = dog.watch(START + STEP, boom)
    dog.watch(START + 2 * STEP, recorder(clock, fired, "after"))
    with caplog.at_level(logging.ERROR, logger="exporter.scheduler"):
        clock.now = START + 2 * STEP
        wait_until(lambda: fired, timeout=10, message="the watch after the failing one to fire")
    assert any("watchdog callback failed" in r.getMessage() for r in caplog.records)
    assert dog.finish(failing) is False


def test_stop_ends_the_thread(clock: ManualClock) -> None:
    dog = Watchdog(clock)
    fired: list[tuple[str, float]] = []
    dog.watch(START + STEP, recorder(clock, fired, "pending"))
    clock.now = START + 10  # past the pending deadline as the watchdog is told to stop
    dog.stop()
    dog._thread.join(10)
    assert not dog._thread.is_alive()
    assert fired == []  # stopping ends it: a deadline passed meanwhile fires nothing
