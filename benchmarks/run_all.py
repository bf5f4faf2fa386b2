"""Run every benchmark in order: bench_render, bench_poll, bench_poll_memcached, bench_forecast,
bench_app_parse, bench_http_probe, bench_http, bench_rss, bench_scheduler, bench_early_warning,
bench_stale_error, bench_vs_redis_exporter.
``make bench`` calls this.

Each script starts and stops its own redis-server and/or memcached on free 127.0.0.1 ports and
prints tables.
Exit status: 0 if every script ran to the end, else 1 (figures themselves are never pass/fail).

    .venv/bin/python benchmarks/run_all.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("bench_render.py", "bench_poll.py", "bench_poll_memcached.py", "bench_forecast.py",
           "bench_app_parse.py", "bench_http_probe.py", "bench_http.py", "bench_rss.py", "bench_scheduler.py")
SCRIPTS += ("bench_early_warning.py",)  # needs promtool, not redis-server or memcached
SCRIPTS += ("bench_stale_error.py",)  # needs nginx; ~80 s of real time
SCRIPTS += ("bench_vs_redis_exporter.py",)  # needs prometheus-redis-exporter; ~5 min


def main() -> int:
    failed = []
    for name in SCRIPTS:
        print(f"===== benchmarks/{name} =====", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / name)], cwd=HERE.parent)
        print(f"----- benchmarks/{name}: exit {code} after {time.monotonic() - started:.1f} s\n", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"run_all: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
