"""Plumbing shared by the fault-injection tests: a scripted fake TCP server and exporter helpers.

``FakeServer`` listens on 127.0.0.1, accepts connections on a thread, runs each one in its own
thread as a ``Session`` and keeps the counters the tests assert on (connections, the peak number
of simultaneously open ones, the most bytes sent on one connection). A subclass speaks the
protocol by implementing ``_handle(session)``; ``close()`` stops everything and joins the threads.
``FakeHttp`` is the one that speaks just enough HTTP/1.1 (the app and http_cache fault labs).

The helpers start an exporter subprocess, wait for / read its metrics, and hold the checks
both fault labs make (Redis: test_faults.py, memcached: test_memcached_faults.py).
"""

from __future__ import annotations

import socket
import ssl
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from conftest import ExporterProcess, Metrics, wait_until

from exporter.errors import REASONS  # re-exported for the fault labs


@dataclass
class Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]  # names lower-cased


def parse_request_head(head: bytes) -> Request:
    """An HTTP/1.x request head (GETs: no body)."""
    lines = head.decode("latin-1").split("\r\n")
    method, path, version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(method, path, version, headers)


# --- the fake server ----------------------------------------------------------------------

class SessionClosed(Exception):
    """Raised by a behaviour to end the connection (the behaviour already closed it)."""


class ServerStopping(Exception):
    """The fake server is shutting down."""


class Session:
    """One accepted connection: a byte buffer with line/exact readers plus send/close helpers."""

    POLL = 0.05  # socket timeout so every blocking call notices server shutdown quickly

    def __init__(self, server: FakeServer, conn: socket.socket) -> None:
        self.server = server
        self.conn = conn
        self.buf = b""
        self.sent = 0
        self.closed = False
        conn.settimeout(self.POLL)

    # reading
    def _fill(self, deadline: float | None = None) -> bool:
        """Read more bytes into the buffer; False on EOF (or a reset from the client).

        With a ``deadline`` (time.monotonic()) it also returns True, having read nothing, once
        the deadline has passed: the caller decides what an idle client means.
        """
        while True:
            if self.server.stopping.is_set():
                raise ServerStopping
            try:
                data = self.conn.recv(65536)
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    return True
                continue
            except OSError:
                return False
            if not data:
                return False
            self.server.note_received(data)
            self.buf += data
            return True

    def read_line(self) -> str | None:
        """The next CRLF-terminated line (without the CRLF), or None at EOF."""
        while True:
            line, sep, rest = self.buf.partition(b"\r\n")
            if sep:
                self.buf = rest
                return line.decode("utf-8", "replace")
            if not self._fill():
                return None

    def read_exact(self, n: int) -> bytes | None:
        """The next ``n`` bytes, or None at EOF."""
        while len(self.buf) < n:
            if not self._fill():
                return None
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def wait_eof(self) -> None:
        """Discard input until the client closes."""
        while self._fill():
            self.buf = b""

    # writing
    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.server.stopping.is_set():
                raise ServerStopping
            try:
                n = self.conn.send(view)
            except TimeoutError:
                continue
            self.sent += n
            self.server.note_sent(self.sent)
            view = view[n:]

    def peer_closed(self) -> bool:
        """True once the client has closed its side (EOF waiting, or a reset). For behaviours that
        only send: without it, a fake notices the close at its second send after it, and counts
        the connection as open meanwhile."""
        try:
            self.conn.setblocking(False)
            try:
                return self.conn.recv(1, socket.MSG_PEEK) == b""
            finally:
                self.conn.settimeout(self.POLL)
        except BlockingIOError:
            return False
        except OSError:
            return True

    def pause(self, seconds: float) -> None:
        """Wait between two sends of a trickle. Ends the session (SessionClosed) as soon as the
        client hangs up, checked every 10 ms: the exporter closed the connection, so the fake
        must not count it open any longer (``max_active``) -- at the exact poll grid the next
        poll's connection can come 0.1 s later."""
        deadline = time.monotonic() + seconds
        while True:
            if self.server.stopping.wait(min(0.01, max(0.0, deadline - time.monotonic()))):
                raise ServerStopping
            if self.peer_closed():
                self.close()
                raise SessionClosed
            if time.monotonic() >= deadline:
                return

    def close_graceful(self) -> None:
        """FIN (never RST): half-close, drain until the client closes, then close."""
        self.conn.shutdown(socket.SHUT_WR)
        self.wait_eof()
        self.close()
        raise SessionClosed

    def close_reset(self) -> None:
        """Abortive close: SO_LINGER 0 makes close() send an RST."""
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()
        raise SessionClosed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close()


class RespSession(Session):
    """One accepted connection, plus a RESP command reader (the fake Redis servers' session)."""

    resp3 = False  # set (on the instance) by HELLO 3

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


def _client_still_connected(s: Session) -> bool:
    """Whether the client of ``s`` has neither closed nor reset it: a peek that never blocks and never
    changes the socket's mode, so it is safe beside the session's own thread."""
    if s.closed:
        return False
    try:
        return s.conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


class FakeServer:
    """A threaded TCP server on 127.0.0.1 (``port`` 0: any free port) running one Session per connection.

    Subclasses implement ``_handle(session)`` (return, or raise SessionClosed, to end the
    connection) and may set ``session_class``. The constructor starts accepting, so a subclass
    sets up its own state *before* calling ``super().__init__()``. An unexpected exception in
    ``_handle`` (a bug in the fake itself) is recorded in ``errors``.
    """

    session_class: type[Session] = Session

    def __init__(self, *, name: str = "fake", port: int = 0) -> None:
        self.name = name
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self.max_sent = 0
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

    def note_sent(self, n: int) -> None:
        if n > self.max_sent:
            self.max_sent = n

    def note_received(self, data: bytes) -> None:
        """Called with every chunk a session reads; a hook for recording servers."""

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
                # Counted from the kernel's view at this accept, not from the session threads' (which
                # on a busy machine notice a client's close late): a connection whose client has
                # already closed it is not open any more.
                others = sum(1 for other in self._sessions if _client_still_connected(other))
                self.max_active = max(self.max_active, others + 1)
                session = self.session_class(self, conn)
                self._sessions.append(session)
                t = threading.Thread(target=self._serve, args=(session,), name=f"{self.name}-conn", daemon=True)
                self._threads.append(t)
            t.start()

    def _serve(self, s: Session) -> None:
        try:
            self._handle(s)
        except (SessionClosed, ServerStopping, OSError):
            pass
        except Exception as exc:  # a bug in the fake itself: keep it visible
            self.errors.append(repr(exc))
        finally:
            s.close()
            with self.lock:
                self.active -= 1

    def clients_connected(self) -> int:
        """Connections whose client has neither closed nor reset them, as the kernel sees it now."""
        with self.lock:
            return sum(1 for s in self._sessions if _client_still_connected(s))

    def _handle(self, s: Session) -> None:
        raise NotImplementedError

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


# --- a fake HTTP/1.1 server -----------------------------------------------------------------

IDLE = object()  # read_request's answer when the client stayed idle past the server's keep-alive timeout
TLS_HELLO = object()  # read_request's answer when a TLS ClientHello arrives on a plain-TCP port


class HttpSession(Session):
    """A Session plus an HTTP request-head reader (no request bodies)."""

    def read_request(self, idle: float | None = None) -> Request | object | None:
        """The next request; IDLE after ``idle`` seconds without one, TLS_HELLO, or None at EOF."""
        deadline = time.monotonic() + idle if idle is not None else None
        while b"\r\n\r\n" not in self.buf:
            if self.buf[:1] == b"\x16":  # TLS handshake record
                return TLS_HELLO
            if deadline is not None and time.monotonic() >= deadline:
                return IDLE
            if not self._fill(deadline):
                return None
            if len(self.buf) > 65536:
                self.server.errors.append(f"request head larger than 64 KiB: {self.buf[:80]!r}")
                return None
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return parse_request_head(head)


Behaviour = Callable[[HttpSession, Request], None]


class FakeHttp(FakeServer):
    """Answers every request on a connection with ``behaviour`` (which may close the connection).

    ``tls``: a server-side context; every connection is wrapped before the first request (a
    ClientHello on a plain port gets the plain-text 400 nginx and http.server send).
    ``idle_close`` closes a connection that stays idle that long between requests, like Node's
    ``server.keepAliveTimeout`` (5 s by default). Records every request.
    """

    session_class = HttpSession

    def __init__(self, behaviour: Behaviour, *, name: str = "fake", port: int = 0,
                 tls: ssl.SSLContext | None = None, idle_close: float | None = None) -> None:
        self.behaviour = behaviour
        self.tls = tls
        self.idle_close = idle_close
        self.requests: list[Request] = []
        super().__init__(name=name, port=port)

    def _handle(self, s: HttpSession) -> None:  # type: ignore[override]
        if self.tls is not None:
            s.conn.settimeout(5)
            s.conn = self.tls.wrap_socket(s.conn, server_side=True)  # an SSLError here ends the session
            s.conn.settimeout(Session.POLL)
        while True:
            req = s.read_request(self.idle_close)
            if req is None:
                return
            if req is TLS_HELLO:
                s.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                s.close_graceful()
            if req is IDLE:
                s.close_graceful()
            assert isinstance(req, Request)
            with self.lock:
                self.requests.append(req)
            self.behaviour(s, req)

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.requests]

    def request_count(self) -> int:
        with self.lock:
            return len(self.requests)

    def headers_seen(self, name: str) -> set[str]:
        with self.lock:
            return {r.headers.get(name, "<absent>") for r in self.requests}


def head_bytes(status: str = "200 OK", headers: Iterable[tuple[str, str]] = (),
               content_length: int | None = 0) -> bytes:
    """A response head; ``content_length`` None leaves the header out."""
    lines = [f"HTTP/1.1 {status}", "Server: fake"]
    lines += [f"{k}: {v}" for k, v in headers]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --- the exporter ------------------------------------------------------------------------

def stop_lab(ep: ExporterProcess | None, fakes: dict[str, FakeServer]) -> None:
    """Teardown of a fault lab: kill the exporter, close every fake, then check none of them failed."""
    if ep is not None and ep.proc.poll() is None:
        ep.proc.kill()
        ep.proc.wait(5)
    for fake in fakes.values():
        fake.close()
    for fake in fakes.values():
        assert not fake.errors, f"fake server {fake.name} failed: {fake.errors}"


def errors_by_reason(m: Metrics, target: str) -> dict[str, float]:
    return {r: m.value("cache_exporter_poll_errors_total", target=target, reason=r) or 0.0 for r in REASONS}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


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


# --- checks shared by the Redis and memcached fault labs ----------------------------------

def assert_down(m: Metrics, target: str, store: str) -> None:
    """``target`` is down (cache_up and <store>_up 0) and has never been polled successfully."""
    assert m.value("cache_up", target=target, store=store) == 0
    assert m.value(f"{store}_up", target=target) == 0
    assert m.value("cache_exporter_last_poll_success_timestamp_seconds", target=target) is None


def assert_status_failed(ep: ExporterProcess, target: str, reason: str) -> None:
    """/targets shows ``target`` down, last failed with ``reason``, never successful."""
    status = ep.target(target)
    assert status["up"] is False
    assert status["last_error"]["reason"] == reason, status["last_error"]
    assert status["last_success_time"] is None


def assert_polls_cut_at_timeout(ep: ExporterProcess, target: str) -> None:
    """Polls of a target that never finishes its reply end at the 0.4 s timeout, as ``timeout`` errors."""
    # Sample the duration of every poll (keyed by poll number). Polls inside the reconnect
    # backoff fail at once; the ones that reached the fake are cut at the 0.4 s timeout.
    durations: dict[float, float] = {}

    def trickled_polls() -> bool:
        m = ep.metrics()
        durations[m.value("cache_exporter_polls_total", target=target)] = m.value(
            "cache_exporter_last_poll_duration_seconds", target=target)
        return sum(1 for d in durations.values() if d >= 0.3) >= 3
    wait_until(trickled_polls, timeout=20, message="3 polls that waited for the trickling fake")
    assert max(durations.values()) < 1.5, durations
    m = wait_for_reason(ep, target, "timeout", count=3)
    count = m.value("cache_exporter_poll_duration_seconds_count", target=target)
    total = m.value("cache_exporter_poll_duration_seconds_sum", target=target)
    assert count and total / count < 1.5, (total, count)
    status = ep.target(target)
    assert status["timeout_seconds"] == 0.4
    assert status["last_poll_duration_seconds"] < 1.5


def assert_reply_cut_at_max_size(ep: ExporterProcess, fake: FakeServer, target: str, store: str) -> None:
    """An endless fast reply is a ``too_large`` error, and neither side buffered it."""
    m = wait_for_reason(ep, target, "too_large", count=3)
    assert m.value("cache_up", target=target, store=store) == 0
    assert fake.connections >= 2
    # The exporter stopped reading at ~64 KiB: the fake could only fill the socket buffers.
    assert fake.max_sent < 16 * 2**20, fake.max_sent
    rss = rss_bytes(ep.proc.pid)
    assert rss < 200 * 2**20, f"exporter RSS {rss / 2**20:.0f} MiB"


def assert_never_overlaps(ep: ExporterProcess, fake: FakeServer, target: str) -> None:
    """A stalled target times out poll after poll, with never more than one connection open."""
    wait_for_reason(ep, target, "timeout", count=3)
    wait_until(lambda: fake.connections >= 3, timeout=15, message="3 connections to the stalled fake")
    assert fake.max_active == 1, f"{fake.max_active} simultaneous connections from one target"
    # Every timed-out connection was closed by the exporter (the fake saw EOF on all but the current one).
    assert fake.active <= 1


def assert_secret_not_exposed(ep: ExporterProcess, secret: str) -> None:
    """Neither the secret nor a part of it shows up in /metrics, /targets, / or the log."""
    _, metrics_body, _ = ep.get("/metrics")
    _, targets_body, _ = ep.get("/targets")
    _, landing, _ = ep.get("/")
    for where, text in (("/metrics", metrics_body.decode()), ("/targets", targets_body.decode()),
                        ("/", landing.decode()), ("log", ep.log())):
        assert secret not in text, f"secret leaked in {where}"
        assert secret[:12] not in text, f"part of the secret leaked in {where}"


def assert_daemon_survived(ep: ExporterProcess, targets: Iterable[str]) -> None:
    """Every target was polled repeatedly and the daemon is still alive, healthy and ready."""
    m = ep.metrics()
    for target in targets:  # every fault has been exercised repeatedly
        assert (m.value("cache_exporter_polls_total", target=target) or 0) >= 2, target
    assert ep.proc.poll() is None, ep.log()[-3000:]
    assert ep.get("/healthz")[0] == 200
    assert ep.get("/readyz")[0] == 200
    assert "Traceback" not in ep.log(), ep.log()[-3000:]


def watch_good_target(ep: ExporterProcess, store: str, target: str = "real") -> tuple[Metrics, list[float]]:
    """Scrape /metrics every 0.1 s for 4 s while bad targets misbehave: ``target`` must stay up
    and be polled without errors. Returns the last metrics and the scrape latencies."""
    start_polls = ep.metrics().value("cache_exporter_polls_total", target=target)
    latencies: list[float] = []
    t_end = time.monotonic() + 4.0
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        m = ep.metrics()
        latencies.append(time.monotonic() - t0)
        assert m.value("cache_up", target=target, store=store) == 1
        assert m.value(f"{store}_up", target=target) == 1
        time.sleep(0.1)
    m = ep.metrics()
    polls = m.value("cache_exporter_polls_total", target=target) - start_polls
    assert polls >= 5, f"{target} target polled {polls} times in 4 s at interval 0.5 s"
    assert sum(errors_by_reason(m, target).values()) == 0, errors_by_reason(m, target)
    return m, latencies


def assert_not_delayed(m: Metrics, latencies: list[float], store: str) -> None:
    """/metrics stayed fast while the bad targets ("stall", "trickle") kept timing out."""
    assert statistics.median(latencies) < 0.25, latencies
    assert max(latencies) < 0.5, latencies
    for name in ("stall", "trickle"):
        assert m.value("cache_up", target=name, store=store) == 0
        assert errors_by_reason(m, name)["timeout"] >= 2, errors_by_reason(m, name)


# --- hostile but valid: a huge reply ------------------------------------------------------

HUGE_INTERVAL = 2.0  # the huge-reply labs: long enough for an 8 MB reply on a busy machine


def assert_huge_reply_capped(ep: ExporterProcess, target: str, store: str, family: str, good: str,
                             seconds: float = 12.0) -> Metrics:
    """A target answering a valid but huge reply is polled successfully with at most its
    max_series (default 10,000) series, the cut counted for ``family``; meanwhile the healthy
    target ``good`` keeps its schedule (no skipped poll, no error, every interval polled)."""
    m = wait_metrics(ep, lambda m: m.value("cache_up", target=target, store=store) == 1, timeout=30,
                     message=f"{target} polled successfully")
    start_good = m.value("cache_exporter_polls_total", target=good)
    start_huge = m.value("cache_exporter_polls_total", target=target)
    time.sleep(seconds)
    m = ep.metrics()
    good_polls = m.value("cache_exporter_polls_total", target=good) - start_good
    huge_polls = m.value("cache_exporter_polls_total", target=target) - start_huge
    # The hostile target's own polls may time out now and then on a busy machine (its reply costs
    # CPU): look at it as its last successful poll left it.
    m = wait_metrics(ep, lambda m: m.value("cache_up", target=target, store=store) == 1, timeout=30,
                     message=f"{target} polled successfully again")
    series = sum(1 for s in m.samples if s[1].get("target") == target)
    own = sum(1 for s in m.samples if s[1].get("target") == target and s[0].startswith("cache_exporter_"))
    assert series - own <= 10_000 + 100, series  # the cap, plus what the scheduler adds (forecast, up)
    assert m.value("cache_exporter_target_series", target=target) <= 10_100
    dropped = m.value("cache_exporter_series_dropped_total", target=target, family=family, reason="max_series")
    assert dropped and dropped > 0, "the cut must be counted for the family that was cut"
    assert m.value("cache_memory_used_bytes", target=target, store=store) is not None  # essentials kept
    # The hostile target itself may lose a poll to its own CPU cost on a busy machine (counted as
    # skipped or timed out); it must still be polled again and again.
    assert huge_polls >= 2
    # The healthy neighbour: every scheduled poll ran (+-1 for the edges of the window), none skipped.
    assert good_polls >= seconds / HUGE_INTERVAL - 1, f"{good} polled {good_polls} times in {seconds} s"
    assert m.value("cache_exporter_polls_skipped_total", target=good) == 0
    assert sum(errors_by_reason(m, good).values()) == 0, errors_by_reason(m, good)
    assert m.value("cache_up", target=good, store=store) == 1
    _, body, _ = ep.get("/metrics")
    assert len(body) < 4 * 2**20, f"/metrics is {len(body)} bytes"
    assert max(len(line) for line in body.split(b"\n")) < 4096
    rss = rss_bytes(ep.proc.pid)
    assert rss < 250 * 2**20, f"exporter RSS {rss / 2**20:.0f} MiB"
    return m
