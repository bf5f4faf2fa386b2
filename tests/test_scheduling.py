"""The scheduler's own machinery: the poll grid, the elastic pool, its size, and the watchdog.

The end-to-end behaviour (recovery after outages, polls on schedule next to broken targets)
is in test_recovery.py and the fault labs; these pin the parts whose failure would be silent:
a grid that drifts or repeats a time, a pool that never shrinks, a connection that outlives
the watchdog's abort.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import scheduler as sched
from exporter.errors import PollError
from exporter.pool import ElasticPool
from exporter.scheduler import GridTrigger, Scheduler, Watchdog, phase, pool_size
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
    """A repeated time would loop APScheduler forever (it did, at microsecond rounding)."""
    trig = GridTrigger(interval, offset, datetime.fromtimestamp(0, UTC))
    prev = datetime.fromtimestamp(previous, UTC)
    nxt = trig.get_next_fire_time(prev, prev).timestamp()
    assert nxt - prev.timestamp() >= interval / 2 - 1e-4  # never on the heels of the previous run
    assert nxt - prev.timestamp() <= 1.5 * interval + 1e-4
    k = (nxt - trig.offset) / interval
    assert abs(k - round(k)) * interval < 1e-4  # on the grid


def test_grid_keeps_the_interval_exact_over_a_day():
    """APScheduler's jitter made 15 s polls come every 15.75 s on average; the grid does not drift."""
    trig = GridTrigger(15.0, phase("redis-1") * 15.0, datetime.fromtimestamp(1_000_000_000.3, UTC))
    t = trig.get_next_fire_time(None, None)  # type: ignore[arg-type]
    times = [t.timestamp()]
    for _ in range(5760):  # one day of polls
        t = trig.get_next_fire_time(t, t)
        times.append(t.timestamp())
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


# --- the watchdog and an aborted poll ----------------------------------------------------

def test_watchdog_finish_waits_for_a_running_expiry():
    dog = Watchdog()
    try:
        entered, release, done = threading.Event(), threading.Event(), []

        def expire() -> None:
            entered.set()
            release.wait(5)
            done.append(True)
        token = dog.watch(time.monotonic(), expire)
        assert entered.wait(5)
        threading.Timer(0.2, release.set).start()
        started = time.monotonic()
        assert dog.finish(token) is False
        assert done == [True], "finish() returned while the expiry callback was still running"
        assert time.monotonic() - started >= 0.15
        assert dog.finish(dog.watch(time.monotonic() + 10, lambda: None)) is True
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
            return b"".join(c for cs in store.family_chunks()[1].values() for c in cs).decode()
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
