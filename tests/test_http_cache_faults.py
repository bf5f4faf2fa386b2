"""Fault injection for the http_cache source: a fake HTTP server scripted per request path.

The requirement: malformed or hostile headers (huge, repeated, invalid structured fields),
redirect loops, slow bodies and TLS errors are a counted probe failure, never a crash; the
body is never read beyond what is needed; one slow or broken URL does not break the others
of the same target; secrets never leak. Every test drives ``HttpCacheSource.poll`` in-process
against ``ScriptedHttp`` (tests/fakeserver.py's FakeHttp, routed by path)
and asserts the exact outcome: the PollError reason, or the per-URL samples.
"""

from __future__ import annotations

import base64
import io
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pytest
from conftest import TLSFiles, free_port
from fakeserver import (
    Behaviour,
    FakeHttp,
    HttpSession,
    Request,
    ServerStopping,
    SessionClosed,
    head_bytes,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import build_config
from exporter.errors import PollError
from exporter.sources.base import Reading
from exporter.sources.http_cache import AGE_CAP, MAX_LAYER_LENGTH, HttpCacheSource, classify
from exporter.targets import HttpCacheTarget

# --- a fake HTTP server scripted per path ------------------------------------------------------


class ScriptedHttp(FakeHttp):
    """Answers each request with the behaviour routed by its path (query ignored); 404 otherwise.

    ``client_gone`` is set by the body behaviours when the client hung up in the middle of a body.
    """

    def __init__(self, routes: dict[str, Behaviour], *, name: str = "fake", tls: ssl.SSLContext | None = None,
                 port: int = 0) -> None:
        self.routes = routes
        self.client_gone = threading.Event()
        self.body_sent = 0  # the most body bytes one behaviour managed to send
        super().__init__(self._route, name=name, port=port, tls=tls)

    def _route(self, s: HttpSession, req: Request) -> None:
        self.routes.get(req.path.split("?", 1)[0], not_found)(s, req)


def answer(status: str = "200 OK", headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> Behaviour:
    """A complete response; the connection is kept alive."""
    data = head_bytes(status, list(headers), len(body)) + body

    def behaviour(s: HttpSession, req: Request) -> None:
        s.send(data)
    return behaviour


def raw(data: bytes, end: str = "fin") -> Behaviour:
    """Send ``data`` as is, then close: ``fin`` (graceful) or ``rst`` (abortive)."""
    def behaviour(s: HttpSession, req: Request) -> None:
        s.send(data)
        time.sleep(0.02)
        s.close_reset() if end == "rst" else s.close_graceful()
    return behaviour


def not_found(s: HttpSession, req: Request) -> None:
    s.send(head_bytes("404 Not Found"))


def redirect(location: str, status: str = "302 Found") -> Behaviour:
    return answer(status, [("Location", location)])


def trickle_head(data: bytes, every: float) -> Behaviour:
    """The response head one byte every ``every`` seconds."""
    def behaviour(s: HttpSession, req: Request) -> None:
        for byte in data:
            s.send(bytes([byte]))
            if s.server.stopping.wait(every):
                raise ServerStopping
        s.wait_eof()
    return behaviour


def _client_gone(s: HttpSession) -> None:
    server = s.server
    assert isinstance(server, ScriptedHttp)
    server.body_sent = max(server.body_sent, s.sent)
    server.client_gone.set()
    raise SessionClosed


def trickle_body(head: bytes, every: float = 0.05) -> Behaviour:
    """A complete head, then the body one byte every ``every`` seconds until the client hangs up."""
    def behaviour(s: HttpSession, req: Request) -> None:
        s.send(head)
        try:
            while not s.server.stopping.wait(every):
                s.send(b"x")
        except OSError:
            _client_gone(s)
        raise ServerStopping
    return behaviour


def stall_body(head: bytes) -> Behaviour:
    """A complete head, then nothing until the client hangs up."""
    def behaviour(s: HttpSession, req: Request) -> None:
        s.send(head)
        s.wait_eof()
        _client_gone(s)
    return behaviour


def flood_body(head: bytes, frame: bytes) -> Behaviour:
    """A complete head, then ``frame`` as fast as the client reads, until it hangs up."""
    def behaviour(s: HttpSession, req: Request) -> None:
        s.send(head)
        try:
            while True:
                s.send(frame)
        except OSError:
            _client_gone(s)
    return behaviour


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[Callable[..., ScriptedHttp]]:
    """``fake(routes, tls=None)``: a started ScriptedHttp, closed (and checked) after the test."""
    servers: list[ScriptedHttp] = []

    def make(routes: dict[str, Behaviour], **kw: object) -> ScriptedHttp:
        server = ScriptedHttp(routes, name=f"fake{len(servers)}", **kw)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
    for server in servers:
        assert not server.errors, f"{server.name} failed: {server.errors}"


def make_target(urls: str | list[str], **extra: object) -> HttpCacheTarget:
    entry: dict[str, object] = {"name": "edge", "type": "http_cache", "timeout": "1s", **extra}
    entry["url" if isinstance(urls, str) else "urls"] = urls
    target = build_config({"targets": [entry]}, "test").config.targets[0]
    assert isinstance(target, HttpCacheTarget)
    return target


@pytest.fixture
def source() -> Iterator[Callable[..., HttpCacheSource]]:
    """``source(urls, **config)``: an HttpCacheSource for one http_cache target, closed after the test."""
    made: list[HttpCacheSource] = []

    def make(urls: str | list[str], **extra: object) -> HttpCacheSource:
        src = HttpCacheSource(make_target(urls, **extra))
        made.append(src)
        return src

    yield make
    for src in made:
        src.close()


def poll(src: HttpCacheSource) -> Reading:
    return src.poll(time.monotonic() + src.target.timeout)


def poll_error(src: HttpCacheSource) -> PollError:
    with pytest.raises(PollError) as info:
        poll(src)
    return info.value


def by_url(reading: Reading, url: str) -> dict[str, float]:
    """The samples of one URL as {family: value}; failures as ``failures.<reason>``, info labels as ``info.<k>``."""
    out: dict[str, float] = {}
    for s in reading.samples:
        labels = dict(s.labels)
        if labels.get("url") != url:
            continue
        if s.family == "http_cache_probe_failures_total":
            out[f"failures.{labels['reason']}"] = s.value
        elif s.family == "http_cache_response_info":
            out.update({f"info.{k}": v for k, v in labels.items() if k != "url"})  # type: ignore[misc]
        else:
            out[s.family] = s.value
    return out


def ok_response(src: HttpCacheSource, url: str) -> dict[str, float]:
    """Poll once; the probe of ``url`` must have succeeded."""
    got = by_url(poll(src), url)
    assert got["http_cache_probe_success"] == 1, got
    return got


def counted_failure(source, server: ScriptedHttp, path: str, **extra: object) -> str:
    """Probe ``path`` next to a good URL of the same server in one target: the good one succeeds,
    the bad one is counted once under one reason, which is returned."""
    server.routes.setdefault("/good", answer("200 OK", [("X-Cache-Status", "HIT")], b"fine"))
    bad, good = server.url(path), server.url("/good")
    reading = poll(source([bad, good], **extra))
    b, g = by_url(reading, bad), by_url(reading, good)
    assert (g["http_cache_probe_success"], g["http_cache_response_status_code"], g["info.cache_status"]) == (
        1, 200, "hit"), g
    assert b["http_cache_probe_success"] == 0, b
    assert "http_cache_response_status_code" not in b
    assert b["http_cache_probes_total"] == 1
    reasons = {k.removeprefix("failures."): v for k, v in b.items() if k.startswith("failures.")}
    assert len(reasons) == 1 and list(reasons.values()) == [1], reasons
    assert reading.details["failed"] == 1
    return next(iter(reasons))


def alone_and_beside_a_good_url(source, server: ScriptedHttp, path: str, **extra: object) -> str:
    """The reason of a probe of ``path`` alone (a PollError) and beside a good URL (counted); both must agree."""
    alone = poll_error(source(server.url(path), **extra))
    assert counted_failure(source, server, path, **extra) == alone.reason
    return alone.reason


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.monotonic()
    try:
        result: object = fn()
    except PollError as err:
        result = err
    return result, time.monotonic() - t0


# --- huge and too many headers ----------------------------------------------------------------


def test_huge_valid_response_keeps_the_series_of_a_small_one(fake, source) -> None:
    """The hostile-but-valid case of this source: a header block just under max_header_bytes (a
    long valid Cache-Status list whose nearest cache has a 10 KB name) and a 1 GB body. What an
    http_cache target exports is fixed by its config (the URLs) and bounded label values (the
    layer is cut at 64 characters), so the series are exactly those of a small answer."""
    big_name = "edge-" + "x" * 10_000
    members = ", ".join(f"cache{i}; fwd=miss" for i in range(2400)) + f", {big_name}; hit; ttl=30"
    assert 50_000 < len(members) < 60 * 1024
    huge_head = head_bytes("200 OK", [("Cache-Status", members), ("Content-Length", str(2**30))], None)
    server = fake({"/huge": raw(huge_head, end="stall"),
                   "/small": answer("200 OK", [("Cache-Status", "edge; hit; ttl=30")], b"ok")})
    reading = poll(source([server.url("/huge"), server.url("/small")]))
    huge, small = by_url(reading, server.url("/huge")), by_url(reading, server.url("/small"))
    assert huge["http_cache_probe_success"] == 1 and huge["info.cache_status"] == "hit"
    assert set(huge) == set(small)
    assert len(huge["info.layer"]) <= 64 and huge["info.layer"].startswith("edge-x")
    assert not reading.samples.dropped and not reading.samples.implausible


def test_one_100_kib_header_line_is_a_protocol_error(fake, source) -> None:
    """http.client refuses a header line over 64 KiB (LineTooLong) before the guard's byte budget
    (max_header_bytes 64 KiB + 64 KiB drain) is reached: a malformed reply, ``protocol``."""
    server = fake({"/": raw(head_bytes("200 OK", [("X-Big", "a" * 100 * 1024)]))})
    src = source(server.url("/"))
    err = poll_error(src)
    assert err.reason == "protocol", err
    assert "line" in str(err).lower()
    assert src.guard.received <= 64 * 1024 + 2 * io.DEFAULT_BUFFER_SIZE


def test_one_huge_header_line_over_a_small_max_header_bytes_is_too_large(fake, source) -> None:
    """With max_header_bytes 4 KiB the same line is cut by the guard's byte budget for the head
    (max_header_bytes plus one read buffer) long before http.client's 64 KiB line limit."""
    server = fake({"/": raw(head_bytes("200 OK", [("X-Big", "a" * 100 * 1024)]))})
    src = source(server.url("/"), max_header_bytes="4KiB")
    err = poll_error(src)
    assert err.reason == "too_large", err
    assert src.guard.received <= 4 * 1024 + 2 * io.DEFAULT_BUFFER_SIZE


def test_200_header_lines_are_a_protocol_error(fake, source) -> None:
    server = fake({"/": answer("200 OK", [(f"X-H{i}", "v") for i in range(200)])})
    err = poll_error(source(server.url("/")))
    assert err.reason == "protocol", err
    assert "100 headers" in str(err)


def test_header_block_over_max_header_bytes_is_too_large(fake, source) -> None:
    """50 lines of 100 bytes: each line and the count are fine, the 5 KB block is not (limit 2 KiB)."""
    server = fake({"/": answer("200 OK", [(f"X-H{i}", "v" * 100) for i in range(50)])})
    src = source(server.url("/"), max_header_bytes="2KiB")
    err = poll_error(src)
    assert err.reason == "too_large", err
    # The same block is fine under the default limit (64 KiB).
    assert ok_response(source(server.url("/")), server.url("/"))["http_cache_response_status_code"] == 200


# --- repeated and invalid caching headers --------------------------------------------------------


def _probe_headers(fake, source, headers: list[tuple[str, str]], status: str = "200 OK") -> tuple[Reading, dict]:
    server = fake({"/": answer(status, headers, b"ok")})
    url = server.url("/")
    reading = poll(source(url))
    got = by_url(reading, url)
    assert got["http_cache_probe_success"] == 1, got
    return reading, got


def test_repeated_cache_status_lines_form_one_list(fake, source) -> None:
    reading, got = _probe_headers(fake, source, [("Cache-Status", "A; fwd=uri-miss"), ("Cache-Status", "B; hit")])
    assert (got["info.indicator"], got["info.layer"], got["info.cache_status"]) == ("cache-status", "B", "hit")
    assert got["http_cache_response_from_cache"] == 1
    assert reading.malformed_fields == 0


def test_repeated_conflicting_age_lines_are_ignored_and_counted(fake, source) -> None:
    reading, got = _probe_headers(fake, source, [("Age", "10"), ("Age", "20"), ("X-Cache-Status", "MISS")])
    assert reading.malformed_fields == 1
    assert "http_cache_response_age_seconds" not in got
    # Age would have said "hit"; ignored, the verdict is X-Cache-Status's miss.
    assert (got["info.indicator"], got["info.cache_status"]) == ("x-cache-status", "miss")
    assert got["http_cache_response_from_cache"] == 0


def test_repeated_identical_age_lines_are_one_value(fake, source) -> None:
    reading, got = _probe_headers(fake, source, [("Age", "7"), ("Age", "7")])
    assert reading.malformed_fields == 0
    assert got["http_cache_response_age_seconds"] == 7
    assert (got["info.indicator"], got["http_cache_response_from_cache"]) == ("age", 1)


@pytest.mark.parametrize("value", ["hit;;;", 'Edge; detail="unterminated', "Cach\xe9; hit", "Edge; hit, ,",
                                   "Edge; ttl=1e3"],
                         ids=["empty-params", "unterminated-string", "non-ascii", "empty-member", "bad-number"])
def test_invalid_cache_status_is_ignored_and_other_indicators_still_count(fake, source, value: str) -> None:
    reading, got = _probe_headers(fake, source, [("Cache-Status", value), ("X-Cache-Status", "HIT")])
    assert reading.malformed_fields == 1
    assert (got["info.indicator"], got["info.layer"], got["info.cache_status"]) == (
        "x-cache-status", "x-cache-status", "hit")
    assert got["http_cache_response_from_cache"] == 1


def test_invalid_cache_status_alone_says_nothing(fake, source) -> None:
    reading, got = _probe_headers(fake, source, [("Cache-Status", "hit;;;")], "503 Service Unavailable")
    assert reading.malformed_fields == 1
    assert "http_cache_response_from_cache" not in got  # unknown: absent, not 0
    assert (got["info.indicator"], got["info.cache_status"]) == ("none", "unknown")
    assert got["http_cache_error_response"] == 1
    assert "http_cache_error_from_cache" not in got  # an error nothing vouches for: cannot tell


def test_cache_status_inner_list_member_is_skipped(fake, source) -> None:
    """An inner list is valid RFC 8941 but not a cache: skipped, the next member decides."""
    reading, got = _probe_headers(fake, source, [("Cache-Status", "(a b); hit, Edge; fwd=uri-miss")])
    assert reading.malformed_fields == 0
    assert (got["info.indicator"], got["info.layer"], got["info.cache_status"]) == ("cache-status", "Edge", "miss")
    assert got["http_cache_response_from_cache"] == 0


@pytest.mark.parametrize(("value", "age", "malformed"), [
    ("-5", None, 1),
    ("1e3", None, 1),
    ("9" * 40, AGE_CAP, 0),  # RFC 9111 1.2.2: "at least 2^31"
    ("0" * 39 + "5", 5, 0),  # leading zeros are still 5
    ("2147483648", AGE_CAP, 0),
    ("\xd9\xa5", None, 1),  # U+0665 (an Arabic-Indic five) in UTF-8, as http.client decodes it (latin-1)
], ids=["negative", "exponent", "40-digits", "leading-zeros", "2^31", "utf8-digit"])
def test_age_values(fake, source, value: str, age: int | None, malformed: int) -> None:
    reading, got = _probe_headers(fake, source, [("Age", value)])
    assert reading.malformed_fields == malformed
    assert got.get("http_cache_response_age_seconds") == age
    if age is None:
        assert "http_cache_response_from_cache" not in got
    else:
        assert (got["info.indicator"], got["http_cache_response_from_cache"]) == ("age", 1)


def test_age_with_a_non_ascii_digit_is_malformed() -> None:
    """str.isdigit() accepts U+0665; HTTP's DIGIT does not (only reachable with a decoded header)."""
    v = classify([("Age", "\u0665")], 200)
    assert (v.age, v.malformed, v.state) == (None, ["age"], "unknown")


# --- garbage instead of an HTTP response ------------------------------------------------------------


@pytest.mark.parametrize(("reply", "end", "reason"), [
    (b"HTTP/1.1 abc\r\n\r\n", "fin", "protocol"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "fin", "protocol"),
    (b"", "fin", "reset"),  # http.client: RemoteDisconnected, a ConnectionResetError
    (b"", "rst", "reset"),
    (b"HTTP/1.1 200 OK\r\nX-Cache-Status: HI", "rst", "reset"),  # reset in the middle of the headers
    # A FIN before the empty line: http.client takes EOF for the end of the headers, and the
    # probe used to report a 503 "from the cache" with a cut "Age: 1" (of "Age: 1000").
    (b"HTTP/1.1 503 Service Unavailable\r\nX-Cache-Status: HIT\r\nAge: 1", "fin", "reset"),
    (b"HTTP/1.1 503 Service Unavailable\r\n", "fin", "reset"),
], ids=["bad-status-code", "ssh-banner", "empty-then-fin", "empty-then-rst", "rst-mid-headers", "fin-mid-headers",
        "fin-after-status-line"])
def test_garbage_status_line_or_early_close(fake, source, reply: bytes, end: str, reason: str) -> None:
    server = fake({"/": raw(reply, end)})
    assert alone_and_beside_a_good_url(source, server, "/") == reason


def test_interim_1xx_responses_are_skipped(fake, source) -> None:
    """A 103 Early Hints (or 102) before the answer: the answer is the 503 after it, not the 103, and the
    next probe on the kept-alive connection gets its own response."""
    interim = (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
               b"HTTP/1.1 102 Processing\r\n\r\n")

    def early_hints(s: HttpSession, req: Request) -> None:
        s.send(interim)
        time.sleep(0.01)  # the answer in a later segment: a left-over would be read by the next request
        s.send(head_bytes("503 Service Unavailable", [("X-Cache-Status", "HIT")], 4) + b"down")

    server = fake({"/": early_hints, "/good": answer("200 OK", [("X-Cache-Status", "MISS")], b"ok")})
    src = source([server.url("/"), server.url("/good")])
    for _ in range(2):
        reading = poll(src)
        got, good = by_url(reading, server.url("/")), by_url(reading, server.url("/good"))
        assert (got["http_cache_response_status_code"], got["http_cache_error_from_cache"]) == (503, 1)
        assert (good["http_cache_response_status_code"], good["info.cache_status"]) == (200, "miss")
    assert server.connections == 1


def test_endless_interim_responses_are_cut(fake, source) -> None:
    def flood(s: HttpSession, req: Request) -> None:
        while True:
            s.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" * 100)

    server = fake({"/": flood})
    src = source(server.url("/"), max_header_bytes="4KiB")
    err, seconds = timed(lambda: poll(src))
    assert isinstance(err, PollError) and err.reason == "too_large", err
    assert seconds < 0.5
    assert src.guard.received <= 4 * 1024 + 2 * io.DEFAULT_BUFFER_SIZE


def test_complete_head_then_fin_is_an_answer(fake, source) -> None:
    """The control for fin-mid-headers: a complete head without a body, then FIN, is a valid response."""
    server = fake({"/": raw(b"HTTP/1.1 503 Service Unavailable\r\nX-Cache-Status: HIT\r\nConnection: close\r\n\r\n")})
    got = ok_response(source(server.url("/")), server.url("/"))
    assert (got["http_cache_response_status_code"], got["http_cache_error_from_cache"]) == (503, 1)


# --- slow heads, slow and endless bodies ------------------------------------------------------------------


def test_trickled_head_times_out_at_the_request_timeout(fake, source) -> None:
    server = fake({"/slow": trickle_head(head_bytes("200 OK", [("X-Cache-Status", "HIT")]), every=0.3)})
    src = source(server.url("/slow"))  # timeout 1s per request
    err, seconds = timed(lambda: poll(src))
    assert isinstance(err, PollError) and err.reason == "timeout", err
    assert 0.9 < seconds < 1.5, seconds


def test_trickled_head_does_not_break_the_other_urls(fake, source) -> None:
    server = fake({"/slow": trickle_head(head_bytes("200 OK"), every=0.3)})
    reason, seconds = timed(lambda: counted_failure(source, server, "/slow"))
    assert reason == "timeout"
    assert seconds < 1.6, seconds


BIG_HEAD = head_bytes("200 OK", [("X-Cache-Status", "HIT"), ("Content-Type", "application/octet-stream")],
                      content_length=10 * 10**6)


@pytest.mark.parametrize("behaviour", [trickle_body(BIG_HEAD), stall_body(BIG_HEAD)], ids=["trickled", "never-sent"])
def test_slow_large_body_is_not_waited_for(fake, source, behaviour: Behaviour) -> None:
    """Headers complete, a 10 MB body trickled or never sent: the answer is the head; the connection
    is closed at once instead of reading the body (the server sees the client hang up)."""
    server = fake({"/": behaviour})
    src = source(server.url("/"))
    reading, seconds = timed(lambda: poll(src))
    assert isinstance(reading, Reading), reading
    got = by_url(reading, server.url("/"))
    assert (got["http_cache_probe_success"], got["http_cache_response_status_code"]) == (1, 200)
    assert got["http_cache_response_from_cache"] == 1
    assert seconds < 0.3, seconds
    assert got["http_cache_probe_duration_seconds"] < 0.3
    assert server.client_gone.wait(1.0), "the client kept the connection open"
    assert src.pool == {} or all(c.sock is None for c in src.pool.values())
    assert src.guard.received < len(BIG_HEAD) + io.DEFAULT_BUFFER_SIZE


@pytest.mark.parametrize("framing", ["chunked", "content-length", "until-close"])
def test_endless_fast_body_is_not_read(fake, source, framing: str) -> None:
    """A 1 GB body sent as fast as the client reads: success from the head; the client read at most one
    buffer of it and the server could only fill the socket buffers before the client hung up."""
    frame = bytes(64 * 1024)
    if framing == "chunked":  # one chunk declaring 1 GB
        head = head_bytes("200 OK", [("Transfer-Encoding", "chunked")], None) + b"40000000\r\n"
    elif framing == "content-length":
        head = head_bytes("200 OK", content_length=2**30)
    else:
        head = head_bytes("200 OK", [("Connection", "close")], None)
    server = fake({"/": flood_body(head, frame)})
    src = source(server.url("/"))
    got = ok_response(src, server.url("/"))
    assert got["http_cache_response_status_code"] == 200
    assert src.guard.received <= len(head) + io.DEFAULT_BUFFER_SIZE
    assert server.client_gone.wait(2.0), "the client kept reading or kept the connection open"
    assert server.body_sent < 32 * 2**20, server.body_sent


def test_small_declared_body_is_drained_and_the_connection_reused(fake, source) -> None:
    server = fake({"/": answer("200 OK", [("X-Cache-Status", "MISS")], b"0123456789abcdefghij")})
    src = source(server.url("/"))
    for _ in range(3):
        reading = poll(src)
        assert by_url(reading, server.url("/"))["http_cache_response_status_code"] == 200
    assert len(server.paths()) == 3
    assert server.connections == 1
    assert reading.details["connections_opened"] == 1
    assert by_url(reading, server.url("/"))["http_cache_probes_total"] == 3


def test_small_declared_body_never_sent_does_not_hold_the_probe(fake, source) -> None:
    """20 bytes declared, none sent: the head is the answer; draining for keep-alive must not take the
    whole request timeout, and the connection is given up instead."""
    server = fake({"/": stall_body(head_bytes("200 OK", [("X-Cache-Status", "HIT")], content_length=20))})
    src = source(server.url("/"))
    reading, seconds = timed(lambda: poll(src))
    assert isinstance(reading, Reading), reading
    got = by_url(reading, server.url("/"))
    assert (got["http_cache_probe_success"], got["http_cache_response_status_code"]) == (1, 200)
    assert seconds < 0.8, seconds  # the drain gets 0.5 s, not the request timeout (1 s)
    assert got["http_cache_probe_duration_seconds"] < 0.2  # time to the head, which came at once
    assert server.client_gone.wait(1.0), "the client kept the connection open"


@pytest.mark.parametrize("framing", [
    [("Content-Length", "abc")], [("Content-Length", "5"), ("Content-Length", "7")], [("Content-Length", "-1")],
    [("Transfer-Encoding", "gzip, chunked, identity")], [("Content-Length", "99999999999999999999999999")],
], ids=["not-a-number", "conflicting", "negative", "odd-transfer-coding", "huge"])
def test_invalid_body_framing_is_not_read(fake, source, framing: list[tuple[str, str]]) -> None:
    """Framing headers that make no sense: the head is still the answer; the body is not read and the
    connection is given up (its framing cannot be trusted for the next request)."""
    server = fake({"/": flood_body(head_bytes("200 OK", [("X-Cache-Status", "HIT"), *framing], None), bytes(4096))})
    src = source(server.url("/"))
    got = ok_response(src, server.url("/"))
    assert (got["http_cache_response_status_code"], got["http_cache_response_from_cache"]) == (200, 1)
    assert server.client_gone.wait(2.0)
    assert src.guard.received <= 1024 + io.DEFAULT_BUFFER_SIZE


@pytest.mark.parametrize("lengths", [("5", "7"), ("+7",), ("0_7",)], ids=["conflicting", "plus-sign", "underscore"])
def test_untrusted_content_length_does_not_desync_the_next_probe(fake, source, lengths: tuple[str, ...]) -> None:
    """RFC 9112 6.3: differing or invalid Content-Length values leave the framing unknown. The client
    must not drain by one of them and reuse the connection: the rest of the body would be read as the
    next URL's status line, and one broken URL would break another."""
    head = head_bytes("200 OK", [("X-Cache-Status", "HIT"), *(("Content-Length", n) for n in lengths)], None)

    def behaviour(s: HttpSession, req: Request) -> None:
        s.send(head + b"12345")
        time.sleep(0.02)  # the rest in a later segment, where the next request would read it
        s.send(b"67")

    server = fake({"/bad": behaviour, "/good": answer("200 OK", [("X-Cache-Status", "MISS")], b"fine")})
    bad, good = server.url("/bad"), server.url("/good")
    src = source([bad, good])
    for _ in range(2):
        reading = poll(src)
        b, g = by_url(reading, bad), by_url(reading, good)
        assert (b["http_cache_response_status_code"], b["http_cache_response_from_cache"]) == (200, 1)
        assert (g["http_cache_response_status_code"], g["info.cache_status"]) == (200, "miss"), g


# --- redirects ---------------------------------------------------------------------------------------


def test_redirect_loop_is_a_redirect_failure(fake, source) -> None:
    server = fake({"/a": redirect("/b"), "/b": redirect("/a")})
    src = source(server.url("/a"), max_redirects=5)
    err = poll_error(src)
    assert err.reason == "redirect", err
    assert "loop" in str(err)
    assert server.paths() == ["/a", "/b"]  # the loop was noticed when it closed, not after 5 hops
    assert counted_failure(source, server, "/a", max_redirects=5) == "redirect"


def test_redirect_chain_longer_than_max_redirects(fake, source) -> None:
    routes: dict[str, Behaviour] = {f"/r{i}": redirect(f"/r{i + 1}", "301 Moved Permanently") for i in range(10)}
    server = fake(routes)
    err = poll_error(source(server.url("/r0"), max_redirects=3))
    assert err.reason == "redirect", err
    assert "more than 3 redirects" in str(err)
    assert server.paths() == ["/r0", "/r1", "/r2", "/r3"]


def test_redirects_within_max_redirects_are_followed(fake, source) -> None:
    server = fake({"/r0": redirect("/r1", "307 Temporary Redirect"), "/r1": redirect("/end", "308 Permanent Redirect"),
                   "/end": answer("503 Service Unavailable", [("X-Cache-Status", "HIT")], b"down")})
    got = ok_response(source(server.url("/r0"), max_redirects=2), server.url("/r0"))
    assert (got["http_cache_response_status_code"], got["http_cache_error_from_cache"]) == (503, 1)
    assert server.paths() == ["/r0", "/r1", "/end"]
    assert server.connections == 1  # same origin: the kept-alive connection carried all three


def test_max_redirects_0_answers_with_the_redirect_itself(fake, source) -> None:
    server = fake({"/a": redirect("/b"), "/b": redirect("/a")})
    got = ok_response(source(server.url("/a")), server.url("/a"))  # max_redirects defaults to 0
    assert got["http_cache_response_status_code"] == 302
    assert got["http_cache_error_response"] == 0
    assert server.paths() == ["/a"]


@pytest.mark.parametrize("location", ["http://[::1", "javascript:x", "http://127.0.0.1:99999/", "http://127.0.0.1:0/",
                                      "ftp://127.0.0.1/x", "http://:80/x", "http://127.0.0.1/a\x01b"],
                         ids=["bad-ipv6", "javascript", "bad-port", "port-0", "ftp", "no-host", "control-char"])
def test_unusable_location_is_a_protocol_failure(fake, source, location: str) -> None:
    server = fake({"/": redirect(location)})
    assert alone_and_beside_a_good_url(source, server, "/", max_redirects=3) == "protocol"


def test_redirect_without_location_is_the_answer(fake, source) -> None:
    server = fake({"/": answer("302 Found")})
    got = ok_response(source(server.url("/"), max_redirects=3), server.url("/"))
    assert got["http_cache_response_status_code"] == 302


# --- TLS ------------------------------------------------------------------------------------------------


def server_tls(tls_files: TLSFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    return ctx


def test_https_to_a_plain_http_server_is_a_tls_failure(fake, source) -> None:
    """The plain server answers the ClientHello with a text 400 (as nginx does): the client's TLS layer
    sees a record that is not TLS ("wrong version number"), an ssl.SSLError: ``tls``. (A server that
    reset the connection instead would be ``reset``: the handshake never got a TLS answer.)"""
    server = fake({"/": answer("200 OK")})
    err = poll_error(source(server.url("/", "https")))
    assert err.reason == "tls", err
    assert server.paths() == []


def test_https_to_a_server_that_resets_is_reset(source) -> None:
    """A server that resets the connection on the ClientHello: no TLS answer at all, ``reset``."""

    class Resetter(ScriptedHttp):
        def _handle(self, s: HttpSession) -> None:  # type: ignore[override]
            s.read_exact(1)
            s.close_reset()
    resetter = Resetter({}, name="resetter")
    try:
        err = poll_error(source(resetter.url("/", "https")))
        assert err.reason == "reset", err
    finally:
        resetter.close()
    assert not resetter.errors


def test_https_with_an_untrusted_certificate_is_a_tls_failure(fake, source, tls_files: TLSFiles) -> None:
    server = fake({"/": answer("200 OK")}, tls=server_tls(tls_files))
    err = poll_error(source(server.url("/", "https")))
    assert err.reason == "tls", err
    assert "certificate verify failed" in str(err)
    err = poll_error(source(server.url("/", "https"), tls={"ca_file": tls_files.other_ca}))
    assert err.reason == "tls", err
    assert server.paths() == []


def test_https_with_the_ca_configured_succeeds(fake, source, tls_files: TLSFiles) -> None:
    server = fake({"/": answer("200 OK", [("X-Cache-Status", "HIT")], b"ok")}, tls=server_tls(tls_files))
    src = source(server.url("/", "https"), tls={"ca_file": tls_files.ca})
    for _ in range(2):
        got = ok_response(src, server.url("/", "https"))
        assert (got["http_cache_response_status_code"], got["http_cache_response_from_cache"]) == (200, 1)
    assert server.connections == 1


def test_tls_failure_beside_a_good_url(fake, source, tls_files: TLSFiles) -> None:
    bad = fake({"/": answer("200 OK")}, tls=server_tls(tls_files))
    good = fake({"/": answer("200 OK", [("X-Cache-Status", "HIT")], b"ok")})
    reading = poll(source([bad.url("/", "https"), good.url("/")]))
    assert by_url(reading, good.url("/"))["http_cache_probe_success"] == 1
    b = by_url(reading, bad.url("/", "https"))
    assert (b["http_cache_probe_success"], b["failures.tls"]) == (0, 1)


# --- one bad URL among good ones ---------------------------------------------------------------------------


def test_refused_url_beside_a_good_one(fake, source) -> None:
    server = fake({"/": answer("200 OK", [("X-Cache-Status", "HIT")], b"ok")})
    refused, good = f"http://127.0.0.1:{free_port()}/", server.url("/")
    src = source([refused, good])
    for round_ in (1, 2):
        reading = poll(src)
        b, g = by_url(reading, refused), by_url(reading, good)
        assert (g["http_cache_probe_success"], g["http_cache_response_status_code"]) == (1, 200)
        assert (b["http_cache_probe_success"], b["failures.refused"], b["http_cache_probes_total"]) == (
            0, round_, round_)
        assert "http_cache_response_status_code" not in b
        assert reading.details["failed"] == 1
    assert src.last_failure is None


def test_when_every_url_fails_the_poll_fails_with_the_first_reason(fake, source) -> None:
    server = fake({"/garbage": raw(b"SSH-2.0-OpenSSH_9.6\r\n")})
    refused, garbage = f"http://127.0.0.1:{free_port()}/", server.url("/garbage")
    src = source([refused, garbage])
    err = poll_error(src)
    assert err.reason == "refused", err
    assert src.last_failure is err
    assert src.states[garbage].failures == {"protocol": 1}  # counted although the poll failed
    assert poll_error(source([garbage, refused])).reason == "protocol"


# --- hostile cache names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "layer", "malformed"), [
    ('"' + "a" * 1024 + '"; hit', "a" * MAX_LAYER_LENGTH, 0),
    ("Edge" + "x" * 1020 + "; hit", ("Edge" + "x" * 1020)[:MAX_LAYER_LENGTH], 0),
    ("Edge\x07\x1b[31m; hit", "x-cache-status", 1),  # control characters: not RFC 8941, ignored
    ('"Edge\\\\\\"}\\\\n"; hit', 'Edge\\"}\\n', 0),  # escapes that would break a label if not escaped
], ids=["1KiB-string", "1KiB-token", "control-chars", "label-breaking"])
def test_hostile_cache_name_makes_a_short_printable_layer(fake, source, value: str, layer: str, malformed: int) -> None:
    reading, got = _probe_headers(fake, source, [("Cache-Status", value), ("X-Cache-Status", "HIT")])
    assert got["info.layer"] == layer
    assert len(got["info.layer"]) <= MAX_LAYER_LENGTH and got["info.layer"].isprintable()
    assert reading.malformed_fields == malformed


# --- secrets ------------------------------------------------------------------------------------------------

USER = "prober"
SECRET = "Http-c4che-s3cr3t-PW-do-not-leak"
SECRET_ENV = "FAULT_TEST_HTTP_CACHE_PASSWORD"
TOKEN = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()


def _echo_auth_in_status(s: HttpSession, req: Request) -> None:
    """A hostile server that puts the Authorization header into a broken status line."""
    s.send(f"HTTP/1.1 abc {req.headers.get('authorization', '')} {SECRET}\r\n\r\n".encode())
    s.close_graceful()


def _echo_auth_in_cache_status(s: HttpSession, req: Request) -> None:
    """A hostile server that names its cache after the Authorization header (and the password)."""
    auth = req.headers.get("authorization", "").removeprefix("Basic ")
    s.send(head_bytes("200 OK", [("Cache-Status", f'"{auth}"; hit, "{SECRET}"; fwd=miss, "x{SECRET}"; hit')]))


def _everything(reading: Reading | None, errors: list[PollError]) -> str:
    parts = [str(e) for e in errors] + [e.detail for e in errors]
    if reading is not None:
        parts += [f"{s.family}{s.labels}" for s in reading.samples]
        parts.append(repr(reading.details))
    return "\n".join(parts)


def test_password_is_sent_as_basic_auth_and_never_shows(fake, source, monkeypatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    server = fake({"/ok": answer("200 OK", [("X-Cache-Status", "HIT")], b"ok"), "/status": _echo_auth_in_status,
                   "/layer": _echo_auth_in_cache_status, "/redirect": redirect(f"http://{SECRET}@[::1")})
    creds = {"username": USER, "password_env": SECRET_ENV, "max_redirects": 2}
    urls = [server.url(p) for p in ("/ok", "/status", "/layer", "/redirect")]
    reading = poll(source(urls, **creds))
    assert by_url(reading, urls[0])["http_cache_probe_success"] == 1
    assert by_url(reading, urls[1])["failures.protocol"] == 1
    layer = by_url(reading, urls[2])
    assert (layer["http_cache_probe_success"], layer["info.layer"]) == (1, "x<redacted>")
    assert by_url(reading, urls[3])["failures.protocol"] == 1
    assert {r.headers.get("authorization") for r in server.requests} == {f"Basic {TOKEN}"}
    errors = [poll_error(source(url, **creds)) for url in urls[1::2]]
    text = _everything(reading, errors)
    for secret in (SECRET, TOKEN, SECRET[:12], TOKEN[:12]):
        assert secret not in text, f"{secret!r} leaked:\n{text}"


def test_credentials_are_not_sent_to_another_origin_on_redirect(fake, source, monkeypatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    elsewhere = fake({"/": answer("200 OK")})
    server = fake({"/": redirect(elsewhere.url("/"))})
    got = ok_response(source(server.url("/"), username=USER, password_env=SECRET_ENV, max_redirects=1),
                      server.url("/"))
    assert got["http_cache_response_status_code"] == 200
    assert server.requests[0].headers.get("authorization") == f"Basic {TOKEN}"
    assert elsewhere.requests[0].headers.get("authorization") is None


# --- classify never raises ---------------------------------------------------------------------------------

NAMES = st.sampled_from(["Cache-Status", "cache-status", "X-Cache-Status", "CF-Cache-Status", "X-Cache", "Age",
                         "Cache-Control", "Expires", "Date", "Location", " age ", "X-Other"]) | st.text(max_size=12)
VALUE_ALPHABET = st.characters(min_codepoint=0, max_codepoint=255)  # what http.client hands over (latin-1)
VALUES = st.text(VALUE_ALPHABET, max_size=60) | st.lists(
    st.sampled_from(["hit", "HIT", "miss", "MISS", ",", ";", "=", '"', "\\", "(", ")", " ", "fwd=", "uri-miss",
                     "ttl=", "-1", "1e3", "999999999999999999999", "?1", "stored", "*", ":", "Edge", "\x00", "\xe9",
                     "max-age=", "s-maxage", "Hit from cloudfront", "TCP_MEM_HIT", "Thu, 01 Jan 1970 00:00:00 GMT"]),
    max_size=12).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=st.lists(st.tuples(NAMES, VALUES), max_size=8), status=st.integers(100, 599))
def test_classify_never_raises(fields: list[tuple[str, str]], status: int) -> None:
    v = classify(fields, status)
    assert v.state in {"hit", "miss", "unknown"}
    assert len(v.layer) <= MAX_LAYER_LENGTH and v.layer.isprintable()
    assert v.age is None or 0 <= v.age <= AGE_CAP
    assert set(v.malformed) <= {"cache-status", "age", "cache-control"}
    assert (v.state == "unknown") == (v.indicator == "none")

