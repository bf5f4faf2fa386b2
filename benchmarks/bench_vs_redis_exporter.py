"""bench_vs_redis_exporter: cache-exporter beside redis_exporter (Debian's prometheus-redis-exporter), one run.

Two redis-servers get the same workload (``load_workload``): server A is polled by ours, server B
by redis_exporter, so each server's ``INFO commandstats`` / ``INFO stats`` deltas belong to one
exporter (the measuring connection's own ``INFO`` calls are subtracted). Printed, ours beside
theirs with the ratio (ours / theirs) and the issue's goal:

* ``/metrics`` latency p50/p99 at 1 target: requests interleaved (ours, theirs, ours, ...), each
  on its own keep-alive connection, with ``Accept-Encoding: gzip`` as Prometheus sends it;
* CPU per poll: ours polls on its own clock (1 target at a 1 s interval): process CPU (/proc) over
  the window divided by the polls done (``cache_exporter_polls_total``), with no scrape of ours
  inside the window. redis_exporter polls on scrape: its process CPU over one scrape a second,
  divided by the scrapes;
* Redis commands and new connections per poll (per scrape for theirs);
* RSS at 1, 100 and 1000 targets. Ours: one process with N targets (distinct names, all on server
  A, 15 s interval), read once every target has been polled and /metrics scraped three times
  (gzip); at 1000 targets again after the fleet window below (the forecast history fills up). redis_exporter
  serves one target per process on ``/metrics``; for 100 and 1000 targets it is measured through
  its multi-target endpoint ``/scrape?target=redis://...`` (one process, every target scraped
  once, 8 at a time: what a Prometheus with N scrape targets makes it do per interval);
* ours at 1000 targets at the default 15 s interval: CPU % of one core, CPU per poll, threads,
  polls done / scheduled, skipped polls (``cache_exporter_polls_skipped_total``).

Prints figures; asserts nothing. Loopback only. ``--quick`` shortens every window (~2 min in all);
the default takes ~5 min.

    .venv/bin/python benchmarks/bench_vs_redis_exporter.py [--quick] [--targets 1,100,1000]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from _common import (
    REPO,
    RedisServer,
    free_port,
    load_workload,
    machine_line,
    percentile,
    raise_nofile,
    stop_process,
    table,
    wait_until,
)

REDIS_EXPORTER = shutil.which("prometheus-redis-exporter") or shutil.which("redis_exporter")
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


class Process:
    """An exporter subprocess with an HTTP port; one keep-alive connection for its requests."""

    def __init__(self, name: str, cmd: list[str], port: int, log: Path) -> None:
        self.name, self.port = name, port
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        self.conn: http.client.HTTPConnection | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str, gz: bool = False, timeout: float = 60) -> tuple[int, bytes]:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            self.conn.request("GET", path, headers={"Accept-Encoding": "gzip"} if gz else {})
            resp = self.conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        if resp.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return resp.status, body

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        stop_process(self.proc)
        self._log.close()


def ours(workdir: Path, server: RedisServer, n: int, interval: str) -> Process:
    port = free_port()
    config = workdir / f"ours-{n}.yml"
    config.write_text(yaml.safe_dump({
        "global": {"interval": interval},
        "targets": [{"name": f"redis-{i:04d}", "type": "redis", "url": f"redis://127.0.0.1:{server.port}"}
                    for i in range(n)]}))
    p = Process("ours", [PYTHON, "-m", "exporter", "run", "--config", str(config), "--listen",
                         f"127.0.0.1:{port}", "--log-level", "warning"], port, workdir / f"ours-{n}.log")
    wait_until(lambda: p.get("/readyz")[0] == 200, timeout=120, interval=0.1, message="ours /readyz")

    def all_polled() -> bool:
        import json
        targets = json.loads(p.get("/targets")[1])
        return len(targets) == n and all(t["polls"] >= 1 and t["up"] for t in targets)
    wait_until(all_polled, timeout=120, interval=0.2, message=f"ours: every one of {n} targets polled")
    return p


def theirs(workdir: Path, server: RedisServer) -> Process:
    port = free_port()
    p = Process("redis_exporter", [REDIS_EXPORTER, f"--redis.addr=redis://127.0.0.1:{server.port}",
                                   f"--web.listen-address=127.0.0.1:{port}"], port, workdir / "theirs.log")
    wait_until(lambda: p.get("/")[0] == 200, timeout=30, interval=0.1, message="redis_exporter up")
    return p


def poll_counts(body: bytes) -> tuple[float, float]:
    """(polls, skipped) summed over the targets of one /metrics body of ours."""
    polls = skipped = 0.0
    for line in body.decode().splitlines():
        if line.startswith("cache_exporter_polls_total{"):
            polls += float(line.rsplit(" ", 1)[1])
        elif line.startswith("cache_exporter_polls_skipped_total{"):
            skipped += float(line.rsplit(" ", 1)[1])
    return polls, skipped


def ours_polls(p: Process) -> tuple[float, float]:
    """(polls, skipped) from ours' /metrics (gzip, as Prometheus asks)."""
    return poll_counts(p.get("/metrics", gz=True)[1])


class ServerCounters:
    """Commands and connections a redis-server saw, read over one persistent measuring connection."""

    def __init__(self, server: RedisServer) -> None:
        self.client = server.client()
        self.client.ping()

    def read(self) -> tuple[dict[str, int], int]:
        info = self.client.info("all")
        cmds = {k[len("cmdstat_"):]: int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")}
        return cmds, int(info["total_connections_received"])

    @staticmethod
    def delta(before: tuple[dict[str, int], int], after: tuple[dict[str, int], int]) -> tuple[dict[str, int], int]:
        cmds = {k: v - before[0].get(k, 0) for k, v in after[0].items()}
        cmds["info"] = cmds.get("info", 0) - 1  # the measuring connection's own INFO (the first reading)
        return {k: v for k, v in cmds.items() if v > 0}, after[1] - before[1]


def latency(a: Process, b: Process, requests: int) -> tuple[list[float], list[float]]:
    for p in (a, b):
        for _ in range(5):  # warm-up: connection, body caches
            p.get("/metrics", gz=True)
    la: list[float] = []
    lb: list[float] = []
    for _ in range(requests):
        for p, out in ((a, la), (b, lb)):
            t0 = time.perf_counter()
            p.get("/metrics", gz=True)
            out.append(time.perf_counter() - t0)
    return la, lb


def ratio(x: float, y: float) -> str:
    return f"{x / y:.2f}" if y else "-"


def met(ok: bool) -> str:
    return "yes" if ok else "NO"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short windows (~2 min in all)")
    ap.add_argument("--targets", default="1,100,1000", help="target counts for the RSS table")
    ap.add_argument("--requests", type=int, help="interleaved /metrics requests per exporter (300; quick 100)")
    ap.add_argument("--cpu-seconds", type=float, help="the 1-target CPU window (60; quick 20)")
    ap.add_argument("--fleet-seconds", type=float, help="the 1000-target window at 15 s (90; quick 45)")
    args = ap.parse_args()
    requests = args.requests or (100 if args.quick else 300)
    cpu_window = args.cpu_seconds or (20.0 if args.quick else 60.0)
    fleet_window = args.fleet_seconds or (45.0 if args.quick else 90.0)
    counts = [int(c) for c in args.targets.split(",")]
    if not REDIS_EXPORTER:
        print("redis_exporter not installed (Debian: apt-get install prometheus-redis-exporter)")
        return 1
    version = subprocess.run([REDIS_EXPORTER, "--version"], capture_output=True, text=True)
    print("bench_vs_redis_exporter: cache-exporter beside redis_exporter, each on its own identical redis-server")
    print(machine_line())
    print("redis_exporter:", (version.stdout + version.stderr).split("msg=")[-1].strip().strip('"')[:80])
    raise_nofile(8192)
    work = Path(tempfile.mkdtemp(prefix="bench-vs-redis-exporter-"))
    results: dict[str, object] = {}
    rss_rows = []
    with RedisServer(["--maxclients", "5000"]) as server_a, RedisServer(["--maxclients", "5000"]) as server_b:
        load_workload(server_a)
        load_workload(server_b)
        print(f"redis-server {server_a.version()}, two instances, same workload", flush=True)
        a = ours(work, server_a, 1, "1s")
        b = theirs(work, server_b)
        try:
            la, lb = latency(a, b, requests)
            results["p50"] = (percentile(la, 50), percentile(lb, 50))
            results["p99"] = (percentile(la, 99), percentile(lb, 99))
            print(f"  latency: {requests} interleaved requests done", flush=True)
            ca, cb = ServerCounters(server_a), ServerCounters(server_b)
            ra0, rb0 = ca.read(), cb.read()
            polls0, _ = ours_polls(a)
            cpu_a0, cpu_b0 = cpu_seconds(a.pid), cpu_seconds(b.pid)
            scrapes = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < cpu_window:  # one scrape of theirs a second, none of ours
                b.get("/metrics", gz=True)
                scrapes += 1
                time.sleep(max(0.0, t0 + scrapes - time.monotonic()))
            cpu_a1, cpu_b1 = cpu_seconds(a.pid), cpu_seconds(b.pid)
            ra1, rb1 = ca.read(), cb.read()
            polls1, _ = ours_polls(a)
            polls = polls1 - polls0
            results["cpu"] = ((cpu_a1 - cpu_a0) / max(polls, 1), (cpu_b1 - cpu_b0) / scrapes)
            results["polls"] = (polls, scrapes)
            (cmds_a, conns_a), (cmds_b, conns_b) = ca.delta(ra0, ra1), cb.delta(rb0, rb1)
            results["cmds"] = (sum(cmds_a.values()) / max(polls, 1), sum(cmds_b.values()) / scrapes)
            results["conns"] = (conns_a / max(polls, 1), conns_b / scrapes)
            results["cmd_names"] = ({k: v / max(polls, 1) for k, v in cmds_a.items()},
                                    {k: v / scrapes for k, v in cmds_b.items()})
            print(f"  CPU window: {cpu_window:.0f} s, {polls:.0f} polls of ours, {scrapes} scrapes of theirs",
                  flush=True)
            sa, sb = status(a.pid), status(b.pid)
            results["threads1"] = (sa["Threads"], sb["Threads"])
            rss_rows.append((1, sa, sb, "its /metrics"))
        finally:
            a.stop()
            b.stop()
        for n in (c for c in counts if c > 1):
            a = ours(work, server_a, n, "15s")
            try:
                for _ in range(3):
                    a.get("/metrics", gz=True)
                sa = status(a.pid)
                if n == 1000:  # the fleet figures at the default interval, in the same process
                    time.sleep(5)  # past start-up's first round
                    polls0, skipped0 = ours_polls(a)
                    cpu0, t0 = cpu_seconds(a.pid), time.monotonic()
                    time.sleep(fleet_window)
                    cpu1, t1 = cpu_seconds(a.pid), time.monotonic()
                    polls1, skipped1 = ours_polls(a)
                    elapsed, polls = t1 - t0, polls1 - polls0
                    results["fleet"] = ((cpu1 - cpu0) / elapsed, (cpu1 - cpu0) / max(polls, 1), polls,
                                        n * elapsed / 15.0, skipped1 - skipped0, status(a.pid)["Threads"],
                                        elapsed)
                    results["fleet_rss"] = status(a.pid)["VmRSS"]
            finally:
                a.stop()
            b = theirs(work, server_b)
            try:
                target = f"redis://127.0.0.1:{server_b.port}"

                def scrape(_: int, port: int = b.port, target: str = target) -> None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    conn.request("GET", f"/scrape?target={target}", headers={"Accept-Encoding": "gzip"})
                    conn.getresponse().read()
                    conn.close()
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(scrape, range(n)))
                sb = status(b.pid)
            finally:
                b.stop()
            rss_rows.append((n, sa, sb, f"/scrape?target= x{n}, 8 at a time"))
            print(f"  RSS at {n} targets done", flush=True)
    shutil.rmtree(work, ignore_errors=True)

    mib = 1024.0
    print()
    rows = []
    (p50a, p50b), (p99a, p99b) = results["p50"], results["p99"]
    rows.append(["/metrics p50, 1 target (ms)", f"{p50a * 1e3:.2f}", f"{p50b * 1e3:.2f}", ratio(p50a, p50b),
                 "ratio <= 0.3", met(p50a <= 0.3 * p50b)])
    rows.append(["/metrics p99, 1 target (ms)", f"{p99a * 1e3:.2f}", f"{p99b * 1e3:.2f}", ratio(p99a, p99b), "-", "-"])
    cpa, cpb = results["cpu"]
    rows.append(["CPU per poll / per scrape (ms)", f"{cpa * 1e3:.2f}", f"{cpb * 1e3:.2f}", ratio(cpa, cpb),
                 "ratio <= 0.7", met(cpa <= 0.7 * cpb)])
    cma, cmb = results["cmds"]
    rows.append(["Redis commands per poll", f"{cma:.2f}", f"{cmb:.2f}", ratio(cma, cmb), "-", "-"])
    coa, cob = results["conns"]
    rows.append(["new connections per poll", f"{coa:.2f}", f"{cob:.2f}", ratio(coa, cob) if cob else "-", "-", "-"])
    for n, sa, sb, how in rss_rows:
        limit = 30 if n == 1 else 100 if n == 1000 else None
        ra, rb = sa["VmRSS"] / mib, sb["VmRSS"] / mib
        rows.append([f"RSS, {n} target{'s' if n > 1 else ''} (MiB; theirs: {how})", f"{ra:.1f}", f"{rb:.1f}",
                     ratio(ra, rb), f"<= {limit} MiB" if limit else "-", met(ra <= limit) if limit else "-"])
        rows.append([f"  threads, {n} target{'s' if n > 1 else ''}", sa["Threads"], sb["Threads"], "-", "-", "-"])
        if n == 1000 and "fleet_rss" in results:
            rf = results["fleet_rss"] / mib
            rows.append([f"  RSS, 1000 targets after the {results['fleet'][6]:.0f} s window", f"{rf:.1f}", "-", "-",
                         "<= 100 MiB", met(rf <= 100)])
    print(table(["figure", "ours", "redis_exporter", "ratio", "goal", "met"], rows,
                title="Side by side (ratio = ours / theirs)"))
    names_a, names_b = results["cmd_names"]
    print(f"\nours, commands per poll:  {', '.join(f'{k} {v:.2f}' for k, v in sorted(names_a.items()))}")
    print(f"theirs, per scrape:        {', '.join(f'{k} {v:.2f}' for k, v in sorted(names_b.items()))}")
    if "fleet" in results:
        share, per_poll, polls, scheduled, skipped, nthreads, elapsed = results["fleet"]
        print()
        print(table(["figure", "ours", "goal", "met"], [
            ["CPU, % of one core", f"{share:.1%}", "< 10 %", met(share < 0.10)],
            ["CPU per poll (ms)", f"{per_poll * 1e3:.2f}", "-", "-"],
            ["polls done / scheduled", f"{polls:.0f} / {scheduled:.0f}", "-", "-"],
            ["skipped polls", f"{skipped:.0f}", "0", met(skipped == 0)],
            ["threads", nthreads, "-", "-"],
        ], title=f"ours, 1000 Redis targets at the default 15 s interval, {elapsed:.0f} s window"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
