"""The daemon at 1000 Redis targets over minutes: CPU per window and RSS every second.

One real redis-server with the benchmark workload (``_common.load_workload``, 307 series per
target) is the target of every configured target; ``.venv/bin/python -m exporter run`` runs as a
subprocess with N targets at the default 15 s interval. Once every target has been polled and
/metrics scraped three times (gzip), for ``--seconds``: VmRSS is read every second, /metrics is
scraped (gzip, as Prometheus asks) every ``--scrape-every`` seconds, and the process's CPU and the
polls done are read at the end of every ``--window`` seconds. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_fleet_soak.py [--targets 1000] [--seconds 180] [--window 30]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from _common import RedisServer, free_port, load_workload, machine_line, raise_nofile, stop_process, wait_until
from bench_vs_redis_exporter import PYTHON, cpu_seconds, poll_counts, status


def get(port: int, path: str) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
        return gzip.decompress(body) if response.headers.get("Content-Encoding") == "gzip" else body


def polls(port: int) -> tuple[float, float]:
    """(polls, skipped polls) over every target, from one scrape."""
    return poll_counts(get(port, "/metrics"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--window", type=float, default=30, help="seconds per CPU figure")
    ap.add_argument("--scrape-every", type=float, default=60, help="seconds between gzip scrapes")
    args = ap.parse_args()
    n = args.targets
    raise_nofile(2 * n + 100)
    print(f"bench_fleet_soak: {n} Redis targets at 15 s, {args.seconds:.0f} s")
    print(machine_line())
    with RedisServer(["--maxclients", str(n + 100)]) as server, tempfile.TemporaryDirectory() as tmp:
        load_workload(server)
        config = Path(tmp) / "soak.yml"
        config.write_text(yaml.safe_dump({"global": {"interval": "15s"}, "targets": [
            {"name": f"redis-{i:04d}", "type": "redis", "url": f"redis://127.0.0.1:{server.port}"} for i in range(n)]}))
        port = free_port()
        with open(Path(tmp) / "exporter.log", "w") as log:
            proc = subprocess.Popen([PYTHON, "-m", "exporter", "run", "--config", str(config), "--listen",
                                     f"127.0.0.1:{port}", "--log-level", "error"], stdout=log, stderr=log)
        try:
            def all_polled() -> bool:
                try:
                    targets = json.loads(get(port, "/targets"))
                except OSError:
                    return False
                return len(targets) == n and all(t["polls"] >= 1 and t["up"] for t in targets)
            wait_until(all_polled, timeout=180, interval=0.5, message=f"every one of {n} targets polled")
            for _ in range(3):
                get(port, "/metrics")
            rss: list[float] = []
            windows: list[tuple[float, float]] = []  # (% of one core, ms per poll)
            started = time.monotonic()
            last_scrape = window_start = started
            cpu0, (polls0, skipped0) = cpu_seconds(proc.pid), polls(port)
            first_polls, first_skipped = polls0, skipped0
            while time.monotonic() - started < args.seconds:
                time.sleep(1.0)
                now = time.monotonic()
                rss.append(status(proc.pid)["VmRSS"] / 1024)
                if now - last_scrape >= args.scrape_every:
                    get(port, "/metrics")
                    last_scrape = now
                if now - window_start >= args.window:
                    cpu1, (polls1, _) = cpu_seconds(proc.pid), polls(port)
                    windows.append((100 * (cpu1 - cpu0) / (now - window_start),
                                    1000 * (cpu1 - cpu0) / max(polls1 - polls0, 1)))
                    print(f"  window {len(windows)}: {windows[-1][0]:.1f} % of one core, "
                          f"{windows[-1][1]:.2f} ms per poll, RSS {rss[-1]:.1f} MiB", flush=True)
                    cpu0, polls0, window_start = cpu1, polls1, now
            done, skipped = polls(port)
            threads = status(proc.pid)["Threads"]
        finally:
            stop_process(proc)
    cores = [w[0] for w in windows]
    print(f"CPU, % of one core: median {statistics.median(cores):.1f} (windows {min(cores):.1f}-{max(cores):.1f}); "
          f"ms per poll: median {statistics.median(w[1] for w in windows):.2f}")
    print(f"RSS MiB every second: {min(rss):.1f}-{max(rss):.1f} (median {statistics.median(rss):.1f}); "
          f"threads {threads}; polls {done - first_polls:.0f}, skipped {skipped - first_skipped:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
