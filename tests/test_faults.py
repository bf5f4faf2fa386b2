"""Fault injection: scripted fake RESP servers that misbehave, and what the exporter reports.

Every fake target must end up ``cache_up 0`` / ``redis_up 0`` with the right ``reason`` in
``cache_exporter_poll_errors_total``; a misbehaving target must never hold a poll past its
timeout, buffer an endless reply, overlap itself, delay other targets or /metrics, leak the
target's password, or crash the daemon.

Most fault targets share one exporter (module-scoped ``lab`` fixture) to keep the runtime down;
isolation and recovery use their own exporters from ``exporter_factory``.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REPO, ExporterProcess, Metrics, fast_global, free_port, redis_target, wait_until

REASONS = ("refused", "unreachable", "dns", "timeout", "tls", "auth", "reset", "protocol", "too_large",
           "config", "error")
SECRET = "Zq9-s3cr3t-PW-7f1c2e-do-not-leak"
SECRET_ENV = "FAULT_TEST_REDIS_PASSWORD"


# --- a scripted fake RESP server ----------------------------------------------------------

class _Close(Exception):
    """Raised by a behaviour to end the connection (the behaviour already closed it)."""


class _Stopping(Exception):
    """The fake server is shutting down."""


class Session:
    """One accepted connection: RESP command reader plus send helpers for behaviours."""

    POLL = 0.05  # socket timeout so every blocking call notices server shutdown quickly

    def __init__(self, server: FakeRedis, conn: socket.socket) -> None:
        self.server = server
        self.conn = conn
        self.buf = b""
        self.sent = 0
        self.closed = False
        self.resp3 = False  # set by HELLO 3
        conn.settimeout(self.POLL)

    # reading
    def _fill(self) -> bool:
        """Read more bytes into the buffer; False on EOF (or a reset from the client)."""
        while True:
            if self.server.stopping.is_set():
                raise _Stopping
            try:
                data = self.conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return False
            if not data:
                return False
            self.buf += data
            return True

    def read_command(self) -> list[str] | None:
        """The next command (RESP array of bulk strings, or inline), or None at EOF."""
        while True:
            cmd = self._parse()
            if cmd is not None:
                return cmd
            if not self._fill():
                return None

    def _parse(self) -> list[str] | None:
        buf = self.buf
        if not buf:
            return None
        if not buf.startswith(b"*"):  # inline command
            line, sep, rest = buf.partition(b"\r\n")
            if not sep:
                return None
            self.buf = rest
            return line.decode("utf-8", "replace").split()
        end = buf.find(b"\r\n")
        if end < 0:
            return None
        count = int(buf[1:end])
        pos = end + 2
        parts: list[str] = []
        for _ in range(count):
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            size = int(buf[pos + 1:end])
            start = end + 2
            if len(buf) < start + size + 2:
                return None
            parts.append(buf[start:start + size].decode("utf-8", "replace"))
            pos = start + size + 2
        self.buf = buf[pos:]
        return parts

    def wait_eof(self) -> None:
        """Discard input until the client closes."""
        while self._fill():
            self.buf = b""

    # writing
    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.server.stopping.is_set():
                raise _Stopping
            try:
                n = self.conn.send(view)
            except TimeoutError:
                continue
            self.sent += n
            self.server.note_sent(self.sent)
            view = view[n:]

    def close_graceful(self) -> None:
        """FIN (never RST): half-close, drain until the client closes, then close."""
        self.conn.shutdown(socket.SHUT_WR)
        self.wait_eof()
        self.close()
        raise _Close

    def close_reset(self) -> None:
        """Abortive close: SO_LINGER 0 makes close() send an RST."""
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()
        raise _Close

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close()


Behaviour = Callable[[Session], None]  # called when an INFO command arrives


class FakeRedis:
    """A threaded TCP server on 127.0.0.1 that speaks just enough RESP to script faults.

    HELLO (redis-py 8 sends ``HELLO 3`` on connect unless the client asks for RESP2) gets a
    minimal handshake map or, with ``hello=False``, the error Redis 5 sends;
    AUTH/CLIENT/SELECT/PING get ``+OK``, CONFIG GET gets an empty map/array, and INFO calls
    ``on_info(session)``. With ``silent=True`` nothing is ever answered (a stalled server).
    Records connections, the peak number of simultaneously open ones, AUTH passwords seen,
    and the largest number of bytes sent on one connection.
    """

    def __init__(self, on_info: Behaviour | None = None, *, silent: bool = False, port: int = 0,
                 name: str = "fake", hello: bool = True) -> None:
        self.on_info = on_info
        self.hello = hello
        self.silent = silent
        self.name = name
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self.max_sent = 0
        self.info_requests = 0
        self.auth_passwords: list[str] = []
        self.errors: list[str] = []
        self._sessions: list[Session] = []
        self._threads: list[threading.Thread] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def note_sent(self, n: int) -> None:
        if n > self.max_sent:
            self.max_sent = n

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                session = Session(self, conn)
                self._sessions.append(session)
                t = threading.Thread(target=self._handle, args=(session,), name=f"{self.name}-conn", daemon=True)
                self._threads.append(t)
            t.start()

    def _handle(self, s: Session) -> None:
        try:
            while True:
                cmd = s.read_command()
                if cmd is None:
                    return
                if self.silent or not cmd:
                    continue
                name = cmd[0].upper()
                if name == "HELLO":
                    self._hello(s, cmd)
                elif name == "AUTH":
                    with self.lock:
                        self.auth_passwords.append(cmd[-1])
                    s.send(b"+OK\r\n")
                elif name in ("CLIENT", "SELECT", "PING"):
                    s.send(b"+OK\r\n")
                elif name == "CONFIG":
                    s.send(b"%0\r\n" if s.resp3 else b"*0\r\n")
                elif name == "INFO":
                    with self.lock:
                        self.info_requests += 1
                    assert self.on_info is not None
                    self.on_info(s)
                else:
                    s.send(b"-ERR unknown command\r\n")
        except (_Close, _Stopping, OSError):
            pass
        except Exception as exc:  # a bug in the fake itself: keep it visible
            self.errors.append(repr(exc))
        finally:
            s.close()
            with self.lock:
                self.active -= 1

    def _hello(self, s: Session, cmd: list[str]) -> None:
        upper = [c.upper() for c in cmd]
        if "AUTH" in upper:
            with self.lock:
                self.auth_passwords.append(cmd[upper.index("AUTH") + 2])
        if not self.hello:  # Redis < 6 has no HELLO
            s.send(b"-ERR unknown command `HELLO`, with args beginning with: `3`, \r\n")
            return
        s.resp3 = len(cmd) > 1 and cmd[1] == "3"
        fields = [(b"server", b"+redis"), (b"version", b"+7.0.0"), (b"proto", b":%d" % (3 if s.resp3 else 2))]
        if s.resp3:
            s.send(b"%%%d\r\n" % len(fields) + b"".join(b"+%s\r\n%s\r\n" % kv for kv in fields))
        else:
            s.send(b"*%d\r\n" % (2 * len(fields)) + b"".join(b"+%s\r\n%s\r\n" % kv for kv in fields))

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()
        self._acceptor.join(5)
        with self.lock:
            threads = list(self._threads)
        for t in threads:
            t.join(5)
        for s in self._sessions:
            s.close()
        assert not [t for t in threads if t.is_alive()], f"{self.name}: connection threads did not stop"


# --- behaviours (what the fake does when INFO arrives) -------------------------------------

def garbage(s: Session) -> None:
    s.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # then wait for the client to hang up


def truncated(s: Session) -> None:
    s.send(b"$1000\r\n" + b"x" * 100)
    s.close_graceful()


def trickle(s: Session) -> None:
    s.send(b"$100000000\r\n")
    while True:
        s.send(b"x")
        if s.server.stopping.wait(0.05):
            raise _Stopping


def firehose(s: Session) -> None:
    s.send(b"$2000000000\r\n")  # 2 GB announced; unguarded, hiredis would buffer all of it
    chunk = b"x" * 65536
    while True:
        s.send(chunk)


def reset(s: Session) -> None:
    s.close_reset()


def integer_reply(s: Session) -> None:
    s.send(b":42\r\n")


def status_reply(s: Session) -> None:
    s.send(b"+OK\r\n")


def not_info(s: Session) -> None:
    body = b"hello there\r\nthis is not INFO output\r\nfoo:bar\r\n# Nonsense\r\nanswer:42\r\n"
    s.send(b"$%d\r\n%s\r\n" % (len(body), body))


def echo_secret(s: Session) -> None:
    """An error reply quoting the password back (servers and proxies do such things)."""
    password = s.server.auth_passwords[-1] if s.server.auth_passwords else "?"
    s.send(f"-ERR invalid password '{password}' for this proxy\r\n".encode())


REDIS5_INFO = (
    b"# Server\r\nredis_version:5.0.14\r\nredis_mode:standalone\r\nos:Linux\r\nprocess_id:4242\r\n"
    b"tcp_port:6379\r\nuptime_in_seconds:1000\r\n\r\n# Clients\r\nconnected_clients:3\r\n\r\n"
    b"# Memory\r\nused_memory:1048576\r\nused_memory_rss:4194304\r\nmaxmemory:0\r\n"
    b"maxmemory_policy:noeviction\r\ntotal_system_memory:8589934592\r\n\r\n"
    b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n"
    b"# Keyspace\r\ndb0:keys=7,expires=0,avg_ttl=0\r\n"
)


def redis5_info(s: Session) -> None:
    """A well-behaved Redis 5: valid INFO (Redis 5 only has RESP2; HELLO is unknown to it)."""
    s.send(b"$%d\r\n%s\r\n" % (len(REDIS5_INFO), REDIS5_INFO))


# --- helpers ----------------------------------------------------------------------------

def start_exporter(workdir: Path, config: dict, env: dict[str, str]) -> ExporterProcess:
    """The same as conftest's exporter_factory, usable from a module-scoped fixture."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path, log_path, port = workdir / "exporter.yml", workdir / "exporter.log", free_port()
    config_path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "exporter", "run", "--listen", f"127.0.0.1:{port}", "--log-level", "debug",
           "--config", str(config_path)]
    full_env = {**os.environ, **env}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)
    ep = ExporterProcess(config_path, port, log_path, proc, full_env)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exporter exited with {proc.returncode}:\n{ep.log()}")
        return ep.get("/healthz", timeout=1)[0] == 200
    try:
        wait_until(healthy, timeout=20, message="exporter /healthz")
        wait_until(lambda: ep.get("/readyz", timeout=2)[0] == 200, timeout=30, message="exporter /readyz")
    except BaseException:
        proc.kill()
        proc.wait(5)
        raise
    return ep


def errors_by_reason(m: Metrics, target: str) -> dict[str, float]:
    return {r: m.value("cache_exporter_poll_errors_total", target=target, reason=r) or 0.0 for r in REASONS}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def secret_target(name: str, url: str) -> dict:
    return {"name": name, "type": "redis", "url": url, "password_env": SECRET_ENV}


# --- the shared fault lab -----------------------------------------------------------------

# target name -> (behaviour, silent, expected reason)
FAKES: dict[str, tuple[Behaviour | None, bool, str]] = {
    "garbage": (garbage, False, "protocol"),
    "truncated": (truncated, False, "reset"),
    "trickle": (trickle, False, "timeout"),
    "firehose": (firehose, False, "too_large"),
    "stall": (None, True, "timeout"),
    "reset": (reset, False, "reset"),
    "integer": (integer_reply, False, "protocol"),
    "status": (status_reply, False, "protocol"),
    "not-info": (not_info, False, "protocol"),
    "echo-secret": (echo_secret, False, "error"),
}
EXPECTED = {name: reason for name, (_, _, reason) in FAKES.items()}
EXPECTED.update({"refused": "refused", "dns": "dns"})


class Lab:
    def __init__(self, ep: ExporterProcess, fakes: dict[str, FakeRedis]) -> None:
        self.ep = ep
        self.fakes = fakes


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    fakes: dict[str, FakeRedis] = {}
    ep: ExporterProcess | None = None
    try:
        for name, (behaviour, silent, _) in FAKES.items():
            fakes[name] = FakeRedis(behaviour, silent=silent, name=name)
        fakes["redis5"] = FakeRedis(redis5_info, name="redis5", hello=False)
        targets = [secret_target(name, fake.url) for name, fake in fakes.items()]
        targets.append(secret_target("refused", f"redis://127.0.0.1:{free_port()}"))
        targets.append(secret_target("dns", "redis://nonexistent-host.invalid:6379"))
        config = {"global": fast_global(max_reply_size="64KiB"), "targets": targets}
        ep = start_exporter(tmp_path_factory.mktemp("faultlab"), config, {SECRET_ENV: SECRET})
        yield Lab(ep, fakes)
    finally:
        if ep is not None and ep.proc.poll() is None:
            ep.proc.kill()
            ep.proc.wait(5)
        for fake in fakes.values():
            fake.close()
        for fake in fakes.values():
            assert not fake.errors, f"fake server {fake.name} failed: {fake.errors}"


def wait_metrics(ep: ExporterProcess, ok: Callable[[Metrics], object], timeout: float, message: str) -> Metrics:
    """Poll /metrics until ``ok(metrics)`` is true; return those metrics."""
    def check() -> Metrics | None:
        m = ep.metrics()
        return m if ok(m) else None
    return wait_until(check, timeout=timeout, message=message)  # type: ignore[return-value]


def wait_for_reason(ep: ExporterProcess, target: str, reason: str, count: int = 1, timeout: float = 15) -> Metrics:
    return wait_metrics(
        ep, lambda m: (m.value("cache_exporter_poll_errors_total", target=target, reason=reason) or 0) >= count,
        timeout=timeout, message=f"{count} {reason} errors for {target}")


# --- 1-9: each fault is reported with its own reason -----------------------------------------

@pytest.mark.parametrize("target", list(EXPECTED), ids=[f"{t}->{r}" for t, r in EXPECTED.items()])
def test_fault_is_reported_with_reason(lab: Lab, target: str) -> None:
    reason = EXPECTED[target]
    wait_for_reason(lab.ep, target, reason, count=3)
    # A few more polls, so an occasional misclassification (a race) has a chance to show.
    m = wait_metrics(lab.ep, lambda m: m.value("cache_exporter_polls_total", target=target) >= 8,
                     timeout=20, message=f"8 polls of {target}")
    assert m.value("cache_up", target=target, store="redis") == 0
    assert m.value("redis_up", target=target) == 0
    assert m.value("cache_exporter_last_poll_success_timestamp_seconds", target=target) is None
    errors = errors_by_reason(m, target)
    polls = m.value("cache_exporter_polls_total", target=target)
    # Every poll failed, and every failure was classified with this fault's reason.
    assert sum(errors.values()) == polls, (errors, polls)
    assert {r: n for r, n in errors.items() if n} == {reason: polls}, errors
    status = lab.ep.target(target)
    assert status["up"] is False
    assert status["last_error"]["reason"] == reason, status["last_error"]
    assert status["last_success_time"] is None


def test_never_ending_reply_is_cut_at_the_timeout(lab: Lab) -> None:
    fake = lab.fakes["trickle"]
    # Sample the duration of every poll (keyed by poll number). Polls inside the reconnect
    # backoff fail at once; the ones that reached the fake are cut at the 0.4 s timeout.
    durations: dict[float, float] = {}

    def trickled_polls() -> bool:
        m = lab.ep.metrics()
        durations[m.value("cache_exporter_polls_total", target="trickle")] = m.value(
            "cache_exporter_last_poll_duration_seconds", target="trickle")
        return sum(1 for d in durations.values() if d >= 0.3) >= 3
    wait_until(trickled_polls, timeout=20, message="3 polls that waited for the trickling fake")
    assert max(durations.values()) < 1.5, durations
    m = wait_for_reason(lab.ep, "trickle", "timeout", count=3)
    count = m.value("cache_exporter_poll_duration_seconds_count", target="trickle")
    total = m.value("cache_exporter_poll_duration_seconds_sum", target="trickle")
    assert count and total / count < 1.5, (total, count)
    status = lab.ep.target("trickle")
    assert status["timeout_seconds"] == 0.4
    assert status["last_poll_duration_seconds"] < 1.5
    assert fake.info_requests >= 3  # the fake really was trickling replies
    assert fake.max_active <= 1


def test_endless_fast_reply_is_cut_at_max_reply_size(lab: Lab) -> None:
    fake = lab.fakes["firehose"]
    m = wait_for_reason(lab.ep, "firehose", "too_large", count=3)
    assert m.value("cache_up", target="firehose", store="redis") == 0
    assert fake.connections >= 2
    # The exporter stopped reading at ~64 KiB: the fake could only fill the socket buffers.
    assert fake.max_sent < 16 * 2**20, fake.max_sent
    rss = rss_bytes(lab.ep.proc.pid)
    assert rss < 200 * 2**20, f"exporter RSS {rss / 2**20:.0f} MiB"


def test_stalled_target_never_overlaps_itself(lab: Lab) -> None:
    fake = lab.fakes["stall"]
    wait_for_reason(lab.ep, "stall", "timeout", count=3)
    wait_until(lambda: fake.connections >= 3, timeout=15, message="3 connections to the stalled fake")
    assert fake.max_active == 1, f"{fake.max_active} simultaneous connections from one target"
    # Every timed-out connection was closed by the exporter (the fake saw EOF on all but the current one).
    assert fake.active <= 1


def test_secrets_never_leak(lab: Lab) -> None:
    ep = lab.ep
    wait_for_reason(ep, "echo-secret", "error", count=2)
    # The password really was used: every fake that answers got it in AUTH.
    for name, fake in lab.fakes.items():
        if name not in ("stall", "redis5"):
            assert fake.auth_passwords and set(fake.auth_passwords) == {SECRET}, name
    echoed = ep.target("echo-secret")["last_error"]["message"]
    assert "invalid password" in echoed
    _, metrics_body, _ = ep.get("/metrics")
    _, targets_body, _ = ep.get("/targets")
    _, landing, _ = ep.get("/")
    for where, text in (("/metrics", metrics_body.decode()), ("/targets", targets_body.decode()),
                        ("/", landing.decode()), ("log", ep.log())):
        assert SECRET not in text, f"secret leaked in {where}"
        assert SECRET[:12] not in text, f"part of the secret leaked in {where}"
    assert SECRET not in json.dumps(ep.targets())


def test_redis5_without_hello_is_polled(lab: Lab) -> None:
    """README: "works with Redis 5". Redis 5 answers HELLO with an error and only speaks RESP2."""
    fake = lab.fakes["redis5"]
    m = lab.ep.wait_polls("redis5", 2)
    assert fake.auth_passwords == [SECRET] * len(fake.auth_passwords) and fake.auth_passwords
    assert errors_by_reason(m, "redis5") == dict.fromkeys(REASONS, 0.0), lab.ep.target("redis5")["last_error"]
    assert m.value("cache_up", target="redis5", store="redis") == 1
    assert m.value("redis_memory_used_bytes", target="redis5") == 1048576
    assert m.value("redis_db_keys", target="redis5", db="db0") == 7


def test_daemon_survives_every_fault(lab: Lab) -> None:
    ep = lab.ep
    m = ep.metrics()
    for target in EXPECTED:  # every fault has been exercised repeatedly
        assert (m.value("cache_exporter_polls_total", target=target) or 0) >= 2, target
    assert ep.proc.poll() is None, ep.log()[-3000:]
    assert ep.get("/healthz")[0] == 200
    assert ep.get("/readyz")[0] == 200
    assert "Traceback" not in ep.log(), ep.log()[-3000:]
    assert ep.stop() == 0


# --- 10: a bad target never delays a good one --------------------------------------------

def test_bad_targets_do_not_delay_good_ones(redis_server, exporter_factory) -> None:
    stall = FakeRedis(silent=True, name="iso-stall")
    slow = FakeRedis(trickle, name="iso-trickle")
    try:
        config = {"global": fast_global(), "targets": [
            redis_target("real", redis_server),
            {"name": "stall", "type": "redis", "url": stall.url},
            {"name": "trickle", "type": "redis", "url": slow.url},
        ]}
        ep = exporter_factory(config)
        start = ep.metrics()
        start_polls = start.value("cache_exporter_polls_total", target="real")
        latencies: list[float] = []
        t_end = time.monotonic() + 4.0
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            m = ep.metrics()
            latencies.append(time.monotonic() - t0)
            assert m.value("cache_up", target="real", store="redis") == 1
            assert m.value("redis_up", target="real") == 1
            time.sleep(0.1)
        m = ep.metrics()
        polls = m.value("cache_exporter_polls_total", target="real") - start_polls
        assert polls >= 5, f"real target polled {polls} times in 4 s at interval 0.5 s"
        assert sum(errors_by_reason(m, "real").values()) == 0, errors_by_reason(m, "real")
        assert m.value("cache_exporter_last_poll_duration_seconds", target="real") < 0.4
        assert statistics.median(latencies) < 0.25, latencies
        assert max(latencies) < 0.5, latencies
        for name in ("stall", "trickle"):
            assert m.value("cache_up", target=name, store="redis") == 0
            assert errors_by_reason(m, name)["timeout"] >= 2, errors_by_reason(m, name)
        assert ep.stop() == 0
    finally:
        stall.close()
        slow.close()


# --- 12: recovery once the server behaves -------------------------------------------------

def test_recovers_when_a_real_server_takes_over(redis_factory, exporter_factory) -> None:
    fake = FakeRedis(reset, name="recover")
    port = fake.port
    try:
        ep = exporter_factory({"global": fast_global(), "targets": [
            {"name": "flaky", "type": "redis", "url": fake.url}]})
        wait_until(lambda: fake.connections >= 3, timeout=15, message="3 misbehaving connections")
        m = wait_for_reason(ep, "flaky", "reset", count=2)
        assert m.value("cache_up", target="flaky", store="redis") == 0
    finally:
        fake.close()
    server = redis_factory(port=port)
    t0 = time.monotonic()
    m = wait_metrics(ep, lambda m: m.value("cache_up", target="flaky", store="redis") == 1,
                     timeout=10, message="flaky target back up")
    assert time.monotonic() - t0 < 5
    assert m.value("redis_up", target="flaky") == 1
    assert m.value("redis_memory_used_bytes", target="flaky") > 0
    assert m.value("redis_process_id", target="flaky") == server.info("server")["process_id"]
    status = ep.target("flaky")
    assert status["up"] is True and status["last_error"] is None
    assert "flaky is up again after" in ep.log()
    assert ep.stop() == 0
