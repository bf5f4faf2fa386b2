"""Fault injection for the app source: scripted fake HTTP metrics endpoints that misbehave.

Each fake (tests/fakeserver.py's FakeHttp, speaking just enough HTTP/1.1) reads a request and
plays one behaviour. What must come out, for every fault: ``cache_up{store="app"} 0`` and
``app_up 0`` with one consistent ``reason`` in ``cache_exporter_poll_errors_total``; no poll
outlives its timeout or buffers an endless (or gzip-bombed) body; a good target in the same
exporter stays up over one kept-alive connection; credentials go out as the right Authorization
header and never show up anywhere; the daemon survives all of it.

Most fakes share one exporter (module-scoped ``lab``, as in test_memcached_faults.py).
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ExporterProcess, Metrics, fast_global, free_port, start_exporter, wait_until
from fakeserver import (
    HUGE_INTERVAL,
    Behaviour,
    FakeHttp,
    HttpSession,
    Request,
    SessionClosed,
    assert_huge_reply_capped,
    assert_polls_cut_at_timeout,
    assert_secret_not_exposed,
    errors_by_reason,
    head_bytes,
    rss_bytes,
    stop_lab,
    wait_metrics,
)

FIXTURES = Path(__file__).parent / "fixtures" / "app"
NODE_BODY = (FIXTURES / "nodejs_promclient.prom").read_bytes()
# What the exporter must make of NODE_BODY (see test_app_parsing.py for the derivation).
NODE_USED = 15869328 - 10241880 - 858688
NODE_LIMIT = 117440512 - 48 * 2**20
NODE_TOTAL = 15869328
PROM_TYPE = "text/plain; version=0.0.4; charset=utf-8"

USER = "scraper"
SECRET = "App-s3cr3t-PW-71c2e9-do-not-leak"
SECRET_ENV = "FAULT_TEST_APP_PASSWORD"
TOKEN = "tok-5f0a9c2b7e41d8-bearer-do-not-leak"
TOKEN_ENV = "FAULT_TEST_APP_TOKEN"
BASIC = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
BEARER = f"Bearer {TOKEN}"


# --- responses ---------------------------------------------------------------------------------

def response(status: str, body: bytes = b"", headers: dict[str, str] | None = None,
             content_length: int | None = None) -> bytes:
    """A response with ``body``; ``content_length`` declares another length than the body's."""
    length = len(body) if content_length is None else content_length
    return head_bytes(status, (headers or {}).items(), length) + body


# --- behaviours ----------------------------------------------------------------------------------

def serve(body: bytes, status: str = "200 OK", content_type: str = PROM_TYPE,
          extra: dict[str, str] | None = None) -> Behaviour:
    """A complete response; the connection is kept alive."""
    def behaviour(s: HttpSession, req: Request) -> None:
        s.send(response(status, body, {"Content-Type": content_type, **(extra or {})}))
    return behaviour


def good(s: HttpSession, req: Request) -> None:
    s.send(response("200 OK", NODE_BODY, {"Content-Type": PROM_TYPE}))


def good_gzip(s: HttpSession, req: Request) -> None:
    assert "gzip" in req.headers.get("accept-encoding", ""), req.headers
    s.send(response("200 OK", gzip.compress(NODE_BODY), {"Content-Type": PROM_TYPE, "Content-Encoding": "gzip"}))


def requires(expected: str) -> Behaviour:
    """The good body for the right Authorization header, 401 for anything else."""
    def behaviour(s: HttpSession, req: Request) -> None:
        if req.headers.get("authorization") == expected:
            good(s, req)
        else:
            s.send(response("401 Unauthorized", b"Unauthorized", {"WWW-Authenticate": 'Basic realm="metrics"'}))
    return behaviour


FAST_CHUNK = b"filler_metric_with_a_long_name{label=\"value\"} 1234567890\n" * 1200  # ~70 KB


def endless_declared(s: HttpSession, req: Request) -> None:
    """Declares a huge Content-Length and streams as fast as the client reads."""
    s.send(response("200 OK", headers={"Content-Type": PROM_TYPE}, content_length=10**12))
    while True:
        s.send(FAST_CHUNK)


def endless_until_close(s: HttpSession, req: Request) -> None:
    """No Content-Length: the body ends when the connection does (never)."""
    s.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
    while True:
        s.send(FAST_CHUNK)


def endless_chunked(s: HttpSession, req: Request) -> None:
    s.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
    frame = b"%x\r\n%s\r\n" % (len(FAST_CHUNK), FAST_CHUNK)
    while True:
        s.send(frame)


def bad_chunk_size(s: HttpSession, req: Request) -> None:
    """Chunked framing with a chunk-size line that is not hex: a malformed reply, not a reset
    (http.client reports it as IncompleteRead, which read as "reset" before)."""
    s.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"zz-not-hex\r\n" + NODE_BODY[:100] + b"\r\n")
    s.wait_eof()
    raise SessionClosed


def trickle(s: HttpSession, req: Request) -> None:
    """A valid head, then the body one byte every 50 ms."""
    s.send(response("200 OK", headers={"Content-Type": PROM_TYPE}, content_length=len(NODE_BODY)))
    for byte in NODE_BODY:
        s.send(bytes([byte]))
        s.pause(0.05)
    raise SessionClosed


def stall_after_headers(s: HttpSession, req: Request) -> None:
    s.send(response("200 OK", headers={"Content-Type": PROM_TYPE}, content_length=len(NODE_BODY)))
    s.wait_eof()
    raise SessionClosed


def gzip_bytes(size: int) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(2**20)
    return b"".join(co.compress(chunk) for _ in range(size // 2**20)) + co.flush()


BOMB = gzip_bytes(32 * 2**20)  # 32 MiB of zeros in ~32 KB: fits max_reply_size (64 KiB), inflates far past it


def gzip_bomb(s: HttpSession, req: Request) -> None:
    s.send(response("200 OK", BOMB, {"Content-Type": PROM_TYPE, "Content-Encoding": "gzip"}))


def not_gzip(s: HttpSession, req: Request) -> None:
    """Says gzip, is not (a misconfigured proxy): a malformed reply."""
    s.send(response("200 OK", NODE_BODY, {"Content-Type": PROM_TYPE, "Content-Encoding": "gzip"}))


def garbage_status(s: HttpSession, req: Request) -> None:
    s.send(b"HELLO\r\n")
    s.close_graceful()


def reset_mid_body(s: HttpSession, req: Request) -> None:
    s.send(response("200 OK", NODE_BODY[: len(NODE_BODY) // 2], {"Content-Type": PROM_TYPE},
                    content_length=len(NODE_BODY)))
    time.sleep(0.02)
    s.close_reset()


def truncated_body(s: HttpSession, req: Request) -> None:
    s.send(response("200 OK", NODE_BODY[: len(NODE_BODY) // 2], {"Content-Type": PROM_TYPE},
                    content_length=len(NODE_BODY)))
    s.close_graceful()


def headers_then_close(s: HttpSession, req: Request) -> None:
    s.send(response("200 OK", headers={"Content-Type": PROM_TYPE}, content_length=len(NODE_BODY)))
    s.close_graceful()


HTML = (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n"
        b"<body><form action=\"/login\">...</form></body></html>\n")
JSON_STATS = json.dumps({"memory": {"heapUsed": 123, "rss": 456}}).encode()


# --- the shared fault lab ------------------------------------------------------------------------

# target name -> (behaviour, expected reason)
FAILING: dict[str, tuple[Behaviour, str]] = {
    "http-500": (serve(b"Internal Server Error", "500 Internal Server Error", "text/plain"), "http"),
    "http-404": (serve(b"Not Found", "404 Not Found", "text/plain"), "http"),
    "http-401": (serve(b"Unauthorized", "401 Unauthorized", "text/plain",
                       {"WWW-Authenticate": 'Basic realm="metrics"'}), "auth"),
    "html-200": (serve(HTML, content_type="text/html; charset=utf-8"), "protocol"),
    "json-to-prom": (serve(JSON_STATS, content_type="application/json"), "protocol"),
    "endless": (endless_declared, "too_large"),
    "endless-close": (endless_until_close, "too_large"),
    "endless-chunked": (endless_chunked, "too_large"),
    "bad-chunk": (bad_chunk_size, "protocol"),
    "trickle": (trickle, "timeout"),
    "stall": (stall_after_headers, "timeout"),
    "gzip-bomb": (gzip_bomb, "too_large"),
    "not-gzip": (not_gzip, "protocol"),
    "garbage": (garbage_status, "protocol"),
    "rst": (reset_mid_body, "reset"),
    "truncated": (truncated_body, "reset"),
    "headers-only": (headers_then_close, "reset"),
}
EXPECTED = {name: reason for name, (_, reason) in FAILING.items()}
EXPECTED["refused"] = "refused"

UP_PERIOD, DOWN_PERIOD = 1.5, 1.5


class Restarter:
    """The "mid-restart" target: a good fake on a fixed port, closed and reopened in turns."""

    def __init__(self) -> None:
        self.port = free_port()
        self.errors: list[str] = []
        self.incarnations = 0
        self.stop = threading.Event()
        self.fake: FakeHttp | None = None
        self.thread = threading.Thread(target=self._run, name="restarter", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.fake = FakeHttp(good, name="restart", port=self.port)
            self.incarnations += 1
            self.stop.wait(UP_PERIOD)
            fake, self.fake = self.fake, None
            fake.close()
            self.errors += fake.errors
            self.stop.wait(DOWN_PERIOD)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


class Lab:
    def __init__(self, ep: ExporterProcess, fakes: dict[str, FakeHttp], restarter: Restarter) -> None:
        self.ep = ep
        self.fakes = fakes
        self.restarter = restarter


def app_target(name: str, port: int, **extra: object) -> dict:
    return {"name": name, "type": "app", "url": f"http://127.0.0.1:{port}/metrics", **extra}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    fakes: dict[str, FakeHttp] = {}
    ep: ExporterProcess | None = None
    restarter: Restarter | None = None
    try:
        targets = []
        fakes["good"] = FakeHttp(good, name="good")
        targets.append(app_target("good", fakes["good"].port))
        fakes["good-gzip"] = FakeHttp(good_gzip, name="good-gzip")
        targets.append(app_target("good-gzip", fakes["good-gzip"].port))
        for name, (behaviour, _) in FAILING.items():
            fakes[name] = FakeHttp(behaviour, name=name)
            targets.append(app_target(name, fakes[name].port))
        fakes["basic"] = FakeHttp(requires(BASIC), name="basic")
        targets.append(app_target("basic", fakes["basic"].port, username=USER, password_env=SECRET_ENV))
        fakes["bearer"] = FakeHttp(requires(BEARER), name="bearer")
        targets.append(app_target("bearer", fakes["bearer"].port, password_env=TOKEN_ENV))
        # A server that closes idle keep-alive connections (Node: server.keepAliveTimeout, 5 s by
        # default, with 15 s+ scrape intervals) -- here 0.2 s against the 0.5 s interval.
        fakes["idle-close"] = FakeHttp(good, name="idle-close", idle_close=0.2)
        targets.append(app_target("idle-close", fakes["idle-close"].port))
        targets.append(app_target("refused", free_port()))
        restarter = Restarter()
        targets.append(app_target("restart", restarter.port))
        config = {"global": fast_global(max_reply_size="64KiB"), "targets": targets}
        ep = start_exporter(tmp_path_factory.mktemp("app-faultlab"), config, {SECRET_ENV: SECRET, TOKEN_ENV: TOKEN})
        yield Lab(ep, fakes, restarter)
    finally:
        if restarter is not None:
            restarter.close()
        stop_lab(ep, fakes)
    assert restarter is None or not restarter.errors, restarter.errors


# --- helpers ---------------------------------------------------------------------------------------

def nonzero(errors: dict[str, float]) -> dict[str, float]:
    return {r: n for r, n in errors.items() if n}


def wait_for_polls(ep: ExporterProcess, target: str, n: int, timeout: float = 20) -> Metrics:
    return wait_metrics(ep, lambda m: (m.value("cache_exporter_polls_total", target=target) or 0) >= n,
                        timeout=timeout, message=f"{n} polls of {target}")


def assert_node_heap(m: Metrics, target: str) -> None:
    assert m.value("cache_up", target=target, store="app") == 1
    assert m.value("app_up", target=target) == 1
    assert m.value("cache_memory_used_bytes", target=target, store="app") == NODE_USED
    assert m.value("cache_memory_limit_bytes", target=target, store="app") == NODE_LIMIT
    assert m.value("app_heap_total_used_bytes", target=target) == NODE_TOTAL
    assert m.value("app_runtime_info", target=target, runtime="nodejs") == 1


# --- the control: a well-behaved endpoint, one connection ----------------------------------------

def test_good_target_stays_up_over_one_kept_alive_connection(lab: Lab) -> None:
    m = wait_for_polls(lab.ep, "good", 8)
    assert_node_heap(m, "good")
    assert nonzero(errors_by_reason(m, "good")) == {}
    assert m.value("cache_exporter_malformed_fields_total", target="good") == 0
    fake = lab.fakes["good"]
    assert fake.request_count() >= 8
    assert fake.connections == 1, f"{fake.connections} connections for {fake.request_count()} polls"
    assert fake.max_active == 1
    status = lab.ep.target("good")
    assert status["up"] is True
    assert status["details"]["runtime"] == "nodejs"
    assert status["details"]["connections_opened"] == 1
    # What the exporter asked for.
    req = fake.requests[0]
    assert (req.method, req.path, req.version) == ("GET", "/metrics", "HTTP/1.1")
    assert "gzip" in req.headers.get("accept-encoding", "")
    assert req.headers.get("host", "").startswith("127.0.0.1")
    assert fake.headers_seen("authorization") == {"<absent>"}


def test_gzip_encoded_body_is_decoded(lab: Lab) -> None:
    m = wait_for_polls(lab.ep, "good-gzip", 4)
    assert_node_heap(m, "good-gzip")
    assert nonzero(errors_by_reason(m, "good-gzip")) == {}
    assert lab.fakes["good-gzip"].connections == 1


# --- every fault with its own reason ----------------------------------------------------------------

@pytest.mark.parametrize("target", list(EXPECTED), ids=[f"{t}->{r}" for t, r in EXPECTED.items()])
def test_fault_is_reported_with_reason(lab: Lab, target: str) -> None:
    reason = EXPECTED[target]
    m = wait_for_polls(lab.ep, target, 6)
    assert m.value("cache_up", target=target, store="app") == 0
    assert m.value("app_up", target=target) == 0
    assert m.value("cache_exporter_last_poll_success_timestamp_seconds", target=target) is None
    assert not m.find("cache_memory_used_bytes", target=target)
    polls = m.value("cache_exporter_polls_total", target=target)
    # Every poll failed, and every failure was classified with this fault's reason.
    errors = nonzero(errors_by_reason(m, target))
    last = lab.ep.target(target)["last_error"]
    assert errors == {reason: polls}, f"{errors}; last error: {last}"
    assert lab.ep.target(target)["up"] is False
    assert last["reason"] == reason, last


def test_fakes_really_played_their_faults(lab: Lab) -> None:
    """The reasons came from the scripted behaviours, on fresh connections, not from an earlier failure."""
    for name in FAILING:
        fake = lab.fakes[name]
        wait_until(lambda fake=fake: fake.connections >= 2 and fake.request_count() >= 2, timeout=15,
                   message=f"2 connections to {name}, each with a request")
        assert fake.max_active <= 1, (name, fake.max_active)
    # Endless bodies: the exporter stopped reading near 64 KiB, the fakes only filled socket buffers.
    for name in ("endless", "endless-close", "endless-chunked"):
        assert lab.fakes[name].max_sent < 16 * 2**20, (name, lab.fakes[name].max_sent)


def test_endless_bodies_do_not_grow_the_exporter(lab: Lab) -> None:
    wait_until(lambda: all(lab.fakes[n].connections >= 4 for n in ("endless", "endless-chunked", "gzip-bomb")),
               timeout=20, message="4 rounds of endless and bombed bodies")
    rss = rss_bytes(lab.ep.proc.pid)
    assert rss < 200 * 2**20, f"exporter RSS {rss / 2**20:.0f} MiB"


def test_slow_body_is_cut_at_the_timeout(lab: Lab) -> None:
    assert_polls_cut_at_timeout(lab.ep, "trickle")
    assert lab.fakes["trickle"].max_active <= 1


def test_stall_after_headers_is_cut_at_the_timeout(lab: Lab) -> None:
    assert_polls_cut_at_timeout(lab.ep, "stall")
    fake = lab.fakes["stall"]
    assert fake.max_active == 1  # never overlaps itself
    assert fake.clients_connected() <= 1  # every timed-out connection was closed by the exporter


# --- credentials -------------------------------------------------------------------------------------

def test_basic_auth_header(lab: Lab) -> None:
    m = wait_for_polls(lab.ep, "basic", 4)
    assert_node_heap(m, "basic")
    assert nonzero(errors_by_reason(m, "basic")) == {}
    assert lab.fakes["basic"].headers_seen("authorization") == {BASIC}


def test_bearer_token_header(lab: Lab) -> None:
    m = wait_for_polls(lab.ep, "bearer", 4)
    assert_node_heap(m, "bearer")
    assert nonzero(errors_by_reason(m, "bearer")) == {}
    assert lab.fakes["bearer"].headers_seen("authorization") == {BEARER}


def test_credentials_never_leak(lab: Lab) -> None:
    wait_for_polls(lab.ep, "basic", 3)
    wait_for_polls(lab.ep, "bearer", 3)
    assert_secret_not_exposed(lab.ep, SECRET)
    assert_secret_not_exposed(lab.ep, TOKEN)
    encoded = BASIC.removeprefix("Basic ")
    for where, text in (("/metrics", lab.ep.get("/metrics")[1].decode()),
                        ("/targets", lab.ep.get("/targets")[1].decode()), ("log", lab.ep.log())):
        assert encoded not in text, f"base64 credentials leaked in {where}"
    # Only the two servers with credentials configured ever got an Authorization header.
    for name, fake in lab.fakes.items():
        if name not in ("basic", "bearer"):
            assert fake.headers_seen("authorization") <= {"<absent>"}, name


# --- a server that closes idle keep-alive connections ---------------------------------------------------

def test_server_side_keep_alive_timeout_does_not_fail_polls(lab: Lab) -> None:
    """Node closes a kept-alive connection after 5 s idle (server.keepAliveTimeout); Tomcat after
    20 s. With a longer scrape interval every reused connection is already closed by the server:
    the exporter must notice (or retry once on a fresh connection), not report the app down."""
    m = wait_for_polls(lab.ep, "idle-close", 8)
    fake = lab.fakes["idle-close"]
    assert fake.request_count() >= 4
    # The fake really closed idle connections (0.2 s against 0.5 s polls): the fault was played.
    assert fake.connections >= 4
    errors = nonzero(errors_by_reason(m, "idle-close"))
    polls = m.value("cache_exporter_polls_total", target="idle-close")
    assert errors == {}, f"{errors} in {polls} polls over {fake.connections} connections"
    assert_node_heap(m, "idle-close")


# --- mid-restart: refused and good, in turns ------------------------------------------------------------

def test_restarting_target_recovers_each_time(lab: Lab) -> None:
    ups: list[float] = []
    t_end = time.monotonic() + 4 * (UP_PERIOD + DOWN_PERIOD)
    while time.monotonic() < t_end:
        up = lab.ep.metrics().value("cache_up", target="restart", store="app")
        if up is not None and (not ups or ups[-1] != up):
            ups.append(up)
        time.sleep(0.1)
    recoveries = sum(1 for a, b in zip(ups, ups[1:], strict=False) if (a, b) == (0, 1))
    downs = sum(1 for a, b in zip(ups, ups[1:], strict=False) if (a, b) == (1, 0))
    assert recoveries >= 2 and downs >= 2, f"cache_up transitions: {ups}"
    assert lab.restarter.incarnations >= 3
    m = lab.ep.metrics()
    errors = nonzero(errors_by_reason(m, "restart"))
    assert errors.get("refused", 0) >= 2, errors
    # A restart also cuts the kept-alive connection: at most a reset besides the refusals.
    assert set(errors) <= {"refused", "reset"}, errors


# --- the daemon survives everything (runs last in the lab) ----------------------------------------------

def test_no_unexpected_errors_in_the_log(lab: Lab) -> None:
    """Every fault was classified by the source: no "unexpected error" tracebacks in the log."""
    wait_for_polls(lab.ep, "not-gzip", 3)
    log = lab.ep.log()
    offenders = sorted({line.split("target ", 1)[1].split(":", 1)[0] for line in log.splitlines()
                        if "unexpected error while polling" in line})
    assert offenders == [], f"unclassified exceptions for targets {offenders}"
    assert "Traceback" not in log


def test_daemon_survives_every_fault(lab: Lab) -> None:
    ep = lab.ep
    m = ep.metrics()
    for target in [*EXPECTED, "good", "basic", "bearer", "restart"]:
        assert (m.value("cache_exporter_polls_total", target=target) or 0) >= 2, target
    assert_node_heap(m, "good")
    assert lab.fakes["good"].connections == 1
    assert ep.proc.poll() is None, ep.log()[-3000:]
    assert ep.get("/healthz")[0] == 200
    assert ep.get("/readyz")[0] == 200
    assert ep.stop() == 0


# --- a valid but huge body --------------------------------------------------------------------

def huge_body(caches: int = 6_000) -> bytes:
    """A Node app's metrics plus 6,000 in-process caches (18,000 cache samples: all kept lines
    fit the parser's 20,000, the series do not fit the 10,000 cap)."""
    lines = [NODE_BODY.decode(), "# TYPE cache_size gauge"]
    lines += [f'cache_size{{cache="c{i}"}} {i}' for i in range(caches)]
    lines += ["# TYPE cache_gets_total counter"]
    for i in range(caches):
        lines += [f'cache_gets_total{{cache="c{i}",result="hit"}} 5',
                  f'cache_gets_total{{cache="c{i}",result="miss"}} 1']
    return ("\n".join(lines) + "\n").encode()


def test_huge_valid_body_is_capped_and_does_not_delay_a_healthy_app(exporter_factory) -> None:
    body = huge_body()
    good_fake = FakeHttp(good, name="good")
    fake = FakeHttp(serve(body), name="huge")
    try:
        ep = exporter_factory({"global": {"interval": f"{HUGE_INTERVAL}s", "timeout": f"{HUGE_INTERVAL * 0.75}s"},
                               "targets": [app_target("good", good_fake.port), app_target("huge", fake.port)]})
        m = assert_huge_reply_capped(ep, "huge", "app", "cache_items", "good")
        assert m.value("cache_memory_used_bytes", target="huge", store="app") == NODE_USED
        assert ep.stop() == 0
    finally:
        fake.close()
        good_fake.close()
    assert not fake.errors and not good_fake.errors
