"""How long does a /metrics body take to build for 1, 100 and 1000 targets?

Redis: a real redis-server is loaded with keys in four dbs and ~25 distinct commands (plus
error replies), polled once with RedisSource. Memcached: a real memcached (-m 64) is loaded
with items of 30 sizes (26 slab classes hold items) plus gets, misses, cas, incr/decr, touch
and deletes, and polled three times (the steady state: the calcification signal needs two
polls of history) by a MemcachedSource with ``slabs: true`` and by one with ``slabs: false``.
Each Reading is cloned under N target names exactly the way Scheduler._record/_publish turn
a poll into store chunks (CACHE_UP + <store>_up, PollStats.samples, label_prefix +
render_chunks, store.put). Then Exposition(store).body() is timed:

* changed: before every render one target's chunks are re-rendered and put (as a finished
  poll does), so the cached body is invalid. This is the realistic case: with 1000 targets
  polled every 15 s the store changes ~67 times a second, far more often than scrapes.
* cached: the store did not change since the previous render.

Both for the plain body and for body(compress=True). Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_render.py [--renders 50] [--targets 1,100,1000]
        [--stores redis,memcached]
"""

from __future__ import annotations

import argparse
import gc
import gzip
import resource
import time
from collections import Counter

import _common as C
from _common import MemcachedServer, RedisServer, load_memcached, load_workload, ms, percentile, table

from exporter import catalog
from exporter.exposition import Exposition, label_prefix, render_chunks
from exporter.scheduler import PollStats
from exporter.snapshot import Samples, Snapshot
from exporter.sources.memcached import MemcachedSource
from exporter.sources.redis import RedisSource
from exporter.store import SnapshotStore
from exporter.targets import MemcachedTarget, RedisTarget

GOAL_MS = 100.0  # render p50 at 1000 targets
STATIC_LABELS = (("env", "prod"),)  # one global static label, as most deployments have
STORES = ("redis", "memcached")
MEMCACHED_POLLS = 3  # polls before the Reading is cloned: calcification needs 2 of history


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


def poll_memcached(server: MemcachedServer, slabs: bool):
    """The last of MEMCACHED_POLLS back-to-back polls (a steady-state Reading) and its duration."""
    target = MemcachedTarget(name="bench", type="memcached", interval=15.0, timeout=5.0,
                             host="127.0.0.1", port=server.port, labels=STATIC_LABELS, slabs=slabs)
    source = MemcachedSource(target)
    try:
        for _ in range(MEMCACHED_POLLS):
            started = time.monotonic()
            reading = source.poll(started + 5.0)
            duration = time.monotonic() - started
        return reading, duration, source
    finally:
        source.close()


class Fleet:
    """N targets sharing one Reading, each with its own PollStats, as the scheduler keeps them."""

    def __init__(self, reading, duration: float, source: RedisSource | MemcachedSource, n: int) -> None:
        self.store = SnapshotStore()
        self.kind = source.store
        self.names = [f"{self.kind}-{i:04d}" for i in range(n)]
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
        snapshot = Snapshot(name, self.kind, True, now, self.base, self.reading.memory,
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
    store_text = b"".join(exp.body_parts()[1:])  # everything after the process-wide part
    store_series = sum(count_series(store_text).values())
    dups = sum(c - 1 for c in series.values() if c > 1)
    inflated = gzip.decompress(gz)
    gz_ok = "ok" if inflated.endswith(store_text) else "MISMATCH"
    return sum(series.values()), store_series, dups, gz_ok


class FleetResult:
    """The figures of one fleet size: render times, sizes, series."""

    def __init__(self, n: int, changed: list[float], cached: list[float], changed_gz: list[float],
                 cached_gz: list[float], series: int, store_series: int, plain: int, gz: int, dups: int,
                 gz_ok: str, publish: list[float], build_s: float, sys_s: float, faults: float) -> None:
        self.n, self.changed, self.cached, self.changed_gz, self.cached_gz = n, changed, cached, changed_gz, cached_gz
        self.series, self.store_series, self.plain, self.gz, self.dups, self.gz_ok = (
            series, store_series, plain, gz, dups, gz_ok)
        self.publish, self.build_s = publish, build_s
        self.sys_s, self.faults = sys_s, faults  # kernel CPU and minor page faults per changed plain render


def measure(reading, duration: float, source: RedisSource | MemcachedSource, sizes: list[int],
            renders: int) -> list[FleetResult]:
    results = []
    for n in sizes:
        gc.collect()
        t0 = time.perf_counter()
        fleet = Fleet(reading, duration, source, n)
        build_s = time.perf_counter() - t0
        exp = Exposition(fleet.store)
        before = resource.getrusage(resource.RUSAGE_SELF)
        changed = time_renders(fleet, exp, renders, compress=False, change=True)
        after = resource.getrusage(resource.RUSAGE_SELF)
        sys_s = (after.ru_stime - before.ru_stime) / renders
        faults = (after.ru_minflt - before.ru_minflt) / renders
        cached = time_renders(fleet, exp, renders, compress=False, change=False)
        changed_gz = time_renders(fleet, exp, renders, compress=True, change=True)
        cached_gz = time_renders(fleet, exp, renders, compress=True, change=False)
        plain = exp.body()
        gz = exp.body(compress=True)
        series, store_series, dups, gz_ok = check_body(exp, plain, gz)
        results.append(FleetResult(n, changed, cached, changed_gz, cached_gz, series, store_series, len(plain),
                                   len(gz), dups, gz_ok, fleet.publish_seconds, build_s, sys_s, faults))
        del fleet, exp, plain, gz
    return results


def report(results: list[FleetResult], what: str) -> None:
    """The two tables and the goal line of one fleet kind (the Redis layout, unchanged)."""
    rows = []
    size_rows = []
    result_1000 = None
    for r in results:
        rows.append([r.n, ms(C.p50(r.changed)), ms(percentile(r.changed, 90)), ms(max(r.changed)),
                     ms(C.p50(r.cached)), ms(C.p50(r.changed_gz)), ms(percentile(r.changed_gz, 90)),
                     ms(max(r.changed_gz)), ms(C.p50(r.cached_gz))])
        size_rows.append([r.n, f"{r.series:,}", f"{r.store_series / r.n:,.0f}", f"{r.plain:,}", f"{r.gz:,}",
                          f"{r.plain / r.gz:.1f}x", r.dups, r.gz_ok, ms(C.p50(r.publish)), f"{r.build_s:.2f}"])
        if r.n == 1000:
            result_1000 = C.p50(r.changed)

    print(table(["targets", "p50 ms", "p90 ms", "max ms", "cached p50", "gz p50 ms", "gz p90 ms", "gz max ms",
                 "gz cached p50"], rows,
                title=f"{what}: body() render time (changed = one target re-put before each render; "
                      f"cached = no change)"))
    print()
    print(table(["targets", "series", "per target", "plain bytes", "gzip bytes", "ratio", "dup series",
                 "gzip inflates", "publish p50 ms", "fill s"], size_rows,
                title=f"{what}: body size (publish = one target's Samples copy + PollStats + render_chunks + "
                      f"store.put)"))
    print()
    if result_1000 is not None:
        print(f"goal ({what}): render p50 <= {GOAL_MS:.0f} ms at 1000 targets (store changed): "
              f"{result_1000 * 1e3:.1f} ms -> {C.goal(result_1000 * 1e3 <= GOAL_MS)}")
    else:
        print(f"goal ({what}): render p50 <= {GOAL_MS:.0f} ms at 1000 targets: not measured "
              f"(1000 not in --targets)")


def compare(on: list[FleetResult], off: list[FleetResult]) -> None:
    """Memcached with and without per-slab-class series, side by side (changed store, p50)."""
    rows = []
    for a, b in zip(on, off, strict=True):
        rows.append([a.n, f"{a.store_series / a.n:,.0f} / {b.store_series / b.n:,.0f}",
                     f"{a.plain:,} / {b.plain:,}", f"{a.gz:,} / {b.gz:,}",
                     f"{ms(C.p50(a.changed))} / {ms(C.p50(b.changed))}",
                     f"{C.p50(a.changed) / C.p50(b.changed):.1f}x",
                     f"{ms(C.p50(a.changed_gz))} / {ms(C.p50(b.changed_gz))}",
                     f"{C.p50(a.changed_gz) / C.p50(b.changed_gz):.1f}x",
                     f"{ms(C.p50(a.publish))} / {ms(C.p50(b.publish))}",
                     f"{ms(a.sys_s)} / {ms(b.sys_s)}", f"{a.faults:,.0f} / {b.faults:,.0f}"])
    print(table(["targets", "series/target", "plain bytes", "gzip bytes", "changed p50 ms", "ratio",
                 "gz changed p50 ms", "gz ratio", "publish p50 ms", "sys ms/render", "faults/render"], rows,
                title="memcached, slabs on / slabs off (changed store, p50; ratio = on / off; sys ms and minor "
                      "page faults per changed plain render, from getrusage over the 50 renders)"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--renders", type=int, default=50)
    ap.add_argument("--targets", default="1,100,1000")
    ap.add_argument("--stores", default=",".join(STORES), help="comma-separated: redis, memcached")
    args = ap.parse_args()
    sizes = [int(x) for x in args.targets.split(",")]
    stores = [x.strip() for x in args.stores.split(",") if x.strip()]
    unknown = set(stores) - set(STORES)
    if unknown:
        ap.error(f"unknown store(s) {', '.join(sorted(unknown))}; choose from {', '.join(STORES)}")

    print("bench_render: Exposition(store).body() for N targets cloned from one real poll")
    print(C.machine_line())
    if "redis" in stores:
        print()
        print("=== redis ===")
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
        report(measure(reading, duration, source, sizes, args.renders), "redis")

    if "memcached" in stores:
        print()
        print("=== memcached ===")
        with MemcachedServer() as server:
            loaded = load_memcached(server)
            version = server.version()
            slabs_stats = server.stats("slabs")
            readings = {slabs: poll_memcached(server, slabs) for slabs in (True, False)}
        classes = sorted({k.split(":", 1)[0] for k in slabs_stats if k.split(":", 1)[0].isdigit()}, key=int)
        on, off = readings[True][0], readings[False][0]
        per_class = sum(1 for s in on.samples if dict(s.labels).get("slab") == classes[0]) if classes else 0
        print(f"reading: memcached {version} (-m {server.memory_mb}), {loaded['stored']:,} items stored in "
              f"{len(classes)} slab classes (active_slabs {slabs_stats.get('active_slabs')}); "
              f"reading #{MEMCACHED_POLLS}: {len(on.samples)} samples with slabs on "
              f"({per_class} per slab class), {len(off.samples)} with slabs off; "
              f"static labels {dict(STATIC_LABELS)}; {args.renders} renders per figure")
        results = {}
        for slabs in (True, False):
            print()
            what = f"memcached slabs {'on' if slabs else 'off'}"
            results[slabs] = measure(*readings[slabs], sizes, args.renders)
            report(results[slabs], what)
        print()
        compare(results[True], results[False])


if __name__ == "__main__":
    main()
