"""Run each target's poll on its own schedule and put the outcome in the store.

One job per target on a fixed grid: every ``interval`` seconds at an offset taken from a hash of
the target's name. The offsets are whole slots of about a second (``SLOT_SECONDS``): a fleet's
polls are spread over the interval a slot at a time, and the targets of one slot are polled
together, back to back on a few threads (the pool's ``concurrency``), which costs a third less
CPU than a hand-off per poll (docs/benchmarks.md). They stay put across restarts and reloads;
the interval is exact. A target never overlaps itself: a tick that
finds its previous poll still running is a skipped poll, and so is one that comes later than
the misfire grace (one interval); ticks missed while late are coalesced into one. The first
round runs at once, spread over a short start-up window, so /readyz does not wait a whole
interval.

The ticks and the poll deadlines share one timer heap and its thread (``Timers``), which only
hands due polls to an ``ElasticPool``. This replaces APScheduler 3.x, which the design names:
at 1000 targets its per-run bookkeeping (datetimes, job store lock, events) and its imports
(``importlib.metadata`` for plugin entry points, ``multiprocessing``, ``tzlocal``) cost more
CPU and memory than the goals allow (docs/benchmarks.md, "Fixes, measured before/after"). The semantics are
APScheduler's as configured before: one interval job per target, ``max_instances=1``,
coalesced, ``misfire_grace_time`` one interval.

Every poll has a deadline (the target's ``timeout``): sources enforce it on their sockets, and
the timer thread enforces it for anything that ignores sockets (a blocking DNS lookup): at the
deadline it records ``cache_up 0`` with ``reason="timeout"`` and aborts the source's
connection, which is then discarded even if the poll still finishes. A hung target therefore
costs one pool thread for at most its timeout and never delays any other target. Polls run on
an ``ElasticPool`` sized from the targets' timeouts and intervals.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from exporter import audit, catalog, secrets, state
from exporter import errors as E
from exporter.errors import PollError
from exporter.exposition import label_prefix, render_chunks
from exporter.forecast import Forecaster
from exporter.pool import ElasticPool
from exporter.sharding import Shard
from exporter.snapshot import MAX_SERIES, Samples, Snapshot
from exporter.sources import Reading, Source, source_for
from exporter.store import Chunks, SnapshotStore
from exporter.targets import Target

log = logging.getLogger(__name__)

# The samples of a stored snapshot once rendered: empty, never added to.
RENDERED = Samples()

MAX_POLL_THREADS = 2048  # the pool's bound never exceeds this, whatever the targets ask for
POOL_MARGIN = 1.25  # head room over the threads that every target timing out at once would hold
FIRST_ROUND_MIN = 1.0  # seconds: the first polls are spread over at least this ...
FIRST_ROUND_PER_TARGET = 0.005  # ... and this much per target (1000 targets: 5 s), at most an interval
SLOT_SECONDS = 1.0  # the targets whose offsets fall in the same slot of about this length are polled together
POLL_CONCURRENCY = 2  # threads draining a slot's polls (more only for polls waiting on slow targets)


def phase(name: str) -> float:
    """A stable fraction in [0, 1) from the target's name: where in its interval it is polled."""
    return zlib.crc32(name.encode("utf-8", "surrogatepass")) / 2**32


def slot_offset(name: str, span: float) -> float:
    """When in every ``span`` seconds the target is polled: the start of one of the span's slots
    of about ``SLOT_SECONDS``, the one its ``phase`` falls in."""
    slots = max(1, round(span / SLOT_SECONDS))
    return math.floor(phase(name) * slots) * span / slots


def pool_size(targets: Iterable[Target]) -> int:
    """Threads enough for every target to sit out its whole timeout at once, and no more.

    A target never holds more than one thread (``max_instances=1``); on average it holds one
    for ``timeout / interval`` of the time when all its polls time out, the worst case that
    still keeps every poll on schedule.
    """
    targets = list(targets)
    busy = sum(min(1.0, t.timeout / t.interval) for t in targets)
    return max(1, min(len(targets), math.ceil(busy * POOL_MARGIN) + 4, MAX_POLL_THREADS))


def next_fire(previous: float, interval: float, offset: float) -> float:
    """The grid point ``offset + k * interval`` (Unix seconds) that follows a run at ``previous``:
    the first one at least half an interval later.

    The first run is off the grid, and a grid point just after it would find that poll still
    running (a skipped poll); on the grid this is simply the next point. Strictly later, so a
    time is never repeated."""
    offset %= interval
    k = math.floor((previous - offset) / interval) + 1
    while offset + k * interval < previous + interval / 2:
        k += 1
    return offset + k * interval


class Timers:
    """One thread that calls each callback when its time (on ``clock``) comes, unless it was
    cancelled or finished first: the poll ticks and the poll deadlines.

    Callbacks run on the timer thread, one after another, so they must be quick: a tick only
    hands a poll to the pool; an expired deadline aborts a connection and records a timeout."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._firing: dict[int, threading.Event] = {}
        self._ids = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="poll-timers", daemon=True)
        self._thread.start()

    def call_at(self, when: float, callback: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._ids)
            self._callbacks[token] = callback
            # Wake the thread only when it must wait less than it does now: a wake-up per call
            # costs CPU in proportion to the poll rate.
            if not self._heap or when < self._heap[0][0]:
                self._cond.notify()
            heapq.heappush(self._heap, (when, token))
            return token

    def cancel(self, token: int) -> None:
        """Drop a pending call; one already running goes on (never waits, so a callback's own
        locks may be held)."""
        with self._cond:
            self._callbacks.pop(token, None)

    def finish(self, token: int) -> bool:
        """True if cancelled in time; False if the call already happened for this token.

        When False, the callback has completed by the time this returns: the caller may then
        clean up what the callback touched without racing it.
        """
        with self._cond:
            if self._callbacks.pop(token, None) is not None:
                return True
            firing = self._firing.get(token)
        if firing is not None:
            firing.wait()
        return False

    def pending(self) -> int:
        with self._cond:
            return len(self._callbacks)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    while self._heap and self._heap[0][1] not in self._callbacks:
                        heapq.heappop(self._heap)  # cancelled or finished in time
                    now = self._clock()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    wait = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(wait)
                if self._stopped:
                    return
                _, token = heapq.heappop(self._heap)
                callback = self._callbacks.pop(token)
                firing = self._firing[token] = threading.Event()
            try:
                callback()
            except Exception:  # a failing callback must not stop the timers
                log.exception("timer callback failed")
            finally:
                with self._cond:
                    del self._firing[token]
                firing.set()


@dataclass
class PollStats:
    """Per-target counters behind the ``cache_exporter_*`` per-target families."""

    polls: int = 0
    skipped: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(E.REASONS, 0))
    duration_sum: float = 0.0
    last_duration: float | None = None
    last_success: float | None = None
    malformed_fields: int = 0
    section_errors: dict[str, int] = field(default_factory=dict)
    series_dropped: dict[tuple[str, str], int] = field(default_factory=dict)
    series: int | None = None

    def samples(self, out: Samples) -> None:
        out.add(catalog.POLLS, self.polls)
        out.add(catalog.POLLS_SKIPPED, self.skipped)
        for reason, count in self.errors.items():
            out.add(catalog.POLL_ERRORS, count, (("reason", reason),))
        out.add(catalog.POLL_DURATION, self.duration_sum, suffix="_sum")
        out.add(catalog.POLL_DURATION, self.polls, suffix="_count")
        out.add(catalog.LAST_POLL_DURATION, self.last_duration)
        out.add(catalog.LAST_SUCCESS, self.last_success)
        out.add(catalog.MALFORMED_FIELDS, self.malformed_fields)
        for section, count in self.section_errors.items():
            out.add(catalog.SECTION_ERRORS, count, (("section", section),))
        for (family, reason), count in self.series_dropped.items():
            out.add(catalog.SERIES_DROPPED, count, (("family", family), ("reason", reason)))
        out.add(catalog.TARGET_SERIES, self.series)


def published_chunks(snapshot_chunks: dict[str, bytes], stats: PollStats, prefix: str) -> dict[str, bytes]:
    """What /metrics serves for one target: the snapshot's rendered chunks plus its poll
    statistics. The snapshot is rendered once per poll; the statistics (a few series, and
    the only part a skipped poll changes) each time."""
    samples = Samples()
    stats.samples(samples)
    # The statistics' families (cache_exporter_*) are never the snapshot's, and none of them ever
    # goes away: given what was published before, the fresh ones replace the old ones.
    return {**snapshot_chunks, **render_chunks(samples, prefix)}


class TargetRuntime:
    """Everything the scheduler keeps for one target between polls."""

    def __init__(self, target: Target, source: Source) -> None:
        self.target = target
        self.source = source
        self.prefix = label_prefix(target.name, target.labels)
        self.stats = PollStats()
        self.offset = slot_offset(target.name, target.interval)  # where on the interval's grid it is polled
        self.lock = threading.Lock()
        self.failed_in_row = 0
        self.last_error: PollError | None = None  # the current outage's latest error; None while up
        self.forecaster = Forecaster(target.forecast_window)
        self.findings: set[tuple[str, str, bool]] = set()  # (check, severity, acknowledged)
        # The last snapshot and what was published for it (its chunks and the statistics'), the
        # very object the store holds.
        self.rendered: tuple[Snapshot, Chunks] | None = None
        # The job: when the next tick is due (Unix seconds), its timer, and whether a poll is
        # running (a tick that finds one is a skipped poll).
        self.due = 0.0
        self.tick: int | None = None
        self.running = False


class Scheduler:
    """Owns the timers, the poll pool and one TargetRuntime per configured target."""

    def __init__(self, store: SnapshotStore, saved: dict[str, state.Saved] | None = None,
                 shard: Shard | None = None) -> None:
        self.store = store
        # Every target list is installed through start() or apply(), and both keep only this
        # replica's targets: a config, a reload and a discovery refresh are filtered alike.
        self.shard = shard or Shard()
        self.offered = 0  # targets in the last list installed, before the shard kept its own
        self.runtimes: dict[str, TargetRuntime] = {}
        self._saved = dict(saved or {})  # forecast histories from the state file, taken once by name
        self.restored = 0  # targets whose forecast history came back from the state file
        self._lock = threading.Lock()
        self._awaiting_first: set[str] = set()
        self._ready = threading.Event()
        self._timers = Timers()
        self._pool = ElasticPool(1, concurrency=POLL_CONCURRENCY, call_later=self._later)
        self._stopped = False

    # -- lifecycle --------------------------------------------------------------------

    def start(self, targets: tuple[Target, ...]) -> None:
        self.offered = len(targets)
        targets = self.shard.select(targets)
        window = min(FIRST_ROUND_MIN + FIRST_ROUND_PER_TARGET * len(targets),
                     min((t.interval for t in targets), default=0.0))
        with self._lock:
            self._awaiting_first = {t.name for t in targets}
            if not targets:
                self._ready.set()
            for target in targets:
                self._add(target, first_delay=slot_offset(target.name, window))
            self._pool.resize(pool_size(targets))

    def shutdown(self) -> None:
        with self._lock:
            self._stopped = True
        self._timers.stop()
        self._pool.shutdown(wait=False)
        with self._lock:
            for rt in self.runtimes.values():
                rt.source.close()

    def ready(self) -> bool:
        return self._ready.is_set()

    def apply(self, targets: tuple[Target, ...]) -> dict[str, list[str]]:
        """Move to a new target list: keep unchanged targets untouched, replace the rest.

        Targets another shard owns are left out, as if they were not in the list."""
        self.offered = len(targets)
        wanted = {t.name: t for t in self.shard.select(targets)}
        changes: dict[str, list[str]] = {"added": [], "removed": [], "changed": [], "unchanged": []}
        with self._lock:
            for name in list(self.runtimes):
                if name not in wanted:
                    self._remove(name)
                    changes["removed"].append(name)
            for name, target in wanted.items():
                current = self.runtimes.get(name)
                if current is not None and current.target == target:
                    changes["unchanged"].append(name)
                    continue
                if current is not None:
                    self._remove(name)
                    changes["changed"].append(name)
                else:
                    changes["added"].append(name)
                self._add(target)
            self._pool.resize(pool_size(rt.target for rt in self.runtimes.values()))
        return changes

    def _add(self, target: Target, first_delay: float = 0.0) -> None:
        # The operator's names stay readable in logs and errors even if they contain a secret.
        secrets.public(target.name, *(value for _, value in target.labels))
        rt = TargetRuntime(target, source_for(target))
        self._restore(rt)
        self.runtimes[target.name] = rt
        self._schedule(rt, time.time() + first_delay)

    def _restore(self, rt: TargetRuntime) -> None:
        saved = self._saved.pop(rt.target.name, None)
        if saved is None:
            return
        t = rt.target
        if saved.identity != state.identity(t.type, t.address, t.forecast_window):
            log.info("target %s: the saved forecast history belongs to another store or window; not used", t.name)
            return
        now = time.monotonic()
        kept = rt.forecaster.restore(state.to_clock(saved.history, now - time.time()), now)
        if kept:
            self.restored += 1
            log.info("target %s: forecast history restored (%d points)", t.name, kept)

    def histories(self) -> dict[str, state.Saved]:
        """Every target's forecast history, times in Unix seconds: what the state file keeps."""
        offset = time.time() - time.monotonic()
        out = {}
        for name, rt in list(self.runtimes.items()):
            t = rt.target
            with rt.lock:
                history = rt.forecaster.history()
            if any(history.values()):
                out[name] = state.Saved(state.identity(t.type, t.address, t.forecast_window),
                                        state.to_clock(history, offset))
        return out

    def _remove(self, name: str) -> None:
        rt = self.runtimes.pop(name)
        if rt.tick is not None:
            self._timers.cancel(rt.tick)
        rt.source.close()
        self.store.remove(name)
        self._awaiting_first.discard(name)
        if not self._awaiting_first:
            self._ready.set()

    # -- the job ----------------------------------------------------------------------

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        self._timers.call_at(time.monotonic() + delay, callback)

    def _schedule(self, rt: TargetRuntime, due: float) -> None:
        """The target's next tick at ``due`` (Unix seconds); the caller holds ``self._lock``.
        Converted to the monotonic clock now, at each tick, so a stepped wall clock moves the
        grid with it."""
        rt.due = due
        rt.tick = self._timers.call_at(time.monotonic() + (due - time.time()), partial(self._tick, rt))

    def _tick(self, rt: TargetRuntime) -> None:
        """On the timer thread: hand the poll to the pool, or count it skipped; then set the
        next tick."""
        t = rt.target
        with self._lock:
            if self._stopped or self.runtimes.get(t.name) is not rt:
                return  # removed or replaced since this tick was set
            now = time.time()
            due = rt.due
            if due > now + t.interval:
                # The wall clock stepped back since this tick was set (it fired on the monotonic
                # clock, on time): the grid would put the next tick as far ahead as the step.
                due = now
            # Ticks missed while late (a busy machine) coalesce into this one, and the next is
            # on the grid, not one interval after a late tick.
            self._schedule(rt, next_fire(max(due, now - t.interval / 2), t.interval, rt.offset))
            # Still running (the last poll is slow), or too late for this tick to be worth a
            # poll (the next is near): skipped.
            start = not rt.running and now - due <= max(1.0, t.interval)
            if start:
                rt.running = True
        if not start:
            self._republish(rt)
            return
        try:
            self._pool.submit(self._poll, rt)
        except RuntimeError:  # shut down meanwhile
            rt.running = False

    def _poll(self, rt: TargetRuntime) -> None:
        try:
            if self.runtimes.get(rt.target.name) is rt:  # not removed while queued
                self._run(rt)
        finally:
            rt.running = False

    # -- polling ----------------------------------------------------------------------

    def _run(self, rt: TargetRuntime) -> None:
        name = rt.target.name
        started = time.monotonic()
        deadline = started + rt.target.timeout
        token = self._timers.call_at(deadline, partial(self._expired, rt, started))
        result: Reading | PollError
        try:
            result = rt.source.poll(deadline)
        except PollError as err:
            result = err
        except Exception as exc:  # a source bug must cost one poll, not the job
            log.exception("target %s: unexpected error while polling", name)
            result = PollError(E.ERROR, E.describe(exc))
        if self._timers.finish(token):
            self._record(rt, result, time.monotonic() - started)
        else:
            # The deadline's timer recorded a timeout and aborted the connection under the poll: never
            # reuse it, whatever the poll made of it (a reply that raced the abort leaves a
            # socket that was shut down, and the next poll would fail as "reset").
            rt.source.close()

    def _expired(self, rt: TargetRuntime, started: float) -> None:
        rt.source.abort()
        err = PollError(E.TIMEOUT, f"poll did not finish within {rt.target.timeout:g}s")
        self._record(rt, err, time.monotonic() - started)

    def _republish(self, rt: TargetRuntime) -> None:
        """A skipped poll: the last published text again, with the new skip count. Under the
        target's lock, so a poll publishing meanwhile is either before (and this republishes it)
        or after (and replaces this): an older snapshot never goes back over a newer one."""
        with rt.lock:
            rt.stats.skipped += 1
            if rt.rendered is not None:
                snapshot, published = rt.rendered
                self._put(rt, snapshot, published.as_dict())

    def _record(self, rt: TargetRuntime, result: Reading | PollError, duration: float) -> None:
        now = time.time()
        with rt.lock:
            stats = rt.stats
            stats.polls += 1
            stats.duration_sum += duration
            stats.last_duration = duration
            if isinstance(result, PollError):
                stats.errors[result.reason] += 1
                snapshot = self._failure_snapshot(rt, now)
            else:
                stats.last_success = now
                self._forecast_and_audit(rt, result)
                stats.malformed_fields += result.malformed_fields + result.samples.implausible
                stats.series = len(result.samples)
                self._count_dropped(rt, result.samples.dropped)
                for section in result.section_errors:
                    stats.section_errors[section] = stats.section_errors.get(section, 0) + 1
                snapshot = Snapshot(rt.target.name, rt.source.store, True, now,
                                    result.samples, result.memory, details=result.details)
                snapshot.samples.add(catalog.CACHE_UP, 1, (("store", rt.source.store),))
                snapshot.samples.add(rt.source.up_family, 1)
            self._log_transition(rt, result)
        self._publish(rt, snapshot)

    def _count_dropped(self, rt: TargetRuntime, dropped: dict[tuple[str, str], int]) -> None:
        for key, count in dropped.items():
            total = rt.stats.series_dropped.get(key, 0)
            if not total:  # once per family and reason: every poll of the target would repeat it
                family, reason = key
                limit = (f"max_series ({rt.target.max_series})" if reason == MAX_SERIES
                         else f"max_label_value_length ({rt.target.max_label_value_length})")
                log.warning("target %s: %d series of %s dropped by %s; see cache_exporter_series_dropped_total",
                            rt.target.name, count, family, limit)
            rt.stats.series_dropped[key] = total + count

    def _forecast_and_audit(self, rt: TargetRuntime, reading: Reading) -> None:
        """The stages after the poll: forecast from the target's history, then the config audit."""
        reading.details["forecast"] = rt.forecaster.update(time.monotonic(), reading.memory, rt.source.store,
                                                           reading.samples)
        findings = audit.evaluate(rt.target, reading)
        audit.add_samples(findings, reading.samples)
        reading.details["findings"] = [f.__dict__ for f in findings]
        # acknowledged is part of the key: an acknowledgement that expires is logged as a new warning.
        current = {(f.check, f.severity, f.acknowledged) for f in findings}
        for f in findings:
            if (f.check, f.severity, f.acknowledged) not in rt.findings:
                if f.acknowledged:  # accepted in the config: a note, not a warning on every restart
                    log.info("target %s: audit %s (%s, acknowledged): %s", rt.target.name, f.check, f.severity,
                             f.message)
                else:
                    log.warning("target %s: audit %s (%s): %s", rt.target.name, f.check, f.severity, f.message)
        still = {(check, severity) for check, severity, _ in current}
        for check, severity, _ in rt.findings - current:
            if (check, severity) in still:
                continue  # only its acknowledgement changed
            log.info("target %s: audit %s (%s) cleared", rt.target.name, check, severity)
        rt.findings = current

    def _failure_snapshot(self, rt: TargetRuntime, now: float) -> Snapshot:
        samples = Samples()
        samples.add(catalog.CACHE_UP, 0, (("store", rt.source.store),))
        samples.add(rt.source.up_family, 0)
        return Snapshot(rt.target.name, rt.source.store, False, now, samples)

    def _publish(self, rt: TargetRuntime, snapshot: Snapshot) -> None:
        """A poll's snapshot: rendered once, then published with the poll statistics."""
        snapshot_chunks = render_chunks(snapshot.samples, rt.prefix)
        # The chunks are all a scrape reads; the Sample objects behind them would hold a second
        # copy of every series per target for the life of the snapshot. /targets reads details
        # and memory only.
        snapshot.samples = RENDERED
        with rt.lock:
            self._put(rt, snapshot, snapshot_chunks)

    def _put(self, rt: TargetRuntime, snapshot: Snapshot, chunks: dict[str, bytes]) -> None:
        """Store ``chunks`` (a snapshot's, or what was published for it before) with the poll
        statistics of this moment; the caller holds ``rt.lock``."""
        published = Chunks(published_chunks(chunks, rt.stats, rt.prefix))
        rt.rendered = (snapshot, published)
        with self._lock:
            # A poll that finishes after its target was removed or replaced must not resurrect it.
            if self.runtimes.get(rt.target.name) is not rt:
                return
            self.store.put(rt.target.name, snapshot, published)
            self._awaiting_first.discard(rt.target.name)
            if not self._awaiting_first:
                self._ready.set()

    def _log_transition(self, rt: TargetRuntime, result: Reading | PollError) -> None:
        name = rt.target.name
        if isinstance(result, PollError):
            rt.failed_in_row += 1
            if rt.last_error is None or rt.last_error.reason != result.reason:
                log.warning("target %s (%s) is down: %s", name, rt.target.address, result)
            rt.last_error = result
        else:
            if rt.last_error is not None:
                log.info("target %s is up again after %d failed polls", name, rt.failed_in_row)
            elif rt.stats.polls == 1:
                log.info("target %s (%s) is up", name, rt.target.address)
            rt.failed_in_row = 0
            rt.last_error = None
