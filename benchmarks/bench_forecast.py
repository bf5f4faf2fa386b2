"""bench_forecast: CPU and memory of the forecast per target (Forecaster.update per poll).

Feeds 8 days of 15 s polls (the longest ring holds 7 days, so its memory is at its bound) and a
day of 1 s polls to one Forecaster, as the scheduler does after every successful poll, and reports
CPU per update (mean, p50, p99: the closed buckets of each ring are read once per bucket, so most
updates cost the newest bucket and a dozen windows), and the retained memory per target with a
full history. Prints figures; asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.forecast import Forecaster  # noqa: E402
from exporter.snapshot import MemoryView, Samples  # noqa: E402

MiB = 2**20


def run(interval: float, seconds: float, window: float = 3600.0) -> dict[str, float]:
    f = Forecaster(window)
    times = []
    t = 0.0
    n = 0
    while t < seconds:
        memory = MemoryView(used=100 * MiB + 50 * t + (t % 300) * 1000, limit=2048 * MiB,
                            resident=120 * MiB + 40 * t, resident_limit=4096 * MiB, evicts_when_full=False)
        out = Samples()
        started = time.perf_counter()
        f.update(t, memory, "redis", out)
        times.append(time.perf_counter() - started)
        t += interval
        n += 1
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    g = Forecaster(window)
    t = 0.0
    while t < seconds:
        g.update(t, MemoryView(used=MiB + t, limit=2048 * MiB, resident=MiB + t, resident_limit=4096 * MiB),
                 "redis", Samples())
        t += interval
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    retained = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return {"updates": n, "mean_us": statistics.fmean(times) * 1e6, "p50_us": statistics.median(times) * 1e6,
            "p99_us": statistics.quantiles(times, n=100)[98] * 1e6, "max_us": max(times) * 1e6,
            "retained_kib": retained / 1024, "buckets": len(g.used.points())}


def main() -> None:
    print("bench_forecast: Forecaster.update per poll (used + resident series), 1 h window; 8 days at 15 s, "
          "1 day at 1 s")
    print(f"{'poll interval':>13}  {'updates':>7}  {'mean us':>8}  {'p50 us':>7}  {'p99 us':>7}  "
          f"{'max us':>7}  {'points kept':>12}  {'memory per target':>17}")
    for interval, days in ((15.0, 8), (1.0, 1)):
        r = run(interval, days * 24 * 3600)
        print(f"{interval:>12.0f}s  {r['updates']:>7}  {r['mean_us']:>8.1f}  {r['p50_us']:>7.1f}  "
              f"{r['p99_us']:>7.1f}  {r['max_us']:>7.1f}  {r['buckets']:>12}  "
              f"{r['retained_kib']:>13.1f} KiB")
    print("goal: negligible next to a poll (Redis poll ~620 us CPU) and bounded history -> see above")


if __name__ == "__main__":
    main()
