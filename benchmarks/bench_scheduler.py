"""Scheduling capacity of the real daemon: CPU per poll, skipped polls, threads, spread of polls.

One real redis-server is the target of every configured target. The daemon runs as a
subprocess (``python -m exporter run``); after start-up the script samples the process's CPU
time (/proc/PID/stat), its threads, and the per-target counters from /metrics over a window,
optionally while ``--busy N`` spinning processes keep N cores busy (a busy CI machine).
Scenarios (``--scenarios``):

* ``300x1s``: 300 Redis targets polled every second (the issue's 100 %-of-a-core case);
* ``1000x15s``: 1000 Redis targets at the default 15 s.

Figures: CPU (% of one core, and per poll), polls done against polls scheduled, skipped polls,
threads at the end, and the spread of the targets' poll times within the interval (the
largest share of targets polled in any tenth of the interval; 10 % is perfectly even). Since
targets are polled a slot of about a second at a time, that share is at least one slot's: 100 %
at a 1 s interval (one slot), ~7-15 % at 15 s.
Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_scheduler.py [--scenarios 300x1s,1000x15s] [--seconds 30] [--busy 0,2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from _common import REPO, RedisServer, free_port, machine_line, stop_process, table, wait_until
from bench_vs_redis_exporter import poll_counts

PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
        return resp.read()


def totals(port: int) -> tuple[float, float]:
    """(polls, skipped) summed over all targets, from /metrics."""
    return poll_counts(get(port, "/metrics"))


def spinners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run(server: RedisServer, workdir: Path, n: int, interval: float, seconds: float, busy: int) -> list[object]:
    port = free_port()
    config = workdir / f"sched-{n}-{interval:g}.yml"
    config.write_text(yaml.safe_dump({
        "global": {"interval": f"{interval:g}s", "timeout": f"{min(5.0, interval / 2):g}s"},
        "targets": [{"name": f"redis-{i:04d}", "type": "redis", "url": f"redis://127.0.0.1:{server.port}"}
                    for i in range(n)]}))
    log = open(workdir / f"sched-{n}-{interval:g}-{busy}.log", "wb")
    proc = subprocess.Popen([PYTHON, "-m", "exporter", "run", "--config", str(config), "--listen",
                             f"127.0.0.1:{port}", "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT,
                            cwd=REPO)
    load: list[subprocess.Popen] = []
    try:
        wait_until(lambda: get(port, "/readyz") == b"ready\n", timeout=120, message="/readyz")
        time.sleep(max(2.0, interval))  # past the first round
        load = spinners(busy)
        cpu0, (polls0, skipped0), t0 = cpu_seconds(proc.pid), totals(port), time.monotonic()
        time.sleep(seconds)
        cpu1, (polls1, skipped1), t1 = cpu_seconds(proc.pid), totals(port), time.monotonic()
        elapsed, polls = t1 - t0, polls1 - polls0
        scheduled = n * elapsed / interval
        status = json.loads(get(port, "/targets"))
        phases = [t["last_poll_time"] % interval / interval for t in status if t["last_poll_time"]]
        busiest = max(sum(1 for p in phases if k / 10 <= p < (k + 1) / 10) for k in range(10)) / max(1, len(phases))
        cpu, skipped = cpu1 - cpu0, skipped1 - skipped0
        return [f"{n} x {interval:g}s", busy, f"{cpu / elapsed:.0%}", f"{cpu / max(polls, 1) * 1e3:.2f} ms",
                f"{polls:.0f} / {scheduled:.0f}", f"{skipped:.0f} ({skipped / scheduled:.2%})",
                threads(proc.pid), f"{busiest:.0%}"]
    finally:
        for p in load:
            p.kill()
            p.wait()
        stop_process(proc)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default="300x1s,1000x15s")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--busy", default="0,2", help="spinning processes during the window, comma-separated runs")
    args = ap.parse_args()
    print("bench_scheduler: the daemon polling one real redis-server from N targets")
    print(machine_line())
    rows = []
    with RedisServer(["--maxclients", "5000"]) as server, tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios.split(","):
            count, _, every = scenario.partition("x")
            for busy in (int(b) for b in args.busy.split(",")):
                window = max(args.seconds, 2 * float(every.rstrip("s")))
                rows.append(run(server, Path(tmp), int(count), float(every.rstrip("s")), window, busy))
    print(table(["targets", "busy cores", "CPU (one core)", "CPU per poll", "polls done / scheduled",
                 "skipped", "threads", "busiest tenth"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
