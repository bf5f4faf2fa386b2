"""Replay a scenario poll by poll through the repository's Forecaster, as the scheduler calls it.

For every poll (every ``interval`` seconds from the exporter's start) the replay builds what a Redis
poll yields for the memory part -- the ``MemoryView`` and the unified ``cache_*`` samples
(``exporter/sources/redis/mapping.py`` ``_memory_view`` and ``add_unified``, with
mem_not_counted_for_evict = 0) -- then calls ``Forecaster.update(now, memory, "redis", samples)``
on those samples exactly as ``Scheduler._forecast_and_audit`` does (``now`` is a monotonic-like
clock), then adds ``cache_up`` and ``redis_up`` as ``Scheduler._record`` does. Every sample in the
resulting ``Samples`` becomes an exported series, whatever families the Forecaster writes, so a
redesigned Forecaster is measured without changing the benchmark.

Outside the exporter, as Prometheus would see them: ``cache_exporter_build_info``, ``up`` of the
cache-exporter job, and the peer's view of the same memory (``redis_memory_used_bytes``,
``redis_memory_max_bytes``, as redis_exporter exports them), which no exporter restart interrupts.

An exporter restart: no polls (and no scrapes) for ``restart_gap`` polls -- every cache-exporter
series gets a staleness marker at the first failed scrape, as Prometheus writes one -- then a
fresh ``Forecaster`` (the history is lost), or, for ``restart_keeps_history`` scenarios, a fresh
one given the old one's history back as the scheduler does from ``--state.dir``
(``Forecaster.history()`` saved at shutdown, ``restore(history, now)`` at start) when the
Forecaster has those methods.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from early_warning.scenarios import Scenario
from exporter import catalog
from exporter.forecast import Forecaster
from exporter.snapshot import MemoryView, Samples
from exporter.sources import redis as redis_source

STORE = "redis"
JOB = (("job", "cache-exporter"), ("instance", "cache-exporter:9121"))
TARGET = "sessions"
BUILD_INFO = 'cache_exporter_build_info{job="cache-exporter", instance="cache-exporter:9121", version="bench", ' \
             'python_version="3"}'
MONOTONIC_START = 100_000.0  # the Forecaster's clock at the exporter's start (time.monotonic() in the scheduler)
RESIDENT_OVERHEAD = 1.08  # used_memory_rss / used_memory
HOST_MEMORY_FACTOR = 4.0  # total_system_memory / maxmemory: the hard limit is far away
VERSION = "7.2.4"
NO_FIELDS = redis_source.Info({}, set(), [])  # the memory part only: no hits, misses or keyspace
STALE = "stale"  # a staleness marker (see promtool_eval.with_staleness)

UNTIL_FULL = getattr(catalog, "CACHE_MEMORY_UNTIL_FULL", "cache_memory_seconds_until_full")

# A series value per sample: a float, None (no sample) or STALE (a staleness marker).
Value = float | str | None


def make_forecaster(window: float) -> Forecaster:
    """The one place that builds a Forecaster; ``Scheduler``'s ``TargetRuntime`` does the same."""
    return Forecaster(window)


def restore_history(old: Forecaster, new: Forecaster, now: float) -> bool:
    """What a restart with ``--state.dir`` does: the saved history goes to the new Forecaster.
    False when this Forecaster cannot save and restore its history."""
    if not (hasattr(old, "history") and hasattr(new, "restore")):
        return False
    new.restore(old.history(), now)
    return True


def update(forecaster: Forecaster, now: float, memory: MemoryView, samples: Samples) -> None:
    """The one place that calls it, as ``Scheduler._forecast_and_audit`` does."""
    forecaster.update(now, memory, STORE, samples)


@dataclass
class Replay:
    """The exported series of one scenario, one value per poll."""

    scenario: Scenario
    interval: float
    polls: int
    series: dict[str, list[Value]] = field(default_factory=dict)
    until_full: list[float | None] = field(default_factory=list)  # cache_memory_seconds_until_full per poll
    used: list[float] = field(default_factory=list)  # used bytes per poll
    forecast_seconds: float = 0.0  # CPU seconds spent in Forecaster.update
    history_restored: bool | None = None  # restart_keeps_history scenarios: whether it could be done

    def add(self, key: str, index: int, value: Value) -> None:
        values = self.series.get(key)
        if values is None:
            values = self.series[key] = [None] * self.polls
        values[index] = value


def series_key(family: str, labels: tuple[tuple[str, str], ...], suffix: str = "") -> str:
    pairs = JOB + (("target", TARGET),) + labels
    body = ", ".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return f"{family}{suffix}{{{body}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def noise_series(scenario: Scenario, polls: int) -> list[float]:
    """Seeded noise per poll (fraction of the limit): white, or AR(1) with the scenario's phi."""
    if scenario.noise <= 0:
        return [0.0] * polls
    rng = random.Random(scenario.seed)
    phi = scenario.noise_phi
    innovation = scenario.noise * math.sqrt(1 - phi * phi)
    out = []
    x = rng.gauss(0.0, scenario.noise)
    for _ in range(polls):
        out.append(x)
        x = phi * x + rng.gauss(0.0, innovation)
    return out


def replay(scenario: Scenario, interval: float, window: float,
           clock: Callable[[], float] | None = None) -> Replay:
    """Run every poll of ``scenario`` through a Forecaster; return the exported series."""
    import time

    clock = clock or time.process_time
    polls = int(scenario.duration // interval) + 1
    out = Replay(scenario, interval, polls)
    noise = noise_series(scenario, polls)
    limit = scenario.limit
    gap = set()
    restart_index = None
    if scenario.restart_at is not None:
        restart_index = int(round(scenario.restart_at / interval))
        gap = set(range(restart_index, restart_index + scenario.restart_gap))
    forecaster = make_forecaster(window)
    store = (("store", STORE),)
    for i in range(polls):
        t = i * interval
        fraction = min(1.0, max(0.0, scenario.shape(t) + noise[i]))
        used = float(round(fraction * limit))  # Redis reports whole bytes
        out.used.append(used)
        # The peer's series (redis_exporter): unaffected by our exporter's restarts.
        out.add(f'redis_memory_used_bytes{{{_labels()}}}', i, used)
        out.add(f'redis_memory_max_bytes{{{_labels()}}}', i, float(limit))
        if i in gap:  # no poll, no scrape: promtool_eval.with_staleness marks the series stale
            out.add(f'up{{{_job_labels()}}}', i, 0.0)
            out.until_full.append(None)
            continue
        if restart_index is not None and i == restart_index + scenario.restart_gap:
            old, forecaster = forecaster, make_forecaster(window)  # the restarted exporter
            if scenario.restart_keeps_history:
                out.history_restored = restore_history(old, forecaster, MONOTONIC_START + t)
        resident = used * RESIDENT_OVERHEAD
        memory = MemoryView(used=used, limit=limit, limit_source="maxmemory", resident=resident,
                            resident_limit=limit * HOST_MEMORY_FACTOR, evicts_when_full=scenario.evicts,
                            eviction_policy=scenario.policy)
        samples = Samples()
        redis_source.add_unified(samples, NO_FIELDS, memory, VERSION, "master")  # as a Redis poll does
        started = clock()
        update(forecaster, MONOTONIC_START + t, memory, samples)
        out.forecast_seconds += clock() - started
        samples.add(catalog.CACHE_UP, 1, store)
        samples.add("redis_up", 1)
        for s in samples:
            out.add(series_key(s.family, s.labels, s.suffix), i, s.value)
        out.add(BUILD_INFO, i, 1.0)
        out.add(f'up{{{_job_labels()}}}', i, 1.0)
        out.until_full.append(samples.value(UNTIL_FULL, store))
    return out


def _labels() -> str:
    return ", ".join(f'{k}="{v}"' for k, v in JOB + (("target", TARGET),))


def _job_labels() -> str:
    return ", ".join(f'{k}="{v}"' for k, v in JOB)

