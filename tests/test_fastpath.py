"""The /metrics fast path: answered on the event loop thread when the body is already built and no
bcrypt check is needed, otherwise by the worker pool -- with the same bytes on the wire either way.

In-process servers on loopback (no subprocess): cheap, in the fast tier.
"""

from __future__ import annotations

import base64
import gzip
import socket
import threading
import time
from pathlib import Path

import bcrypt
import pytest
import yaml
from conftest import put_samples

from exporter import webconfig
from exporter.config import LoadResult, default_config
from exporter.daemon import Daemon
from exporter.exposition import Exposition
from exporter.http import Endpoints, make_server
from exporter.httpserver import Limits, Server
from exporter.selfmetrics import Registry
from exporter.snapshot import Samples, Snapshot
from exporter.store import SnapshotStore
from exporter.webconfig import WebConfigFile

PASSWORD = "s3cret-scrape"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def fetch(port: int, headers: dict[str, str] | None = None, method: str = "GET") -> bytes:
    """The whole raw response to one request (the connection closed by us after it)."""
    lines = [f"{method} /metrics HTTP/1.1", "Host: x", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while chunk := s.recv(65536):
            out += chunk
    return out


def exposition() -> Exposition:
    """One stored target; the per-scrape tail made deterministic (no process metrics, the render
    summary kept but not exported) so that two answers can be compared byte for byte."""
    store = SnapshotStore()
    samples = Samples()
    for i in range(50):
        samples.add("cache_up", 1, (("store", "redis"), ("i", str(i))))
    put_samples(store, "r", samples)
    exp = Exposition(store)
    exp.process_registry = Registry()
    exp.registry.unregister(exp.render_time.collect)
    return exp


def endpoints(exp: Exposition, web: WebConfigFile | None = None) -> Endpoints:
    return Endpoints(metrics=lambda c: exp.body_parts(compress=c), targets=lambda: [], ready=lambda: True,
                     reload=lambda: (True, ""), web=web,
                     cached_metrics=lambda c: exp.cached_body_parts(compress=c))


def renders(exp: Exposition) -> float:
    return exp.render_time.count


def serve_both(ep: Endpoints) -> tuple[Server, Server]:
    """The same endpoints served with the fast path and without it, to compare their answers."""
    fast = Server([("127.0.0.1", 0)], ep, Limits(), fast_handler=ep.fast)
    slow = Server([("127.0.0.1", 0)], ep, Limits())
    for srv in (fast, slow):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    return fast, slow


def test_fast_path_answers_byte_identical_plain_and_gzip() -> None:
    exp = exposition()
    ep = endpoints(exp)
    fast, slow = serve_both(ep)
    try:
        fport, sport = fast.server_address[1], slow.server_address[1]
        assert fetch(fport).startswith(b"HTTP/1.1 200")  # cold: built by the pool
        assert fast.fast_served == 0
        for headers in ({}, {"Accept-Encoding": "gzip"}):
            want = fetch(sport, headers)  # builds this encoding's body if needed
            before = renders(exp)
            got = fetch(fport, headers)
            assert fast.fast_served >= 1
            assert got == want
            assert renders(exp) == before + 1  # the render summary counts fast answers too
            served = fast.fast_served
            assert fetch(fport, headers, method="HEAD") == want.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
            assert fast.fast_served == served + 1
        gz = fetch(fport, {"Accept-Encoding": "gzip"})
        assert b"Content-Encoding: gzip" in gz and b"Vary: Accept-Encoding" in gz
        assert b'cache_up{target="r",store="redis",i="7"} 1.0' in gzip.decompress(gz.partition(b"\r\n\r\n")[2])
        # gzip built last: the plain pieces were dropped, so a plain request goes to the pool again.
        served = fast.fast_served
        assert fetch(fport).startswith(b"HTTP/1.1 200")
        assert fast.fast_served == served
        # A new poll: the cached body is stale, the pool answers.
        exp.store.put("s", Snapshot("s", "redis", True, 0.0, Samples()), {})
        fetch(fport, {"Accept-Encoding": "gzip"})
        assert fast.fast_served == served
    finally:
        for srv in (fast, slow):
            srv.shutdown()
            srv.server_close()


def test_fast_path_with_basic_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first (cache cold) request goes through the pool and bcrypt; once those credentials are
    verified the fast path answers them, with the web config's headers; a wrong password or none
    is never answered by the fast path, and every refusal is counted."""
    monkeypatch.setattr(webconfig, "CHECK_EVERY", 3600.0)  # no file look falls due mid-test
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": {"prom": HASH},
                                    "http_server_config": {"headers": {"X-Frame-Options": "deny"}}}))
    web = WebConfigFile(str(path))
    exp = exposition()
    ep = endpoints(exp, web)
    fast, slow = serve_both(ep)
    try:
        fport, sport = fast.server_address[1], slow.server_address[1]
        good = {"Authorization": basic("prom", PASSWORD), "Accept-Encoding": "gzip"}
        # Neither the body built nor the credentials verified: the pool (bcrypt) answers.
        first = fetch(fport, good)
        assert first.startswith(b"HTTP/1.1 200") and fast.fast_served == 0
        got = fetch(fport, good)
        assert fast.fast_served == 1
        assert got == fetch(sport, good) == first
        assert b"X-Frame-Options: deny" in got
        failures = web.auth_failures
        for bad in ({"Authorization": basic("prom", PASSWORD + "x")}, {"Authorization": basic("nobody", PASSWORD)},
                    {}, {"Authorization": "Basic !!"}):
            out = fetch(fport, bad | {"Accept-Encoding": "gzip"})
            assert out.startswith(b"HTTP/1.1 401"), out[:100]
            assert out == fetch(sport, bad | {"Accept-Encoding": "gzip"})
        assert fast.fast_served == 1
        assert web.auth_failures == failures + 8
    finally:
        for srv in (fast, slow):
            srv.shutdown()
            srv.server_close()


def test_fast_path_error_falls_back_to_the_pool(caplog: pytest.LogCaptureFixture) -> None:
    exp = exposition()
    ep = endpoints(exp)

    def broken(_):
        raise RuntimeError("boom")

    srv = Server([("127.0.0.1", 0)], ep, Limits(), fast_handler=broken)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    caplog.set_level("DEBUG", logger="exporter.httpserver")
    try:
        started = time.monotonic()
        assert fetch(srv.server_address[1]).startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < 30
        assert srv.fast_served == 0
        assert any("fast path failed" in r.getMessage() for r in caplog.records)
    finally:
        srv.shutdown()
        srv.server_close()


def test_make_server_wires_the_fast_path_only_with_cached_bodies() -> None:
    exp = exposition()
    with_cache = make_server("127.0.0.1:0", endpoints(exp))
    without = make_server("127.0.0.1:0", Endpoints(metrics=lambda c: exp.body_parts(compress=c), targets=lambda: [],
                                                   ready=lambda: True, reload=lambda: (True, "")))
    try:
        assert with_cache.fast_handler is not None and without.fast_handler is None
    finally:
        with_cache.server_close()
        without.server_close()


def test_the_daemon_serves_metrics_on_the_fast_path() -> None:
    """The daemon's wiring: once the body is built, scrapes skip the pool."""
    d = Daemon(LoadResult(default_config("127.0.0.1:0", self_scrape=False)), "127.0.0.1:0", None)
    threading.Thread(target=d.server.serve_forever, daemon=True).start()
    try:
        for _ in range(5):
            assert fetch(d.server.server_address[1], {"Accept-Encoding": "gzip"}).startswith(b"HTTP/1.1 200")
        assert d.server.fast_served >= 4  # the first built the body through the pool
    finally:
        d.server.shutdown()
        d.server.server_close()
