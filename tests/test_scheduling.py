"""The scheduler's own machinery: the poll grid, the elastic pool, its size, and the watchdog.

The end-to-end behaviour (recovery after outages, polls on schedule next to broken targets)
is in test_recovery.py and the fault labs; these pin the parts whose failure would be silent:
a grid that drifts or repeats a time, a pool that never shrinks, a connection that outlives
the watchdog's abort.
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import scheduler as sched
from exporter.errors import PollError
from exporter.pool import ElasticPool
from exporter.scheduler import Scheduler, Timers, next_fire, phase, pool_size, slot_offset
from exporter.snapshot import Samples
from exporter.sources import Reading
from exporter.store import SnapshotStore
from exporter.targets import RedisTarget


def target(name: str = "t", interval: float = 15.0, timeout: float = 5.0) -> RedisTarget:
    return RedisTarget(name=name, type="redis", interval=interval, timeout=timeout)


# --- the grid -----------------------------------------------------------------------------

@settings(max_examples=2000, deadline=None)
@given(interval=st.floats(0.1, 86400), offset=st.floats(0, 1e6), previous=st.floats(1e9, 3e9))
def test_grid_fires_on_the_grid_half_to_one_and_a_half_intervals_later(interval, offset, previous):
    """A repeated time would poll twice at once (APScheduler looped forever on one, at
    microsecond rounding)."""
    nxt = next_fire(previous, interval, offset)
    assert nxt - previous >= interval / 2 - 1e-4  # never on the heels of the previous run
    assert nxt - previous <= 1.5 * interval + 1e-4
    assert nxt > previous
    k = (nxt - offset % interval) / interval
    assert abs(k - round(k)) * interval < 1e-4  # on the grid


def test_grid_keeps_the_interval_exact_over_a_day():
    """APScheduler's jitter made 15 s polls come every 15.75 s on average; the grid does not drift."""
    offset = phase("redis-1") * 15.0
    times = [1_000_000_000.3]  # the first run, off the grid
    for _ in range(5760):  # one day of polls
        times.append(next_fire(times[-1], 15.0, offset))
    gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
    assert max(gaps) - min(gaps) < 1e-3
    assert abs((times[-1] - times[1]) - 15.0 * 5759) < 1e-3
    assert 7.5 <= times[1] - times[0] < 22.5  # the first run is off the grid; the second is not too close


def test_phases_spread_a_fleet_over_the_interval():
    phases = sorted(phase(f"redis-{i}") for i in range(1000))
    assert phases == sorted(set(phases))
    # Every tenth of the interval gets its share (uniform: 100 each, allow +-40 %).
    counts = [sum(1 for p in phases if k / 10 <= p < (k + 1) / 10) for k in range(10)]
    assert min(counts) > 60 and max(counts) < 140, counts
    assert phase("redis-1") == phase("redis-1")  # stable across restarts: crc32, not hash()


def test_a_fleet_is_polled_a_slot_at_a_time_each_slot_with_its_share():
    """1000 targets at 15 s: 15 slots a second apart, ~67 targets each, polled together."""
    offsets = [slot_offset(f"redis-{i}", 15.0) for i in range(1000)]
    slots = sorted(set(offsets))
    assert slots == [float(k) for k in range(15)]
    counts = [offsets.count(k) for k in slots]
    assert min(counts) > 40 and max(counts) < 100, counts
    assert slot_offset("redis-1", 15.0) == slot_offset("redis-1", 15.0)  # stable across restarts
    # Any interval is cut into whole slots of about a second; one shorter than a slot is one slot.
    assert {slot_offset(f"r{i}", 3.5) for i in range(200)} == {0.0, 3.5 / 4, 7.0 / 4, 10.5 / 4}
    assert {slot_offset(f"r{i}", 0.2) for i in range(50)} == {0.0}
    assert all(0 <= slot_offset(f"r{i}", 3600.0) < 3600.0 for i in range(100))


# --- pool size and the elastic pool ------------------------------------------------------

def test_pool_size_follows_targets_timeouts_and_intervals():
    assert pool_size([target()]) == 1  # one target never needs two threads
    assert pool_size([target(f"r{i}") for i in range(1000)]) == 421  # 1000 x 5/15 x 1.25 + 4
    assert pool_size([target(f"r{i}", interval=1, timeout=1) for i in range(100)]) == 100
    assert pool_size([target(f"r{i}", interval=60, timeout=1) for i in range(100)]) == 7
    assert pool_size([target(f"r{i}", interval=1, timeout=1) for i in range(5000)]) == sched.MAX_POLL_THREADS
    assert pool_size([]) == 1


def burst(pool: ElasticPool, n: int) -> tuple[threading.Event, list]:
    """``n`` calls that block until the returned gate is set; waits until the pool started them."""
    gate = threading.Event()
    futures = [pool.submit(gate.wait, 5) for _ in range(n)]
    time.sleep(0.1)
    return gate, futures


def test_elastic_pool_grows_to_its_bound_and_shrinks_when_idle():
    pool = ElasticPool(4, idle_seconds=0.2)
    gate = threading.Event()
    try:
        futures = [pool.submit(gate.wait, 5) for _ in range(10)]
        time.sleep(0.1)
        assert pool.threads() == 4  # never more than the bound, however many wait
        gate.set()
        assert all(f.result(5) for f in futures)
        deadline = time.monotonic() + 5
        while pool.threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.threads() == 0, "idle threads must exit"
        assert pool.submit(lambda: 42).result(5) == 42  # and come back on demand
    finally:
        pool.shutdown()


def test_elastic_pool_lets_surplus_threads_go_under_a_steady_trickle():
    """Threads a burst started must not be kept alive by a trickle of work handed round-robin
    (a Condition wakes its waiters first in, first out: at 1 poll a second no thread ever sat
    idle for 30 s, and an outage's threads stayed for good)."""
    pool = ElasticPool(8, idle_seconds=0.4)
    try:
        gate, futures = burst(pool, 6)
        assert pool.threads() == 6
        gate.set()
        for f in futures:
            f.result(5)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # one short task every 50 ms: one thread is plenty
            pool.submit(time.sleep, 0.001).result(5)
            time.sleep(0.05)
        assert pool.threads() <= 2, pool.threads()
    finally:
        pool.shutdown()


@pytest.fixture
def call_later():
    """The scheduler's ``call_later`` for a pool: a callback on the timer heap (``Timers``)."""
    timers = Timers()
    yield lambda delay, callback: timers.call_at(time.monotonic() + delay, callback)
    timers.stop()


def test_a_pool_with_concurrency_drains_a_burst_of_quick_calls_on_that_many_threads(call_later):
    pool = ElasticPool(50, idle_seconds=5, concurrency=2, call_later=call_later, stuck_after=0.5)
    try:
        names: set[str] = set()
        futures = [pool.submit(lambda: (time.sleep(0.002), names.add(threading.current_thread().name)))
                   for _ in range(100)]
        for f in futures:
            f.result(10)
        assert len(names) <= 2, names  # not a thread per call
        assert pool.threads() <= 2
    finally:
        pool.shutdown()


def test_a_pool_with_concurrency_brings_a_thread_past_calls_stuck_on_their_targets(call_later):
    """Calls waiting on hung targets hold a thread each, and the quick ones behind them still
    run within a few ``stuck_after``: a hung target never holds up the rest of its slot."""
    pool = ElasticPool(50, idle_seconds=5, concurrency=2, call_later=call_later, stuck_after=0.05)
    gate = threading.Event()
    try:
        hung = [pool.submit(gate.wait, 10) for _ in range(6)]
        started = time.monotonic()
        quick = [pool.submit(time.monotonic) for _ in range(5)]
        finished = [f.result(5) for f in quick]
        assert max(finished) - started < 2.0
        assert not any(f.done() for f in hung)
        assert pool.threads() >= 7  # the six stuck calls' threads, and one at least for the rest
        gate.set()
        assert all(f.result(5) for f in hung)
    finally:
        gate.set()
        pool.shutdown()


def test_a_pool_with_concurrency_needs_call_later(call_later):
    with pytest.raises(ValueError):
        ElasticPool(4, concurrency=2)
    with pytest.raises(ValueError):
        ElasticPool(4, concurrency=0, call_later=call_later)


def test_elastic_pool_resize_and_errors():
    pool = ElasticPool(8, idle_seconds=5)
    try:
        gate, futures = burst(pool, 8)
        assert pool.threads() == 8
        pool.resize(2)
        gate.set()
        for f in futures:
            f.result(5)
        deadline = time.monotonic() + 5
        while pool.threads() > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.threads() <= 2

        def boom() -> None:
            raise ValueError("boom")
        assert isinstance(pool.submit(boom).exception(5), ValueError)
    finally:
        pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


# --- the timers and an aborted poll ------------------------------------------------------

def test_timers_finish_waits_for_a_running_expiry():
    dog = Timers()
    try:
        entered, release, done = threading.Event(), threading.Event(), []

        def expire() -> None:
            entered.set()
            release.wait(5)
            done.append(True)
        token = dog.call_at(time.monotonic(), expire)
        assert entered.wait(5)
        threading.Timer(0.2, release.set).start()
        started = time.monotonic()
        assert dog.finish(token) is False
        assert done == [True], "finish() returned while the expiry callback was still running"
        assert time.monotonic() - started >= 0.15
        assert dog.finish(dog.call_at(time.monotonic() + 10, lambda: None)) is True
    finally:
        dog.stop()


class _LateSource:
    """A poll that ignores the watchdog's abort and then succeeds: it raced the deadline.

    Stands in for the only thing a real server cannot do on demand: answer exactly as the
    deadline passes (the fault lab's end-to-end version only makes it likely)."""

    store = "redis"
    up_family = "redis_up"

    def __init__(self, target: RedisTarget) -> None:
        self.events: list[str] = []
        self.polls = 0

    def poll(self, deadline: float) -> Reading:
        self.polls += 1
        self.events.append(f"poll{self.polls}")
        if self.polls == 1:
            time.sleep(max(0.0, deadline - time.monotonic()) + 0.3)  # finishes after the watchdog fired
        return Reading(Samples())

    def abort(self) -> None:
        self.events.append("abort")

    def close(self) -> None:
        self.events.append("close")


def test_a_poll_that_finishes_after_its_deadline_loses_its_connection(monkeypatch):
    """The watchdog shut the socket down under the poll: reusing it made every timeout followed
    by a ``reset`` (245 of 245 in a soak). The late poll's connection must be closed before the
    next poll, and its result must not overwrite the recorded timeout."""
    sources: list[_LateSource] = []

    def make(t: RedisTarget) -> _LateSource:
        sources.append(_LateSource(t))
        return sources[-1]
    monkeypatch.setattr(sched, "source_for", make)
    store = SnapshotStore()
    s = Scheduler(store)
    s.start((target("late", interval=1.0, timeout=0.2),))
    try:
        deadline = time.monotonic() + 10
        while (not sources or sources[0].polls < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        events = sources[0].events
        assert events[:4] == ["poll1", "abort", "close", "poll2"], events
        rt = s.runtimes["late"]
        assert rt.stats.errors["timeout"] == 1
        assert rt.stats.polls == 2 or rt.stats.polls == 1  # poll2 may not be recorded yet
    finally:
        s.shutdown()


def test_poll_error_reasons_are_not_a_reconnect_wait():
    """The old "waiting to reconnect after: ..." error came from a wait the source imposed on
    itself; a down target now reports its own error at every poll."""
    from exporter.sources.redis import RedisSource

    t = RedisTarget(name="down", type="redis", interval=15, timeout=1, host="127.0.0.1", port=1)
    src = RedisSource(t)
    for _ in range(12):
        with pytest.raises(PollError) as err:
            src.poll(time.monotonic() + 1)
        assert err.value.reason == "refused"
        assert "waiting" not in str(err.value)


def test_a_skipped_poll_republishes_the_stats_beside_the_last_snapshot() -> None:
    """A stored snapshot keeps its rendered text only (its samples are dropped once rendered);
    a skipped poll must still republish that text unchanged with the new skip count, and a
    snapshot a newer one replaced must not be published again over it."""
    store = SnapshotStore()
    s = Scheduler(store)  # never started: the test makes the polls' outcomes itself
    try:
        rt = s.runtimes["a"] = sched.TargetRuntime(target("a"), _LateSource(target("a")))  # type: ignore[arg-type]
        samples = Samples()
        samples.add("redis_connected_clients", 5)
        s._record(rt, Reading(samples), 0.01)
        first = store.snapshot("a")
        assert first is not None and first.samples is sched.RENDERED

        def text() -> str:
            return b"".join(c.text() for c in store.chunks()[1]).decode()
        before = text()
        assert 'redis_connected_clients{target="a"} 5.0' in before
        assert 'cache_exporter_polls_skipped_total{target="a"} 0.0' in before
        s._republish(rt)
        after = text()
        assert after == before.replace('cache_exporter_polls_skipped_total{target="a"} 0.0',
                                       'cache_exporter_polls_skipped_total{target="a"} 1.0')
        samples = Samples()
        samples.add("redis_connected_clients", 7)
        s._record(rt, Reading(samples), 0.01)
        s._republish(rt)  # the newer snapshot again, never the replaced one
        assert store.snapshot("a") is not first
        assert 'redis_connected_clients{target="a"} 7.0' in text()
    finally:
        s.shutdown()


# --- the job: never overlapping, skipped ticks counted, removal, coalescing --------------

class _SlowSource:
    """Each poll takes ``seconds``; records how many ran at once and when each started."""

    store = "redis"
    up_family = "redis_up"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.starts: list[float] = []

    def poll(self, deadline: float) -> Reading:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.starts.append(time.time())
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return Reading(Samples())

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_with(monkeypatch: pytest.MonkeyPatch, source: _SlowSource, *targets: RedisTarget) -> Scheduler:
    monkeypatch.setattr(sched, "source_for", lambda t: source)
    s = Scheduler(SnapshotStore())
    s.start(targets)
    return s


def wait_for(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert check()


def test_a_poll_slower_than_its_interval_never_overlaps_and_its_ticks_are_counted_skipped(monkeypatch):
    """``max_instances=1``: a tick that finds the last poll running is a skipped poll, counted
    and republished, never a second poll beside it."""
    source = _SlowSource(0.65)
    s = run_with(monkeypatch, source, target("slow", interval=0.25, timeout=2.0))
    try:
        rt = s.runtimes["slow"]
        wait_for(lambda: rt.stats.polls >= 3 and rt.stats.skipped >= 4)
        assert source.most == 1
        # Each poll takes 0.65 s, so about two ticks in three find one running.
        assert rt.stats.skipped >= rt.stats.polls
    finally:
        s.shutdown()


def test_polls_come_on_the_targets_grid(monkeypatch):
    """After the first round, each poll starts at ``slot_offset + k * interval``."""
    source = _SlowSource(0.0)
    interval = 1.0
    s = run_with(monkeypatch, source, target("grid", interval=interval))
    try:
        wait_for(lambda: len(source.starts) >= 5)
        offset = slot_offset("grid", interval)
        for started in source.starts[1:5]:
            # Off by a thread hand-off at most (a little late on a busy machine); a poll off the
            # grid would be up to half an interval away.
            off = (started - offset) % interval
            assert min(off, interval - off) < 0.25, (off, source.starts)
        assert s.runtimes["grid"].stats.skipped == 0
    finally:
        s.shutdown()


def test_a_removed_target_is_never_polled_again_and_its_tick_is_cancelled(monkeypatch):
    source = _SlowSource(0.0)
    s = run_with(monkeypatch, source, target("a", interval=0.2), target("b", interval=0.2))
    try:
        wait_for(lambda: len(source.starts) >= 4)
        assert s._timers.pending() == 2  # one tick per target, nothing else pending
        s.apply((target("b", interval=0.2),))
        assert s._timers.pending() == 1
        assert list(s.runtimes) == ["b"]
        polls_b = s.runtimes["b"].stats.polls
        wait_for(lambda: s.runtimes["b"].stats.polls >= polls_b + 3)
        assert s.store.snapshot("a") is None
    finally:
        s.shutdown()
    assert s._timers.pending() <= 2  # nothing scheduled after shutdown grows the heap
    count = len(source.starts)
    time.sleep(0.5)
    assert len(source.starts) == count, "polled after shutdown"


def test_ticks_missed_while_the_timer_thread_was_held_coalesce_into_one(monkeypatch):
    """A stalled timer thread (a machine busy for seconds) must not fire a backlog of polls at
    once when it resumes: the ticks it missed become one, counted skipped when later than the
    misfire grace, and the grid resumes."""
    source = _SlowSource(0.0)
    s = run_with(monkeypatch, source, target("c", interval=0.2))
    try:
        rt = s.runtimes["c"]
        wait_for(lambda: rt.stats.polls >= 2)
        held = threading.Event()
        s._timers.call_at(time.monotonic(), lambda: (held.set(), time.sleep(1.5)))
        assert held.wait(5)
        polls = rt.stats.polls
        time.sleep(1.6)  # the hold is over: the tick due during it has fired by now
        # The stall covered ~7 ticks; at most the late tick's poll (or its skip) came of them.
        assert rt.stats.polls <= polls + 2  # no burst: one late tick, then the grid
        assert rt.stats.skipped >= 1  # the late tick: 1.3-1.5 s late, past the 1 s grace
        wait_for(lambda: rt.stats.polls >= polls + 3)
        assert source.most == 1
    finally:
        s.shutdown()


def test_a_wall_clock_stepped_back_does_not_stop_the_polls(monkeypatch):
    """The grid is in Unix time and the ticks fire on the monotonic clock: after the wall clock
    stepped back an hour (NTP, a VM restored), the next tick must not be set an hour ahead."""
    source = _SlowSource(0.0)
    s = run_with(monkeypatch, source, target("stepped", interval=0.2))
    try:
        rt = s.runtimes["stepped"]
        wait_for(lambda: rt.stats.polls >= 2)

        class SteppedBack:
            monotonic = staticmethod(time.monotonic)

            @staticmethod
            def time() -> float:
                return time.time() - 3600.0
        monkeypatch.setattr(sched, "time", SteppedBack)
        polls = rt.stats.polls
        wait_for(lambda: rt.stats.polls >= polls + 3, seconds=10)
    finally:
        s.shutdown()
