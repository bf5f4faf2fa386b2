"""bench_http: the exporter's own HTTP server under normal, crowded and hostile clients, beside its peers.

Each server serves one real redis-server's metrics on 127.0.0.1 and is measured in the same run:
* ours -- this checkout's ``cache-exporter run`` (asyncio + h11, bounded);
* before -- with ``--before DIR``, the same command from another checkout (e.g. the commit before
  the server was replaced: Python's ThreadingHTTPServer);
* redis_exporter -- Debian's ``prometheus-redis-exporter`` (Go's net/http), when installed.

Figures: /metrics latency over one keep-alive connection (p50/p99); 50 scrapers opening a new
connection per request for 10 s (requests, p99, the kernel's listen-queue overflows meanwhile,
from /proc/net/netstat); then 500 slowloris connections (a header byte every 2 s): the server's
threads, and a scrape's latency while they hang on. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_http.py [--before DIR] [--requests 300] [--slow 500]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from _common import REPO, RedisServer, free_port, machine_line, table, wait_until

REDIS_EXPORTER = shutil.which("prometheus-redis-exporter") or shutil.which("redis_exporter")


def netstat(key: str) -> int:
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:], strict=True))[key])
    return 0


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, cwd: Path | None, log: Path) -> None:
        self.name, self.port = name, port
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: self.get("/metrics")[0] == 200, timeout=30, message=f"{name} up")

    def get(self, path: str, conn: http.client.HTTPConnection | None = None,
            timeout: float = 30) -> tuple[int, float]:
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        started = time.perf_counter()
        c.request("GET", path, headers={"Accept-Encoding": "gzip"})
        resp = c.getresponse()
        resp.read()
        took = time.perf_counter() - started
        if conn is None:
            c.close()
        return resp.status, took

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def keep_alive(server: Server, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for _ in range(5):
        server.get("/metrics", conn)
    out = [server.get("/metrics", conn)[1] for _ in range(n)]
    conn.close()
    return out


def crowd(server: Server, clients: int = 50, seconds: float = 10.0) -> tuple[int, int, list[float], int]:
    """(requests answered, failed, latencies, listen overflows) for ``clients`` scrapers, a new connection each."""
    before = netstat("ListenOverflows")
    deadline = time.monotonic() + seconds
    lat: list[float] = []
    failed = 0
    lock = threading.Lock()

    def run() -> None:
        nonlocal failed
        while time.monotonic() < deadline:
            try:
                status, took = server.get("/metrics", timeout=10)
                with lock:
                    lat.append(took) if status == 200 else None
                    failed += status != 200
            except OSError:
                with lock:
                    failed += 1
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(run)
    return len(lat), failed, lat, netstat("ListenOverflows") - before


def slowloris(server: Server, n: int) -> tuple[int, int, float | None, int]:
    """(threads before, threads with ``n`` slow connections, a scrape's latency meanwhile, connections held)."""
    base = threads(server.proc.pid)
    socks: list[socket.socket] = []
    stop = threading.Event()
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            break

    def dribble() -> None:
        while not stop.wait(2):
            for s in socks:
                try:
                    s.send(b"X")
                except OSError:
                    pass
    threading.Thread(target=dribble, daemon=True).start()
    time.sleep(3)
    held = threads(server.proc.pid)
    try:
        _, took = server.get("/metrics", timeout=30)
        scrape: float | None = took
    except OSError:
        scrape = None
    stop.set()
    for s in socks:
        s.close()
    return base, held, scrape, len(socks)


def ms(seconds: float | None) -> str:
    return "failed" if seconds is None else f"{seconds * 1000:.1f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, help="another checkout to measure beside this one (its .venv)")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--slow", type=int, default=500)
    args = ap.parse_args()
    print("bench_http: the exporter's HTTP server beside its peers, one Redis target each")
    print(machine_line())
    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    redis = RedisServer().__enter__()
    config = work / "config.yml"
    config.write_text(yaml.safe_dump({"targets": [{"name": "r", "type": "redis",
                                                   "url": f"redis://127.0.0.1:{redis.port}"}]}))
    checkouts = [("ours", REPO)] + ([("before", args.before.resolve())] if args.before else [])
    specs = []
    for name, root in checkouts:
        python = root / ".venv" / "bin" / "python"
        port = free_port()
        specs.append((name, [str(python if python.exists() else sys.executable), "-m", "exporter", "run",
                             "--config", str(config), "--listen", f"127.0.0.1:{port}"], port, root))
    if REDIS_EXPORTER:
        port = free_port()
        specs.append(("redis_exporter", [REDIS_EXPORTER, f"--redis.addr=redis://127.0.0.1:{redis.port}",
                                         f"--web.listen-address=127.0.0.1:{port}"], port, None))
    else:
        print("redis_exporter not installed (Debian: apt-get install prometheus-redis-exporter): left out")
    rows = []
    try:
        for name, cmd, port, cwd in specs:
            server = Server(name, cmd, port, cwd, work / f"{name}.log")
            try:
                lat = keep_alive(server, args.requests)
                done, failed, crowd_lat, overflows = crowd(server)
                base, held, scrape, opened = slowloris(server, args.slow)
                alive = server.proc.poll() is None
            finally:
                server.stop()
            rows.append([name, ms(statistics.median(lat)), ms(pct(lat, 99)), str(done), str(failed),
                         ms(pct(crowd_lat, 99) if crowd_lat else None), str(overflows),
                         f"{base} -> {held}", f"{opened}", ms(scrape), "yes" if alive else "NO"])
            print(f"  {name}: done", flush=True)
    finally:
        redis.__exit__(None, None, None)
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(["server", "keep-alive p50", "p99", "50 scrapers: answered in 10 s", "failed", "p99",
                 "listen overflows", f"threads, {args.slow} slow conns", "slow conns open", "scrape meanwhile",
                 "alive after"], rows,
                title=f"/metrics with gzip; keep-alive: {args.requests} requests on one connection; crowd: a new "
                      "connection per request"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
