"""Run each target's poll on its own schedule and put the outcome in the store.

One APScheduler 3.x interval job per target: jittered, ``max_instances=1`` (a target never
overlaps itself), coalesced. Every poll has a deadline (the target's ``timeout``): sources
enforce it on their sockets, and a ``Watchdog`` thread enforces it for anything that ignores
sockets (a blocking DNS lookup): at the deadline it records ``cache_up 0`` with
``reason="timeout"`` and aborts the source's connection. A hung target therefore costs one
pool thread for at most its timeout and never delays any other target.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter import audit, catalog
from exporter import errors as E
from exporter.errors import PollError
from exporter.exposition import label_prefix, render_chunks
from exporter.forecast import Forecaster
from exporter.snapshot import Samples, Snapshot
from exporter.sources import Reading, Source, source_for
from exporter.store import SnapshotStore
from exporter.targets import Target

log = logging.getLogger(__name__)

MAX_POLL_THREADS = 256  # threads start on demand; this is a ceiling, not a cost
FIRST_POLL_SPREAD = 1.0  # seconds over which the first polls of all targets are spread


class Watchdog:
    """Calls a callback when a watched deadline passes, unless the watch was finished first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="poll-watchdog", daemon=True)
        self._thread.start()

    def watch(self, deadline: float, on_expire: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._ids)
            self._callbacks[token] = on_expire
            heapq.heappush(self._heap, (deadline, token))
            self._cond.notify()
            return token

    def finish(self, token: int) -> bool:
        """True if finished in time; False if the deadline already fired for this token."""
        with self._cond:
            return self._callbacks.pop(token, None) is not None

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    while self._heap and self._heap[0][1] not in self._callbacks:
                        heapq.heappop(self._heap)  # finished in time
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                if self._stopped:
                    return
                _, token = heapq.heappop(self._heap)
                callback = self._callbacks.pop(token)
            try:
                callback()
            except Exception:  # a failing callback must not stop the watchdog
                log.exception("watchdog callback failed")


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


def published_samples(snapshot: Snapshot, stats: PollStats) -> Samples:
    """What /metrics serves for one target: the snapshot's samples plus its poll statistics."""
    samples = Samples()
    for s in snapshot.samples:
        samples.add(s.family, s.value, s.labels, s.suffix, allow_inf=True)
    stats.samples(samples)
    return samples


class TargetRuntime:
    """Everything the scheduler keeps for one target between polls."""

    def __init__(self, target: Target, source: Source) -> None:
        self.target = target
        self.source = source
        self.prefix = label_prefix(target.name, target.labels)
        self.stats = PollStats()
        self.lock = threading.Lock()
        self.failed_in_row = 0
        self.last_error: PollError | None = None  # the current outage's latest error; None while up
        self.forecaster = Forecaster(target.forecast_window)
        self.findings: set[tuple[str, str]] = set()


class Scheduler:
    """Owns the APScheduler instance and one TargetRuntime per configured target."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self.runtimes: dict[str, TargetRuntime] = {}
        self._lock = threading.Lock()
        self._awaiting_first: set[str] = set()
        self._ready = threading.Event()
        self._watchdog = Watchdog()
        self._sched = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(MAX_POLL_THREADS)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        self._sched.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        # APScheduler logs every skipped run at WARNING; we count them in a metric instead.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)

    # -- lifecycle --------------------------------------------------------------------

    def start(self, targets: tuple[Target, ...]) -> None:
        with self._lock:
            self._awaiting_first = {t.name for t in targets}
            if not targets:
                self._ready.set()
            for target in targets:
                self._add(target)
        self._sched.start()

    def shutdown(self) -> None:
        self._sched.shutdown(wait=False)
        self._watchdog.stop()
        with self._lock:
            for rt in self.runtimes.values():
                rt.source.close()

    def ready(self) -> bool:
        return self._ready.is_set()

    def apply(self, targets: tuple[Target, ...]) -> dict[str, list[str]]:
        """Move to a new target list: keep unchanged targets untouched, replace the rest."""
        wanted = {t.name: t for t in targets}
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
                self._add(target, first_run_now=True)
        return changes

    def _add(self, target: Target, first_run_now: bool = False) -> None:
        rt = TargetRuntime(target, source_for(target))
        self.runtimes[target.name] = rt
        spread = 0.0 if first_run_now else random.uniform(0, min(target.interval, FIRST_POLL_SPREAD))
        self._sched.add_job(
            self._run, IntervalTrigger(seconds=target.interval, jitter=min(target.interval * 0.1, 2.0)),
            args=[target.name], id=target.name, name=target.name, replace_existing=True,
            next_run_time=datetime.now(UTC) + timedelta(seconds=spread),
            misfire_grace_time=max(1, int(target.interval)),
        )

    def _remove(self, name: str) -> None:
        rt = self.runtimes.pop(name)
        try:
            self._sched.remove_job(name)
        except Exception:  # already gone (never started / shut down)
            pass
        rt.source.close()
        self.store.remove(name)
        self._awaiting_first.discard(name)
        if not self._awaiting_first:
            self._ready.set()

    # -- polling ----------------------------------------------------------------------

    def _run(self, name: str) -> None:
        rt = self.runtimes.get(name)
        if rt is None:
            return
        started = time.monotonic()
        deadline = started + rt.target.timeout
        token = self._watchdog.watch(deadline, lambda: self._expired(rt, started))
        result: Reading | PollError
        try:
            result = rt.source.poll(deadline)
        except PollError as err:
            result = err
        except Exception as exc:  # a source bug must cost one poll, not the job
            log.exception("target %s: unexpected error while polling", name)
            result = PollError(E.ERROR, E.describe(exc))
        if self._watchdog.finish(token):
            self._record(rt, result, time.monotonic() - started)

    def _expired(self, rt: TargetRuntime, started: float) -> None:
        rt.source.abort()
        err = PollError(E.TIMEOUT, f"poll did not finish within {rt.target.timeout:g}s")
        self._record(rt, err, time.monotonic() - started)

    def _on_skipped(self, event: JobExecutionEvent) -> None:
        rt = self.runtimes.get(event.job_id)
        if rt is not None:
            with rt.lock:
                rt.stats.skipped += 1
            self._publish(rt, self.store.snapshot(rt.target.name))

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
                stats.malformed_fields += result.malformed_fields
                for section in result.section_errors:
                    stats.section_errors[section] = stats.section_errors.get(section, 0) + 1
                snapshot = Snapshot(rt.target.name, rt.source.store, True, now,
                                    result.samples, result.memory, details=result.details)
                snapshot.samples.add(catalog.CACHE_UP, 1, (("store", rt.source.store),))
                snapshot.samples.add(rt.source.up_family, 1)
            self._log_transition(rt, result)
        self._publish(rt, snapshot)

    def _forecast_and_audit(self, rt: TargetRuntime, reading: Reading) -> None:
        """The stages after the poll: forecast from the target's history, then the config audit."""
        reading.details["forecast"] = rt.forecaster.update(time.monotonic(), reading.memory, rt.source.store,
                                                           reading.samples)
        findings = audit.evaluate(rt.target, reading)
        audit.add_samples(findings, reading.samples)
        reading.details["findings"] = [f.__dict__ for f in findings]
        current = {(f.check, f.severity) for f in findings}
        for f in findings:
            if (f.check, f.severity) not in rt.findings:
                log.warning("target %s: audit %s (%s): %s", rt.target.name, f.check, f.severity, f.message)
        for check, severity in rt.findings - current:
            log.info("target %s: audit %s (%s) cleared", rt.target.name, check, severity)
        rt.findings = current

    def _failure_snapshot(self, rt: TargetRuntime, now: float) -> Snapshot:
        samples = Samples()
        samples.add(catalog.CACHE_UP, 0, (("store", rt.source.store),))
        samples.add(rt.source.up_family, 0)
        return Snapshot(rt.target.name, rt.source.store, False, now, samples)

    def _publish(self, rt: TargetRuntime, snapshot: Snapshot | None) -> None:
        if snapshot is None:
            return
        with rt.lock:
            samples = published_samples(snapshot, rt.stats)
        chunks = render_chunks(samples, rt.prefix)
        with self._lock:
            # A poll that finishes after its target was removed or replaced must not resurrect it.
            if self.runtimes.get(rt.target.name) is not rt:
                return
            self.store.put(rt.target.name, snapshot, chunks)
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
