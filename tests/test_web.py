"""The exporter's own HTTP server: the web config (TLS, mutual TLS, basic auth, headers, rotation), the
lifecycle gate, the conventional flags, and the server's bounds against slow and hostile clients.

What bad input gets: an invalid web config at start exits 2 naming the problem; one that turns
invalid later keeps the previous config, is logged and counted; wrong or missing credentials get 401
(counted); a request with two different Content-Lengths, or both Content-Length and
Transfer-Encoding, gets 400 and a closed connection; a body is read as a body, never run as a
request; a slow client is cut off after the head timeout; a reset connection is a debug line, never
a traceback.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import bcrypt
import pytest
import yaml
from conftest import REPO, fast_global, free_port, need, redis_target, wait_until
from promlab import PROMETHEUS, Prometheus

from exporter.http import accepts_gzip, parse_listen
from exporter.httpserver import Limits, Response, Server

PASSWORD = "s3cret-scrape"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()  # cost 4: the tests check, not guard


def client_ctx(tls_files, cert: bool = False, ca: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca or tls_files.ca)
    if cert:
        ctx.load_cert_chain(tls_files.client_cert, tls_files.client_key)
    return ctx


def write_web(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def raw(port: int, data: bytes, timeout: float = 5.0, host: str = "127.0.0.1") -> bytes:
    """Send ``data`` on a fresh connection, read until the server closes it or ``timeout`` passes."""
    out = b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
    return out


def statuses(data: bytes) -> list[int]:
    """The status of every response in ``data`` (bodies here are short texts without status lines)."""
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)]


# --- units -----------------------------------------------------------------------------------

@pytest.mark.parametrize("header,want", [
    ("gzip", True), ("gzip, deflate, br", True), ("GZIP", True), ("x-gzip", True), ("gzip;q=0.5", True),
    ("gzip;q=0", False), ("gzip; q=0.000", False), ("deflate, gzip;q=0", False), ("identity", False),
    ("", False), ("*", True), ("*;q=0", False), ("gzip;q=0, *", False), ("gzip;q=nonsense", False),
    ("br;q=1, *;q=0.1", True),
])
def test_accept_encoding_negotiation(header, want):
    assert accepts_gzip(header) is want


@pytest.mark.parametrize("listen,want", [(":9611", ("", 9611)), ("0.0.0.0:1", ("0.0.0.0", 1)),
                                         ("[::1]:9611", ("::1", 9611)), ("localhost:0", ("localhost", 0))])
def test_parse_listen(listen, want):
    assert parse_listen(listen) == want


@pytest.mark.parametrize("listen", ["9611", ":x", ":70000", "[::1:9611", "::1]:9611"])
def test_parse_listen_refuses(listen):
    with pytest.raises(ValueError, match="--web.listen-address"):
        parse_listen(listen)


# --- the lifecycle gate and the flags --------------------------------------------------------

def test_reload_needs_the_lifecycle_flag_sighup_does_not(redis_server, exporter_factory):
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]})
    status, body, _ = ep.get("/-/reload", method="POST")
    assert status == 403 and b"--web.enable-lifecycle" in body and b"SIGHUP" in body
    before = ep.metrics().value("cache_exporter_config_last_reload_success_timestamp_seconds")
    time.sleep(1.1)  # the timestamp has whole-second resolution in the check below
    ep.signal(signal.SIGHUP)
    wait_until(lambda: ep.metrics().value("cache_exporter_config_last_reload_success_timestamp_seconds") > before,
               timeout=10, message="SIGHUP reload")


def test_conventional_flags_and_aliases(redis_server, tmp_path):
    """--config.file, two --web.listen-address, --log.level, --log.format json: all honoured."""
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"global": fast_global(), "targets": [redis_target("a", redis_server)]}))
    p1, p2 = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "--config.file", str(config),
                             "--web.listen-address", f"127.0.0.1:{p1}", "--web.listen-address", f"127.0.0.1:{p2}",
                             "--log.level", "debug", "--log.format", "json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for port in (p1, p2):
            wait_until(lambda port=port: _status(port, "/readyz") == 200, timeout=20, message=f"port {port}")
        body = _get(p2, "/metrics")
        assert "cache_up{" in body and 'target="a"' in body
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    lines = [line for line in out.decode().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON: --log.format json
    assert any(r["level"] == "debug" for r in records)  # --log.level debug
    assert any(f"127.0.0.1:{p1}" in r["msg"] and f"127.0.0.1:{p2}" in r["msg"] for r in records)


def _conn(port: int, host: str = "127.0.0.1", timeout: float = 5) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(host, port, timeout=timeout)


def _status(port: int, path: str, host: str = "127.0.0.1") -> int:
    try:
        c = _conn(port, host, timeout=2)
        c.request("GET", path)
        return c.getresponse().status
    except OSError:
        return 0


def _get(port: int, path: str) -> str:
    c = _conn(port)
    c.request("GET", path)
    return c.getresponse().read().decode()


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_listen_on_every_address_is_ipv6_and_ipv4(redis_server, exporter_factory, tmp_path):
    need(_has_ipv6_loopback(), "no IPv6 loopback on this machine")
    port = free_port()
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"global": fast_global(), "targets": [redis_target("a", redis_server)]}))
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "--config.file", str(config),
                             "--web.listen-address", f":{port}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _status(port, "/healthz") == 200, timeout=20, message="IPv4")
        assert _status(port, "/healthz", host="::1") == 200
    finally:
        proc.terminate()
        proc.wait(15)
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]},
                          args=["--web.listen-address", f"[::1]:{free_port()}"])
    v6 = int(next(a for a in ep.proc.args if a.startswith("[::1]")).rsplit(":", 1)[1])
    assert _status(v6, "/healthz", host="::1") == 200


def test_gzip_only_when_accepted(redis_server, exporter_factory):
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]})
    for header, zipped in (("gzip", True), ("gzip;q=0", False), ("identity", False), ("*;q=0.3", True)):
        status, body, headers = ep.get("/metrics", headers={"Accept-Encoding": header})
        assert status == 200 and headers.get("Vary") == "Accept-Encoding"
        assert (headers.get("Content-Encoding") == "gzip") is zipped, header
        text = gzip.decompress(body) if zipped else body
        assert b"cache_up" in text


# --- framing: bodies are bodies ---------------------------------------------------------------

def reloads(ep) -> int:
    return ep.log().count("config reloaded")


def test_a_body_is_never_run_as_a_request(redis_server, exporter_factory):
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]},
                          args=["--web.enable-lifecycle"])
    smuggled = b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    # A GET with a body that is a request: one response, the body discarded.
    out = raw(ep.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
              % (len(smuggled), smuggled))
    assert statuses(out) == [200]
    # A chunked POST to /-/reload whose chunk is a request: one reload, one response.
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    out = raw(ep.port, b"POST /-/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close"
                       b"\r\n\r\n" + chunk)
    assert statuses(out) == [200]
    wait_until(lambda: reloads(ep) >= 1, timeout=5, message="the one reload logged")
    time.sleep(0.5)
    assert reloads(ep) == 1
    # Keep-alive goes on after a body: two requests, two answers, in order.
    out = raw(ep.port, b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                       b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(out) == [200, 200] and out.endswith(b"ok\n")
    assert reloads(ep) == 2


@pytest.mark.parametrize(("head", "status"), [
    (b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    (b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),  # a coding we do not read
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", 400),  # a TLS hello on plain HTTP
])
def test_ambiguous_or_broken_framing_is_refused(redis_server, exporter_factory, head, status):
    """Each malformed or ambiguous head gets one definite refusal (never a 200, never silence) and
    the connection is closed: nothing after it could be framed safely."""
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]},
                          args=["--web.enable-lifecycle"])
    started = time.monotonic()
    out = raw(ep.port, head, timeout=20)
    assert statuses(out) == [status]
    assert time.monotonic() - started < 10  # closed by the server, not by our 20 s timeout
    assert reloads(ep) == 0
    assert "Traceback" not in ep.log()


def test_oversized_body_is_413_and_closes(redis_server, exporter_factory):
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]},
                          args=["--web.enable-lifecycle"])
    out = raw(ep.port, b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000)
    assert statuses(out) == [413]
    assert reloads(ep) == 0


def test_http10_keep_alive_client_is_answered_and_closed(redis_server, exporter_factory):
    """An HTTP/1.0 client asking for keep-alive gets its answer with Connection: close, and the close
    at once -- not a 30 s hang waiting for a request that will not come."""
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]})
    started = time.monotonic()
    out = raw(ep.port, b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", timeout=20)
    assert statuses(out) == [200] and b"connection: close" in out.lower()
    assert time.monotonic() - started < 10  # closed by the server, not by our 20 s timeout


def test_client_reset_is_not_a_traceback(redis_server, exporter_factory):
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]})
    for payload in (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /metr"):
        s = socket.create_connection(("127.0.0.1", ep.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        s.sendall(payload)
        s.close()
    assert ep.get("/healthz")[0] == 200
    assert "Traceback" not in ep.log()


# --- bounds -----------------------------------------------------------------------------------

def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_backlog_and_a_burst_of_200_connections(redis_server, exporter_factory):
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]})
    if shutil.which("ss"):
        out = subprocess.run(["ss", "-Hltn", f"sport = :{ep.port}"], capture_output=True, text=True).stdout
        assert int(out.split()[2]) >= 1024, out  # Send-Q of a listening socket is its backlog
    socks = []
    try:
        for _ in range(200):  # all connect before any is served: they wait in the backlog
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", ep.port))
            socks.append(s)
        for s in socks:
            s.setblocking(True)
            s.settimeout(30)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answered = 0
        for s in socks:
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            answered += statuses(data) == [200]
    finally:
        for s in socks:
            s.close()
    assert answered == 200


def test_slow_clients_cost_no_threads_and_do_not_lock_out_a_scrape(redis_server, exporter_factory):
    """600 connections that send a request head a byte at a time, over the 512-connection cap:
    threads stay bounded, a scrape still answers at once (the oldest slow connection is closed to
    admit it), and each slow client is cut off by the 10 s head timeout."""
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]})
    threads_before = _threads(ep.proc.pid)
    socks = []
    stop = threading.Event()
    try:
        for _ in range(600):
            s = socket.create_connection(("127.0.0.1", ep.port), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            socks.append(s)

        def dribble() -> None:  # one header byte per connection every 0.5 s, as slowloris does
            while not stop.wait(0.5):
                for s in socks:
                    try:
                        s.send(b"X")
                    except OSError:
                        pass
        threading.Thread(target=dribble, daemon=True).start()
        time.sleep(1)
        threads = _threads(ep.proc.pid)
        assert threads <= max(threads_before, 20) + 8, (threads_before, threads)
        started = time.monotonic()
        status, body, _ = ep.get("/metrics", timeout=10)
        assert status == 200 and b"cache_up" in body
        took = time.monotonic() - started
        assert took < 10, took  # within Prometheus' default scrape timeout
        m = ep.metrics()
        evicted, open_ = m.value("cache_exporter_http_connections_evicted_total"), \
            m.value("cache_exporter_http_connections")
        assert evicted >= 88 and open_ <= 512, (evicted, open_)

        closed: set[int] = set()
        for s in socks:
            s.setblocking(False)

        def all_closed() -> bool:
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    if s.recv(65536) == b"":  # a 408 first, then the end of the stream
                        closed.add(i)
                except BlockingIOError:
                    pass
                except OSError:  # evicted: reset
                    closed.add(i)
            return len(closed) == len(socks)
        wait_until(all_closed, timeout=30, interval=1, message="every slow client cut off by the head timeout")
    finally:
        stop.set()
        for s in socks:
            s.close()
    assert "Traceback" not in ep.log()


def test_evicting_a_connection_still_being_set_up_is_clean(caplog):
    """A burst far over the connection cap evicts connections asyncio is still setting up: that must
    never hand asyncio a closed descriptor (an error in the loop, or worse, a reused fd)."""
    srv = Server([("127.0.0.1", 0)], lambda req: Response(200, [b"ok\n"], []),
                 Limits(max_connections=2, head_timeout=5))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    socks = []
    caplog.set_level(logging.DEBUG, logger="exporter.httpserver")
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\n")
            socks.append(s)
        deadline = time.monotonic() + 10
        while srv.evicted < 290 and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for s in socks:
            s.close()
        srv.shutdown()
        srv.server_close()
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert srv.evicted >= 290, srv.evicted
    assert not errors, [r.getMessage()[:300] for r in errors]


# --- the web config ---------------------------------------------------------------------------

def test_invalid_web_config_at_start_is_exit_2(tmp_path, tls_files):
    cases = {
        "unknown": {"tls_server_config": {"cert_file": tls_files.server_cert, "key_file": tls_files.server_key,
                                          "nope": 1}},
        "missing": {"tls_server_config": {"cert_file": str(tmp_path / "none.crt"), "key_file": tls_files.server_key}},
        "hash": {"basic_auth_users": {"alice": "plaintext-password"}},
        "auth": {"tls_server_config": {"cert_file": tls_files.server_cert, "key_file": tls_files.server_key,
                                       "client_auth_type": "RequireAnyClientCert", "client_ca_file": tls_files.ca}},
        "header": {"http_server_config": {"headers": {"Set-Cookie": "a=b"}}},
    }
    expect = {"unknown": "tls_server_config.nope: unknown key", "missing": "no such file",
              "hash": "basic_auth_users.alice: not a bcrypt hash", "auth": "not supported here",
              "header": "Set-Cookie: not allowed"}
    for name, doc in cases.items():
        path = write_web(tmp_path / f"{name}.yml", doc)
        result = subprocess.run([sys.executable, "-m", "exporter", "--web.config.file", str(path),
                                 "--web.listen-address", f"127.0.0.1:{free_port()}"], cwd=REPO,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (name, result.stderr)
        assert expect[name] in result.stderr, (name, result.stderr)
        assert "plaintext-password" not in result.stderr


def test_basic_auth_over_tls_with_a_real_prometheus(redis_server, exporter_factory, tmp_path, tls_files):
    """Prometheus scrapes over HTTPS with basic auth: up. Without credentials: 401 (counted); with a
    CA that did not sign the certificate: Prometheus reports the TLS error. Probes stay open."""
    need(PROMETHEUS is not None, "prometheus not installed")
    web = write_web(tmp_path / "web.yml", {
        "tls_server_config": {"cert_file": tls_files.server_cert, "key_file": tls_files.server_key},
        "basic_auth_users": {"prom": HASH},
        "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
    })
    ctx = client_ctx(tls_files)
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]},
                          args=["--web.config.file", str(web)], tls=ctx, auth=("prom", PASSWORD))
    status, _, headers = ep.get("/metrics")
    assert status == 200 and headers.get("X-Frame-Options") == "deny"
    for auth in ("", basic("prom", "wrong"), basic("nobody", PASSWORD), "Basic !!!", "Bearer x"):
        status, _, headers = ep.get("/metrics", headers={"Authorization": auth})
        assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Basic"), auth
    for path in ("/targets", "/", "/-/reload"):
        assert ep.get(path, headers={"Authorization": ""})[0] == 401
    assert ep.get("/healthz", headers={"Authorization": ""})[0] == 200
    assert ep.get("/readyz", headers={"Authorization": ""})[0] == 200
    assert ep.metrics().value("cache_exporter_http_auth_failures_total") >= 8
    plain = http.client.HTTPConnection("127.0.0.1", ep.port, timeout=5)
    with pytest.raises((OSError, http.client.HTTPException)):  # plain HTTP on the TLS port gets nothing
        plain.request("GET", "/healthz")
        plain.getresponse()

    target = f"localhost:{ep.port}"
    jobs = []
    for job, scrape in (("good", {"scheme": "https", "tls_config": {"ca_file": tls_files.ca},
                                  "basic_auth": {"username": "prom", "password": PASSWORD}}),
                        ("nocreds", {"scheme": "https", "tls_config": {"ca_file": tls_files.ca}}),
                        ("wrongca", {"scheme": "https", "tls_config": {"ca_file": tls_files.other_ca},
                                     "basic_auth": {"username": "prom", "password": PASSWORD}})):
        prom = Prometheus(tmp_path / job, [target], scrape_interval="1s", job=job, scrape=scrape)
        jobs.append(prom)
    try:
        for prom in jobs:
            prom.wait_ready()

        def health(prom: Prometheus) -> dict | None:
            active = prom.api("targets")["data"]["activeTargets"]
            return active[0] if active and active[0]["health"] != "unknown" else None
        states = {}
        for prom in jobs:
            wait_until(lambda prom=prom: health(prom), timeout=30, message=f"{prom.job} scraped")
            states[prom.job] = health(prom)
        assert states["good"]["health"] == "up", states["good"]
        assert states["nocreds"]["health"] == "down" and "401" in states["nocreds"]["lastError"]
        assert states["wrongca"]["health"] == "down" and "certificate" in states["wrongca"]["lastError"]
        wait_until(lambda: jobs[0].result('cache_up{target="a"}'), timeout=20, message="series in Prometheus")
    finally:
        for prom in jobs:
            prom.stop()


def test_mutual_tls_refuses_a_client_without_a_certificate(redis_server, exporter_factory, tmp_path, tls_files):
    web = write_web(tmp_path / "web.yml", {"tls_server_config": {
        "cert_file": tls_files.server_cert, "key_file": tls_files.server_key,
        "client_ca_file": tls_files.ca, "client_auth_type": "RequireAndVerifyClientCert", "min_version": "TLS12"}})
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]},
                          args=["--web.config.file", str(web)], tls=client_ctx(tls_files, cert=True))
    assert ep.get("/metrics")[0] == 200
    bare = client_ctx(tls_files)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        c = http.client.HTTPSConnection("127.0.0.1", ep.port, context=bare, timeout=5)
        c.request("GET", "/healthz")
        c.getresponse().read()
    assert "Traceback" not in ep.log()


def _served_cert(port: int, ctx: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw_sock:
        with ctx.wrap_socket(raw_sock, server_hostname="localhost") as s:
            return s.getpeercert(binary_form=True)


def test_certificate_rotation_without_restart(redis_server, exporter_factory, tmp_path, tls_files):
    """Replace the certificate files: the next connection gets the new certificate. A broken
    replacement keeps the previous configuration, says why in the log and counts it."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(tls_files.server_cert, cert)
    shutil.copy(tls_files.server_key, key)
    web = write_web(tmp_path / "web.yml", {"tls_server_config": {"cert_file": "tls.crt", "key_file": "tls.key"}})
    ctx = client_ctx(tls_files)
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", redis_server)]},
                          args=["--web.config.file", str(web)], tls=ctx)
    first = _served_cert(ep.port, ctx)
    # A second certificate for the same names, from the same CA.
    d = Path(tls_files.ca).parent
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=server2", "-keyout",
                    str(tmp_path / "new.key"), "-out", str(tmp_path / "new.csr")], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(tmp_path / "new.csr"), "-CA", str(d / "ca.crt"),
                    "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(d / "server.ext"),
                    "-out", str(tmp_path / "new.crt")], check=True, capture_output=True)
    shutil.copy(tmp_path / "new.key", key)
    shutil.copy(tmp_path / "new.crt", cert)
    wait_until(lambda: _served_cert(ep.port, ctx) != first, timeout=10, message="the new certificate served")
    rotated = _served_cert(ep.port, ctx)
    assert ep.get("/healthz")[0] == 200
    # Broken: the web config itself turns invalid. The rotated certificate stays.
    web.write_text("tls_server_config: [not, a, mapping]\n")
    # Files are looked at when a connection comes (at most once a second), as exporter-toolkit does.
    wait_until(lambda: _served_cert(ep.port, ctx) and "web config changed but is invalid" in ep.log(), timeout=10,
               message="the error logged")
    assert _served_cert(ep.port, ctx) == rotated
    assert ep.metrics().value("cache_exporter_web_config_reload_failures_total") >= 1
