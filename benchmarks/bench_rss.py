"""Resident memory, threads and scrape time of the real daemon with 1, 100 and 1000 targets.

One real redis-server (``--maxclients 5000``) is the target of every configured target:
``.venv/bin/python -m exporter run --config CFG --listen 127.0.0.1:PORT`` runs as a subprocess
with N redis targets (distinct names, interval 15 s). Once /readyz is 200 and /targets shows
every target polled, /metrics is scraped by an HTTP client over one keep-alive connection,
plain and gzip (Prometheus asks for gzip), then plain on a new connection per scrape, and
VmRSS/VmHWM/Threads are read from /proc/<pid>/status. The redis-server's own counters show
how many connections the exporter holds. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_rss.py [--targets 1,100,1000] [--scrapes 20]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C
import yaml
from _common import REPO, RedisServer, free_port, human_bytes, load_workload, raise_nofile, table, wait_until

PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
INTERVAL = "15s"


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def kib(value: str) -> int:
    return int(value.split()[0]) * 1024


class Exporter:
    def __init__(self, workdir: Path, server: RedisServer, n: int) -> None:
        self.n = n
        self.port = free_port()
        self.config = workdir / f"exporter-{n}.yml"
        self.log = workdir / f"exporter-{n}.log"
        self.config.write_text(yaml.safe_dump({
            "global": {"interval": INTERVAL},
            "targets": [{"name": f"redis-{i:04d}", "type": "redis", "url": f"redis://127.0.0.1:{server.port}"}
                        for i in range(n)],
        }))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "exporter", "run", "--config", str(self.config),
                 "--listen", f"127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes, dict]:
        """GET over one persistent keep-alive connection (reopened if the server closed it)."""
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                self.conn.request("GET", path, headers=headers or {})
                resp = self.conn.getresponse()
                body = resp.read()
                return resp.status, body, dict(resp.getheaders())
            except (ConnectionError, http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"exporter exited with {self.proc.returncode}:\n"
                               + self.log.read_text(errors="replace")[-3000:])

    def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()

        def ready() -> bool:
            self.alive()
            return self.get("/readyz", timeout=5)[0] == 200
        wait_until(ready, timeout=timeout, interval=0.1, message=f"/readyz with {self.n} targets")
        ready_s = time.monotonic() - started

        def all_polled() -> bool:
            status, body, _ = self.get("/targets")
            targets = json.loads(body) if status == 200 else []
            return len(targets) == self.n and all(t["polls"] >= 1 and t["up"] for t in targets)
        wait_until(all_polled, timeout=timeout, interval=0.2, message=f"a successful poll of all {self.n} targets")
        return ready_s

    def scrape(self, gz: bool, fresh: bool = False) -> tuple[float, int, int]:
        """(seconds, bytes on the wire, bytes of the text) of one /metrics scrape.

        ``fresh``: on a new connection (``Connection: close``) instead of the keep-alive one."""
        headers = {"Accept-Encoding": "gzip"} if gz else {}
        started = time.perf_counter()
        if fresh:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("GET", "/metrics", headers={**headers, "Connection": "close"})
                resp = conn.getresponse()
                status, body, hdrs = resp.status, resp.read(), dict(resp.getheaders())
            finally:
                conn.close()
        else:
            status, body, hdrs = self.get("/metrics", headers)
        elapsed = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"/metrics returned {status}")
        text = gzip.decompress(body) if hdrs.get("Content-Encoding") == "gzip" else body
        return elapsed, len(body), len(text)

    def stop(self) -> tuple[int | None, float]:
        if self.conn is not None:
            self.conn.close()
        started = time.monotonic()
        if not C.stop_process(self.proc, grace=20):
            return None, time.monotonic() - started
        return self.proc.returncode, time.monotonic() - started


def count_up(text: bytes) -> int:
    return sum(1 for line in text.decode().splitlines()
               if line.startswith("cache_up{") and line.endswith(" 1.0"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="1,100,1000")
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--malloc-arena-max", type=int, default=None,
                    help="run the exporter with MALLOC_ARENA_MAX=N (glibc), to compare")
    args = ap.parse_args()
    if args.malloc_arena_max is not None:
        os.environ["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)  # inherited by the exporter
    sizes = [int(x) for x in args.targets.split(",")]

    print("bench_rss: the real daemon (python -m exporter run) with N redis targets on one redis-server")
    print(C.machine_line())
    print(raise_nofile(max(sizes) * 2 + 4096) + "; MALLOC_ARENA_MAX "
          + os.environ.get("MALLOC_ARENA_MAX", "unset (glibc default: 8 x cores)"))
    rows, scrape_rows, server_rows = [], [], []
    rss_by_n: dict[int, tuple[int, int, int]] = {}
    with RedisServer(["--maxclients", "5000"]) as server, \
            tempfile.TemporaryDirectory(prefix="cache-exporter-bench-rss-") as tmp:
        load_workload(server)  # the same keyspace/commandstats as bench_render: a realistic body
        counter = server.client()
        print(f"redis {server.version()} on 127.0.0.1:{server.port}, maxclients "
              f"{counter.config_get('maxclients')['maxclients']}; interval {INTERVAL}, "
              f"{args.scrapes} scrapes per figure")
        for n in sizes:
            conns_before = int(counter.info("stats")["total_connections_received"])
            t0 = time.monotonic()
            ep = Exporter(Path(tmp), server, n)
            try:
                ready_s = ep.wait_ready(timeout=90)
                all_polled_s = time.monotonic() - t0
                idle = proc_status(ep.proc.pid)
                for _ in range(3):  # warm-up scrapes (fill the body caches)
                    ep.scrape(gz=False)
                    ep.scrape(gz=True)
                plain = [ep.scrape(gz=False) for _ in range(args.scrapes)]
                zipped = [ep.scrape(gz=True) for _ in range(args.scrapes)]
                _, body, _ = ep.get("/metrics")
                up = count_up(body)
                keepalive = proc_status(ep.proc.pid)
                fresh = [ep.scrape(gz=False, fresh=True) for _ in range(args.scrapes)]
                st = proc_status(ep.proc.pid)
                clients = counter.info("clients")["connected_clients"] - 1  # minus this measuring client
                conns = int(counter.info("stats")["total_connections_received"]) - conns_before
            finally:
                code, stop_s = ep.stop()
            rss_by_n[n] = (kib(idle["VmRSS"]), kib(keepalive["VmRSS"]), kib(st["VmRSS"]))
            rows.append([n, human_bytes(kib(idle["VmRSS"])), human_bytes(kib(keepalive["VmRSS"])),
                         human_bytes(kib(st["VmRSS"])), human_bytes(kib(st["VmHWM"])),
                         st["Threads"], f"{ready_s:.1f}", f"{all_polled_s:.1f}", up,
                         "none" if code is None else code, f"{stop_s:.1f}"])
            scrape_rows.append([n, C.ms(C.p50([s[0] for s in plain])), C.ms(max(s[0] for s in plain)),
                                f"{plain[-1][1]:,}", C.ms(C.p50([s[0] for s in zipped])),
                                C.ms(max(s[0] for s in zipped)), f"{zipped[-1][1]:,}",
                                C.ms(C.p50([s[0] for s in fresh]))])
            server_rows.append([n, clients, conns, f"{conns / n:.2f}"])

    print()
    print(table(["targets", "RSS ready", "RSS keep-alive", "RSS new-conn", "VmHWM", "threads", "ready s",
                 "all polled s", "cache_up 1", "exit", "stop s"], rows,
                title="exporter process: VmRSS at readiness, after the keep-alive scrapes, after the new-connection "
                      "scrapes;\nVmHWM (peak) and threads at the end; exit code and time to exit after SIGTERM"))
    if 1 in rss_by_n:
        one = rss_by_n[1]
        per = [[n] + [human_bytes((rss_by_n[n][i] - one[i]) / (n - 1)) for i in range(3)] for n in sizes if n > 1]
        if per:
            print()
            print(table(["targets", "ready", "keep-alive", "new-conn"], per,
                        title="RSS per extra target: (RSS with N targets - RSS with 1) / (N - 1)"))
    print()
    print(table(["targets", "p50 ms", "max ms", "plain bytes", "gzip p50 ms", "gzip max ms", "gzip bytes",
                 "new-conn p50 ms"], scrape_rows,
                title="/metrics scrape as seen by an HTTP client (one keep-alive connection, as Prometheus "
                      "scrapes; new-conn = plain, a new connection per scrape; times include transfer)"))
    print()
    print(table(["targets", "exporter conns open", "conns accepted", "conns per target"], server_rows,
                title="redis-server side (connected_clients at the end; total_connections_received during the run)"))


if __name__ == "__main__":
    main()
