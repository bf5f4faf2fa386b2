"""Helpers shared by the benchmark scripts: a throwaway redis-server, percentiles, tables.

Benchmarks print figures; they never assert on timing. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import platform
import resource
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


def raise_nofile(needed: int) -> str:
    """Raise the soft RLIMIT_NOFILE (inherited by every server and exporter started after) to
    ``needed`` where the hard limit allows; say what it is now, and whether that is too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    note = "unchanged"
    if soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            note, soft = f"raised from {soft}", new
        except (ValueError, OSError) as exc:
            note = f"could not raise from {soft}: {exc}"
        if soft < needed:
            note += f"; BELOW the {needed} needed: connections past it will fail"
    return f"RLIMIT_NOFILE soft {soft} hard {hard} ({note})"


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


def stop_process(proc: subprocess.Popen, grace: float = 10) -> bool:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL; True if it exited on its own."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return False


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
        if self.proc is not None:
            stop_process(self.proc)
        self._tmp.cleanup()


def publish_cost(reading, target: str, store: str, up_family: str, rounds: int,
                 static_labels: tuple[tuple[str, str], ...]) -> tuple[float, float, int]:
    """Per-poll CPU of the scheduler's publish step for one reading, run through the scheduler's own
    code: (snapshot + stats + render, rendering snapshot and stats only, chunk bytes)."""
    from exporter import catalog
    from exporter.exposition import label_prefix, render_chunks
    from exporter.scheduler import PollStats, published_chunks
    from exporter.snapshot import Samples, Snapshot

    base = Samples()
    for s in reading.samples:
        base.add(s.family, s.value, s.labels, s.suffix)
    base.add(catalog.CACHE_UP, 1, (("store", store),))
    base.add(up_family, 1)
    stats = PollStats(polls=1, duration_sum=0.001, last_duration=0.001, last_success=time.time())
    prefix = label_prefix(target, static_labels)
    total = render_only = 0.0
    size = 0
    for _ in range(rounds):
        t0 = time.process_time()
        snapshot = Snapshot(target, store, True, time.time(), base, reading.memory)
        t1 = time.process_time()
        chunks = published_chunks(render_chunks(snapshot.samples, prefix), stats, prefix)
        t2 = time.process_time()
        total += t2 - t0
        render_only += t2 - t1
        size = sum(len(v) for v in chunks.values())
    return total / rounds, render_only / rounds, size


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


# --- memcached --------------------------------------------------------------------------

class MemcachedServer:
    """A memcached on a free loopback port (TCP only, no UDP, 64 MB); use as a context manager.

    Started the way the tests start it: ``memcached -u root -U 0 -l 127.0.0.1 -p PORT -m 64``
    (``-u root`` only when running as root, where memcached insists on it)."""

    def __init__(self, extra_args: Sequence[str] = (), memory_mb: int = 64) -> None:
        binary = shutil.which("memcached")
        if binary is None:
            raise SystemExit("memcached not found on PATH (Debian: apt-get install memcached)")
        self.binary = binary
        self.port = free_port()
        self.memory_mb = memory_mb
        self.extra_args = list(extra_args)
        self._tmp = tempfile.TemporaryDirectory(prefix="cache-exporter-bench-memcached-")
        self.log = Path(self._tmp.name) / "memcached.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> MemcachedServer:
        cmd = [self.binary]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        cmd += ["-U", "0", "-l", "127.0.0.1", "-p", str(self.port), "-m", str(self.memory_mb), *self.extra_args]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_until(self._ready, timeout=15, message=f"memcached on 127.0.0.1:{self.port}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"memcached exited with {self.proc.returncode}: "
                               f"{self.log.read_text(errors='replace')[-2000:]}")
        with MemcachedClient(self.port) as c:
            return c.request(b"version\r\n").startswith(b"VERSION")

    def client(self) -> MemcachedClient:
        return MemcachedClient(self.port)

    def stats(self, section: str = "") -> dict[str, str]:
        with self.client() as c:
            return c.stats(section)

    def version(self) -> str:
        return self.stats()["version"]

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self._tmp.cleanup()


class MemcachedClient:
    """A minimal text-protocol client on one persistent connection (no pymemcache needed)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def __enter__(self) -> MemcachedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("memcached closed the connection")
        self.buf += chunk

    def request(self, data: bytes, terminator: bytes = b"\r\n") -> bytes:
        """Send ``data``; read until the buffered reply ends with ``terminator``."""
        self.sock.sendall(data)
        while not self.buf.endswith(terminator):
            self._fill()
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def stats(self, section: str = "") -> dict[str, str]:
        reply = self.request(f"stats {section}".strip().encode() + b"\r\n", b"END\r\n")
        out = {}
        for line in reply.decode().splitlines():
            parts = line.split(" ", 2)
            if parts[0] == "STAT" and len(parts) == 3:
                out[parts[1]] = parts[2]
        return out

    def pipeline(self, commands: Sequence[bytes]) -> bytes:
        """Send ``commands`` (plus a trailing ``version`` as a barrier) in one write; return
        every reply up to the barrier. Values must not contain ``VERSION``."""
        self.sock.sendall(b"".join(commands) + b"version\r\n")
        while True:
            at = self.buf.rfind(b"VERSION ")
            if at >= 0 and self.buf.endswith(b"\r\n") and self.buf.find(b"\r\n", at) == len(self.buf) - 2:
                out = bytes(self.buf[:at])
                self.buf.clear()
                return out
            self._fill()


# Value sizes of the memcached workload: 30 sizes, x1.25 apart like the default slab growth
# factor, from 40 bytes to ~25 KB. The smallest few share class 1 (96-byte chunks), so on
# memcached 1.6 with -m 64 the items fill 26 slab classes.
MEMCACHED_VALUE_SIZES = tuple(int(40 * 1.25 ** i) for i in range(30))


def load_memcached(server: MemcachedServer) -> dict[str, int]:
    """Items of 30 sizes (filling ~26 slab classes) plus a mix of gets (hits and
    misses), gets/cas (hit, badval, miss), incr/decr, touch, delete, append, so `stats`,
    `stats slabs` and `stats items` have realistic per-class counters. Returns counts."""
    stored = 0
    with server.client() as c:
        for i, size in enumerate(MEMCACHED_VALUE_SIZES):
            value = b"x" * size
            n = max(20, min(400, (256 << 10) // size))  # well under one 1 MB page per class
            cmds = []
            for j in range(n):
                ttl = 3600 if j % 4 == 0 else 0  # some items with a TTL
                cmds.append(b"set s%d:%d 0 %d %d noreply\r\n%s\r\n" % (i, j, ttl, size, value))
            c.pipeline(cmds)
            stored += n
            # Per class: hits, misses, a few deletes and touches, so per-slab counters move.
            c.pipeline([b"get s%d:%d\r\n" % (i, j) for j in range(0, n, 2)]
                       + [b"get s%d:missing%d\r\n" % (i, j) for j in range(10)]
                       + [b"touch s%d:%d 7200 noreply\r\n" % (i, j) for j in range(1, 6)]
                       + [b"delete s%d:%d noreply\r\n" % (i, j) for j in range(n - 3, n)]
                       + [b"delete s%d:missing%d noreply\r\n" % (i, j) for j in range(2)])
            # cas: one hit (the unique from gets), one badval, one miss.
            reply = c.request(b"gets s%d:6\r\n" % i, b"END\r\n")
            unique = int(reply.split(b"\r\n", 1)[0].split()[-1])
            c.pipeline([b"cas s%d:6 0 0 %d %d noreply\r\n%s\r\n" % (i, size, unique, value),
                        b"cas s%d:7 0 0 %d 1 noreply\r\n%s\r\n" % (i, size, value),
                        b"cas s%d:missing 0 0 %d 1 noreply\r\n%s\r\n" % (i, size, value)])
        counters = [b"set ctr%d 0 0 1 noreply\r\n0\r\n" % k for k in range(20)]
        c.pipeline(counters
                   + [b"incr ctr%d 5 noreply\r\n" % (k % 20) for k in range(200)]
                   + [b"decr ctr%d 2 noreply\r\n" % (k % 20) for k in range(100)]
                   + [b"incr nosuch%d 1 noreply\r\n" % k for k in range(5)]
                   + [b"append s0:%d 0 0 1 noreply\r\ny\r\n" % j for j in range(8, 12)])
        sizes = len(MEMCACHED_VALUE_SIZES)
        c.pipeline([b"get s%d:10 s%d:11\r\n" % (i % sizes, (i + 3) % sizes) for i in range(300)])
    return {"stored": stored}
