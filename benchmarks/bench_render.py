"""How long does a /metrics body take to build for 1, 100 and 1000 targets?

A real redis-server is loaded with keys in four dbs and ~25 distinct commands (plus error
replies), polled once with RedisSource; that Reading is cloned under N target names exactly
the way Scheduler._record/_publish turn a poll into store chunks (CACHE_UP + redis_up,
PollStats.samples, label_prefix + render_chunks, store.put). Then Exposition(store).body() is
timed:

* changed: before every render one target's chunks are re-rendered and put (as a finished
  poll does), so the cached body is invalid. This is the realistic case: with 1000 targets
  polled every 15 s the store changes ~67 times a second, far more often than scrapes.
* cached: the store did not change since the previous render.

Both for the plain body and for body(compress=True). Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_render.py [--renders 50] [--targets 1,100,1000]
"""

from __future__ import annotations

import argparse
import gc
import gzip
import time
from collections import Counter

import _common as C
from _common import RedisServer, load_workload, ms, percentile, table

from exporter import catalog
from exporter.exposition import Exposition, label_prefix, render_chunks
from exporter.scheduler import PollStats
from exporter.snapshot import Samples, Snapshot
from exporter.sources.redis import RedisSource
from exporter.store import SnapshotStore
from exporter.targets import RedisTarget

GOAL_MS = 100.0  # render p50 at 1000 targets
STATIC_LABELS = (("env", "prod"),)  # one global static label, as most deployments have


def poll_once(server: RedisServer):
    target = RedisTarget(name="bench", type="redis", interval=15.0, timeout=5.0,
                         host="127.0.0.1", port=server.port, labels=STATIC_LABELS)
    source = RedisSource(target)
    try:
        started = time.monotonic()
        reading = source.poll(started + 5.0)
        return reading, time.monotonic() - started, source
    finally:
        source.close()


class Fleet:
    """N targets sharing one Reading, each with its own PollStats, as the scheduler keeps them."""

    def __init__(self, reading, duration: float, source: RedisSource, n: int) -> None:
        self.store = SnapshotStore()
        self.names = [f"redis-{i:04d}" for i in range(n)]
        self.prefixes = {name: label_prefix(name, STATIC_LABELS) for name in self.names}
        self.stats = {name: PollStats() for name in self.names}
        self.duration = duration
        # Scheduler._record: the Reading's samples plus cache_up and redis_up.
        base = Samples()
        for s in reading.samples:
            base.add(s.family, s.value, s.labels, s.suffix)
        base.add(catalog.CACHE_UP, 1, (("store", source.store),))
        base.add(source.up_family, 1)
        self.base = base
        self.reading = reading
        self.publish_seconds: list[float] = []
        for name in self.names:
            self.poll_finished(name)

    def poll_finished(self, name: str) -> None:
        """What Scheduler._record + _publish do after one successful poll of ``name``."""
        started = time.perf_counter()
        now = time.time()
        stats = self.stats[name]
        stats.polls += 1
        stats.duration_sum += self.duration
        stats.last_duration = self.duration
        stats.last_success = now
        snapshot = Snapshot(name, "redis", True, now, self.duration, self.base, self.reading.memory,
                            details=self.reading.details)
        samples = Samples()
        for s in snapshot.samples:
            samples.add(s.family, s.value, s.labels, s.suffix)
        stats.samples(samples)
        chunks = render_chunks(samples, self.prefixes[name])
        self.store.put(name, snapshot, chunks)
        self.publish_seconds.append(time.perf_counter() - started)


def time_renders(fleet: Fleet, exp: Exposition, renders: int, compress: bool, change: bool) -> list[float]:
    out = []
    exp.body_parts(compress=compress)  # warm the header cache and the cached body
    for i in range(renders):
        if change:
            fleet.poll_finished(fleet.names[i % len(fleet.names)])
        started = time.perf_counter()
        exp.body_parts(compress=compress)  # what the HTTP handler sends (no join)
        out.append(time.perf_counter() - started)
    return out


def count_series(text: bytes) -> Counter:
    series: Counter = Counter()
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            series[line.rsplit(" ", 1)[0]] += 1
    return series


def check_body(exp: Exposition, plain: bytes, gz: bytes) -> tuple[int, int, int, str]:
    """(all series, store-part series, duplicate series, gzip check) of a body.

    The store part is what the targets contribute; the rest is the process-wide registry."""
    series = count_series(plain)
    store_series = sum(count_series(exp._cache_text).values())
    dups = sum(c - 1 for c in series.values() if c > 1)
    inflated = gzip.decompress(gz)
    gz_ok = "ok" if inflated.endswith(exp._cache_text) else "MISMATCH"
    return sum(series.values()), store_series, dups, gz_ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--renders", type=int, default=50)
    ap.add_argument("--targets", default="1,100,1000")
    args = ap.parse_args()
    sizes = [int(x) for x in args.targets.split(",")]

    print("bench_render: Exposition(store).body() for N targets cloned from one real poll")
    print(C.machine_line())
    with RedisServer() as server:
        load_workload(server)
        reading, duration, source = poll_once(server)
        version = server.version()
    cmds = sum(1 for s in reading.samples if s.family == "redis_commands_total")
    errs = sum(1 for s in reading.samples if s.family == "redis_errors_total")
    dbs = sum(1 for s in reading.samples if s.family == "redis_db_keys")
    print(f"reading: redis {version}, {len(reading.samples)} samples "
          f"({cmds} commandstats commands, {errs} errorstats, {dbs} dbs); "
          f"static labels {dict(STATIC_LABELS)}; {args.renders} renders per figure")
    print()

    rows = []
    size_rows = []
    result_1000 = None
    for n in sizes:
        gc.collect()
        t0 = time.perf_counter()
        fleet = Fleet(reading, duration, source, n)
        build_s = time.perf_counter() - t0
        exp = Exposition(fleet.store)
        changed = time_renders(fleet, exp, args.renders, compress=False, change=True)
        cached = time_renders(fleet, exp, args.renders, compress=False, change=False)
        changed_gz = time_renders(fleet, exp, args.renders, compress=True, change=True)
        cached_gz = time_renders(fleet, exp, args.renders, compress=True, change=False)
        plain = exp.body()
        gz = exp.body(compress=True)
        series, store_series, dups, gz_ok = check_body(exp, plain, gz)
        publish = fleet.publish_seconds
        rows.append([n, ms(C.p50(changed)), ms(percentile(changed, 90)), ms(max(changed)), ms(C.p50(cached)),
                     ms(C.p50(changed_gz)), ms(percentile(changed_gz, 90)), ms(max(changed_gz)),
                     ms(C.p50(cached_gz))])
        size_rows.append([n, f"{series:,}", f"{store_series / n:,.0f}", f"{len(plain):,}", f"{len(gz):,}",
                          f"{len(plain) / len(gz):.1f}x", dups, gz_ok, ms(C.p50(publish)), f"{build_s:.2f}"])
        if n == 1000:
            result_1000 = C.p50(changed)
        del fleet, exp, plain, gz

    print(table(["targets", "p50 ms", "p90 ms", "max ms", "cached p50", "gz p50 ms", "gz p90 ms", "gz max ms",
                 "gz cached p50"], rows,
                title="body() render time (changed = one target re-put before each render; cached = no change)"))
    print()
    print(table(["targets", "series", "per target", "plain bytes", "gzip bytes", "ratio", "dup series",
                 "gzip inflates", "publish p50 ms", "fill s"], size_rows,
                title="body size (publish = one target's Samples copy + PollStats + render_chunks + store.put)"))
    print()
    if result_1000 is not None:
        print(f"goal: render p50 <= {GOAL_MS:.0f} ms at 1000 targets (store changed): "
              f"{result_1000 * 1e3:.1f} ms -> {C.goal(result_1000 * 1e3 <= GOAL_MS)}")
    else:
        print(f"goal: render p50 <= {GOAL_MS:.0f} ms at 1000 targets: not measured (1000 not in --targets)")


if __name__ == "__main__":
    main()
