"""Helpers shared by the benchmark scripts: a throwaway redis-server, percentiles, tables.

Benchmarks print figures; they never assert on timing. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `.venv/bin/python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05,
               message: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # keep trying; report the last failure on timeout
            last = exc
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {message}; last error: {last!r}")


class RedisServer:
    """A redis-server on a free loopback port with no persistence; use as a context manager."""

    def __init__(self, extra_args: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found on PATH (Debian: apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.extra_args = list(extra_args)
        self._tmp = tempfile.TemporaryDirectory(prefix="cache-exporter-bench-redis-")
        self.workdir = Path(self._tmp.name)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> RedisServer:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(self.workdir),
               "--logfile", str(self.workdir / "server.log"), *self.extra_args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(self._pingable, timeout=15, message=f"redis-server on 127.0.0.1:{self.port}")
        except BaseException:
            self.__exit__()  # a failed start must not leave the server running
            raise
        return self

    def _pingable(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {log}")
        c = self.client()
        try:
            return bool(c.ping())
        finally:
            c.close()

    def client(self, **kw: object) -> redis.Redis:
        opts: dict[str, object] = dict(host="127.0.0.1", port=self.port, socket_timeout=10,
                                       decode_responses=True)
        opts.update(kw)
        return redis.Redis(**opts)  # type: ignore[arg-type]

    def version(self) -> str:
        c = self.client()
        try:
            return str(c.info("server")["redis_version"])
        finally:
            c.close()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._tmp.cleanup()


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def p50(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None) -> str:
    """A plain-text table; cells that are plain numbers (or "-") are right-aligned."""
    text_rows = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def numeric(cell: str) -> bool:
        try:
            float(cell.replace(",", "").rstrip("x%"))
            return True
        except ValueError:
            return cell == "-"

    def fmt(row: Sequence[str]) -> str:
        cells = [cell.rjust(widths[i]) if numeric(cell) else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        return "  ".join(cells).rstrip()

    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt(r) for r in text_rows)
    return "\n".join(lines)


def machine_line() -> str:
    return (f"host: {platform.node()}  cpus: {os.cpu_count()}  python: {platform.python_version()}  "
            f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


def goal(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def load_workload(server: RedisServer) -> None:
    """Keys in four dbs and a mix of ~25 commands (plus a few error replies), so INFO has a
    realistic keyspace, commandstats and errorstats section."""
    sizes = {0: 5000, 1: 1000, 2: 200, 3: 20}
    for db, n in sizes.items():
        c = server.client(db=db)
        pipe = c.pipeline(transaction=False)
        for i in range(n):
            if i % 5 == 0:
                pipe.set(f"k:{i}", "x" * 32, ex=3600 + i)  # some keys with a TTL
            else:
                pipe.set(f"k:{i}", "x" * 32)
        pipe.execute()
        c.close()
    c = server.client()
    for i in range(50):
        c.get(f"k:{i}")
        c.get(f"missing:{i}")  # keyspace misses
        c.mget([f"k:{i}", f"k:{i + 1}"])
        c.incr("counter")
        c.incrby("counter", 5)
        c.decr("counter")
        c.hset("h", f"f{i}", i)
        c.hget("h", f"f{i}")
        c.lpush("l", i)
        c.rpush("l", i)
        c.lrange("l", 0, 5)
        c.sadd("s", i)
        c.sismember("s", i)
        c.zadd("z", {f"m{i}": i})
        c.zrange("z", 0, 5)
        c.zscore("z", f"m{i}")
        c.expire(f"k:{i}", 7200)
        c.ttl(f"k:{i}")
        c.exists(f"k:{i}")
        c.type(f"k:{i}")
    c.hgetall("h")
    c.smembers("s")
    c.lpop("l")
    c.delete("k:1")
    c.dbsize()
    c.scan(0, count=100)
    c.ping()
    for _ in range(3):  # error replies -> errorstats
        for bad in (lambda: c.lpush("k:2", "x"),               # WRONGTYPE
                    lambda: c.execute_command("NOSUCHCOMMAND"),  # ERR unknown command
                    lambda: c.execute_command("SET", "a")):      # ERR wrong number of arguments
            try:
                bad()
            except redis.ResponseError:
                pass
    c.close()
