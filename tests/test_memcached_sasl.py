"""The Memcached source against a real ``memcached -S`` (SASL PLAIN, sasldb, binary protocol only).

A -S server reads every connection as binary protocol: the text ``stats`` the exporter sends by
default is closed at the wrong magic byte. The source must notice, poll over binary STAT
(``settings``, ``slabs``, ``items`` too), authenticate with SASL PLAIN, and without credentials
say ``sasl_required`` rather than ``reset``/``timeout``.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import fast_global, memcached_target, need, start_exporter, wait_until
from fakeserver import FakeServer, Session, stop_lab, wait_for_reason

USER = "exporter"
SECRET = "sasl-S3cret-do-not-leak-7f3a"
HEADER = struct.Struct(">BBHBBHIIQ")
OP_SET, OP_SASL_AUTH = 0x01, 0x21
ST_OUT_OF_MEMORY = 0x82


def sasl_args(workdir: Path, users: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """memcached arguments and environment for -S with a sasldb holding ``users``."""
    saslpasswd2 = shutil.which("saslpasswd2")
    need(saslpasswd2 is not None, "saslpasswd2 not installed (Debian package sasl2-bin)")
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "sasldb2"
    for user, password in users.items():
        subprocess.run([saslpasswd2, "-p", "-a", "memcached", "-c", "-f", str(db), user],
                       input=password.encode(), check=True, capture_output=True)
    (workdir / "memcached.conf").write_text(f"mech_list: plain\nsasldb_path: {db}\n")
    return ["-S"], {"SASL_CONF_PATH": str(workdir)}


class BinaryClient:
    """Just enough of a SASL-authenticated binary-protocol client to fill a -S server."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        status = self.call(OP_SASL_AUTH, b"PLAIN", b"\0" + user.encode() + b"\0" + password.encode())
        assert status == 0, f"SASL auth failed: 0x{status:04x}"

    def call(self, opcode: int, key: bytes, value: bytes = b"", extras: bytes = b"") -> int:
        body = len(extras) + len(key) + len(value)
        self.sock.sendall(HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, body, 0, 0) + extras + key + value)
        header = self._exact(HEADER.size)
        _, _, _, _, _, status, length, _, _ = HEADER.unpack(header)
        self._exact(length)
        return status

    def set(self, key: str, value: bytes) -> int:
        return self.call(OP_SET, key.encode(), value, extras=struct.pack(">II", 0, 0))

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "server closed the connection"
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sasl_memcached(memcached_factory, tmp_path):
    def make(extra: list[str] | None = None, **kw: object):
        args, env = sasl_args(tmp_path / f"sasl-{time.monotonic_ns()}", {USER: SECRET})
        return memcached_factory(args=args + list(extra or []), env=env, **kw)
    return make


def test_sasl_server_polled_over_binary_with_every_section(sasl_memcached, memcached_factory, exporter_factory):
    server = sasl_memcached(["-m", "16"])
    client = BinaryClient(server.port, USER, SECRET)
    for i in range(30):
        assert client.set(f"techdocs:page:{i}", b"t" * 2000) == 0
    client.close()
    binary_only = memcached_factory(args=["-B", "binary"])  # binary, but no SASL
    ep = exporter_factory({"global": fast_global(), "targets": [
        memcached_target("ok", server, username=USER, password_env="MC_PW"),
        memcached_target("wrong", server, username=USER, password_env="MC_WRONG"),
        memcached_target("none", server),
        memcached_target("nosasl", binary_only, username=USER, password_env="MC_PW"),
    ]}, env={"MC_PW": SECRET, "MC_WRONG": "not-the-password"})
    for name in ("ok", "nosasl"):
        ep.wait_polls(name, 3)
    wait_until(lambda: ep.metrics().value("cache_exporter_poll_errors_total", target="wrong", reason="auth")
               and ep.metrics().value("cache_exporter_poll_errors_total", target="none", reason="sasl_required"),
               timeout=15, message="auth and sasl_required failures counted")
    m = ep.metrics()
    # Authenticated, and every section arrived over binary STAT.
    assert m.value("cache_up", target="ok") == 1
    assert m.value("memcached_current_items", target="ok") == 30
    assert m.value("memcached_auth_commands_total", target="ok") >= 1
    assert m.value("memcached_max_connections", target="ok") == 1024  # stats settings
    assert m.value("memcached_malloced_bytes", target="ok") > 0  # stats slabs
    assert sum(s[2] for s in m.find("memcached_slab_current_items", target="ok")) == 30  # stats items
    assert m.value("cache_evicts_when_full", target="ok") == 1
    assert not any(s[2] for s in m.find("cache_exporter_section_errors_total", target="ok"))
    assert ep.target("ok")["details"]["protocol"] == "binary"
    # Wrong password: auth. No credentials: the reason says what the server wants.
    assert m.value("cache_up", target="wrong") == 0
    assert m.value("cache_up", target="none") == 0
    assert not m.value("cache_exporter_poll_errors_total", target="none", reason="reset")
    assert not m.value("cache_exporter_poll_errors_total", target="none", reason="timeout")
    assert "requires SASL over the binary protocol" in ep.target("none")["last_error"]["message"]
    # A binary server without SASL is polled, and the password is never sent to it.
    assert m.value("cache_up", target="nosasl") == 1
    assert binary_only.proc is not None
    assert m.value("memcached_auth_commands_total", target="nosasl") == 0
    for text in (m.text, ep.get("/targets")[1].decode(), ep.log()):
        assert SECRET not in text


def test_sasl_server_restarted_without_sasl_is_detected_again(sasl_memcached, memcached_factory, exporter_factory):
    """Binary mode is learned, not fixed: a restart as a plain server goes back to text."""
    server = sasl_memcached()
    port = server.port
    ep = exporter_factory({"global": fast_global(), "targets": [
        memcached_target("m", server, username=USER, password_env="MC_PW")]}, env={"MC_PW": SECRET})
    ep.wait_polls("m", 2)
    assert ep.target("m")["details"]["protocol"] == "binary"
    server.kill()
    plain = memcached_factory(args=["-B", "ascii"], port=port)
    wait_until(lambda: ep.metrics().value("cache_up", target="m") == 1
               and ep.target("m").get("details", {}).get("protocol") == "text", timeout=15,
               message="text protocol after the restart without -S")
    assert plain.stats()["cmd_set"] == "0"  # ASCII-auth probe only: no password stored as a key
    assert SECRET not in ep.log()


def test_sasl_server_filling_up_warns_before_it_refuses_writes(sasl_memcached, exporter_factory):
    """-M (no eviction), 64 MiB, filled at a steady pace over SASL: the exporter's forecast of the
    time until full is there before the first refused write, and the refusals are counted
    (CacheWritesRejected's input) while they happen. Timers scaled together: 0.5 s polls, a
    1 min forecast window (its first forecast after 2.5 s), ~4 MiB/s (full in ~16 s)."""
    server = sasl_memcached(["-m", "64", "-M"])
    ep = exporter_factory({"global": fast_global(forecast_window="1m"), "targets": [
        memcached_target("backstage", server, username=USER, password_env="MC_PW")]}, env={"MC_PW": SECRET})
    ep.wait_polls("backstage", 2)
    m = ep.metrics()
    assert m.value("cache_evicts_when_full", target="backstage") == 0  # -M read from stats settings over binary
    forecast_at: list[float] = []
    refused_at: list[float] = []
    stop = threading.Event()
    trace: list = []

    def watch() -> None:
        while not stop.is_set() and not forecast_at:
            mm = ep.metrics()
            value = mm.value("cache_memory_seconds_until_full", target="backstage")
            trace.append((round(time.monotonic(), 1), mm.value("cache_memory_used_bytes", target="backstage"), value))
            if value is not None and 0 < value < 3600:
                forecast_at.append(time.monotonic())
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    client = BinaryClient(server.port, USER, SECRET)
    value = b"c" * 50_000
    deadline = time.monotonic() + 40
    i = 0
    try:
        while time.monotonic() < deadline:
            for _ in range(16):  # ~800 KB per 0.2 s: 1 MiB pages fill smoothly at 0.5 s polls
                status = client.set(f"catalog:entity:{i}", value)
                i += 1
                if status == ST_OUT_OF_MEMORY and not refused_at:
                    refused_at.append(time.monotonic())
            if refused_at and time.monotonic() > refused_at[0] + 2:
                break
            time.sleep(0.2)
    finally:
        client.close()
        stop.set()
        watcher.join(5)
    assert refused_at, "the server never refused a write"
    assert forecast_at and forecast_at[0] < refused_at[0], (forecast_at, refused_at, trace)
    wait_until(lambda: (ep.metrics().value("cache_write_rejections_total", target="backstage") or 0) > 0,
               timeout=10, message="refused writes counted")
    m = ep.metrics()
    # Binary sets are refused per class only (store_no_memory counts text-protocol sets).
    assert sum(s[2] for s in m.find("memcached_slab_items_outofmemory_total", target="backstage")) > 0
    assert m.value("cache_memory_utilization_ratio", target="backstage") > 0.8


# --- malformed binary replies (a scripted fake -S server) ---------------------------------

GOOD_STATS = {"version": "1.6.18", "curr_items": "3", "limit_maxbytes": "67108864", "get_hits": "1"}


def bin_response(opcode: int, key: bytes = b"", value: bytes = b"", status: int = 0, opaque: int = 0) -> bytes:
    return HEADER.pack(0x81, opcode, len(key), 0, 0, status, len(key) + len(value), opaque, 0) + key + value


class FakeSaslMemcached(FakeServer):
    """Closes a text connection at its 24th byte, like -S; answers binary SASL_LIST_MECHS with
    ``mechanisms``, accepts the PLAIN token ``\\0exporter\\0<SECRET>``, and plays ``stat`` for STAT."""

    def __init__(self, stat: Callable[[Session, int], None] | None = None, mechanisms: bytes = b"PLAIN",
                 name: str = "fake-sasl") -> None:
        self.stat = stat or good_stat
        self.mechanisms = mechanisms
        self.tokens: list[bytes] = []
        super().__init__(name=name)

    def _handle(self, s: Session) -> None:
        authenticated = False
        while True:
            header = s.read_exact(HEADER.size)
            if header is None:
                return
            magic, opcode, _, extlen, _, _, bodylen, opaque, _ = HEADER.unpack(header)
            if magic != 0x80:
                s.close_graceful()
            body = s.read_exact(bodylen) or b""
            if opcode == 0x20:
                s.send(bin_response(0x20, value=self.mechanisms, opaque=opaque))
            elif opcode == OP_SASL_AUTH:
                with self.lock:
                    self.tokens.append(body[extlen + 5:])
                authenticated = body[extlen + 5:] == b"\0" + USER.encode() + b"\0" + SECRET.encode()
                s.send(bin_response(OP_SASL_AUTH, status=0 if authenticated else 0x20, opaque=opaque))
                if not authenticated:
                    s.close_graceful()
            elif opcode == 0x10 and authenticated:
                self.stat(s, opaque)
            else:
                s.send(bin_response(opcode, value=b"Auth failure.", status=0x20, opaque=opaque))
                s.close_graceful()


def good_stat(s: Session, opaque: int) -> None:
    s.send(b"".join(bin_response(0x10, k.encode(), v.encode(), opaque=opaque) for k, v in GOOD_STATS.items())
           + bin_response(0x10, opaque=opaque))


def bad_magic(s: Session, opaque: int) -> None:
    s.send(b"\x82" + bin_response(0x10, opaque=opaque)[1:])


def huge_body(s: Session, opaque: int) -> None:
    s.send(HEADER.pack(0x81, 0x10, 4, 0, 0, 0, 2**31, opaque, 0) + b"x" * 64)
    s.wait_eof()


def wrong_opaque(s: Session, opaque: int) -> None:
    s.send(bin_response(0x10, b"version", b"1.6.18", opaque=opaque + 7))


def cut_mid_body(s: Session, opaque: int) -> None:
    s.send(bin_response(0x10, b"version", b"1.6.18", opaque=opaque)[:30])
    s.close_reset()


def stall(s: Session, opaque: int) -> None:
    s.wait_eof()


FAKES: dict[str, tuple[Callable[[Session, int], None] | None, bytes, str | None]] = {
    # name -> (STAT behaviour, mechanisms, expected reason; None: up)
    "good": (None, b"PLAIN", None),
    "bad-magic": (bad_magic, b"PLAIN", "protocol"),
    "huge-body": (huge_body, b"PLAIN", "protocol"),
    "wrong-opaque": (wrong_opaque, b"PLAIN", "protocol"),
    "cut": (cut_mid_body, b"PLAIN", "reset"),
    "stall": (stall, b"PLAIN", "timeout"),
    "cram-only": (None, b"CRAM-MD5 SCRAM-SHA-256", "sasl_required"),
}


@pytest.mark.servers
def test_malformed_binary_replies_are_counted_failures(tmp_path):
    fakes = {name: FakeSaslMemcached(stat, mechanisms, name=name) for name, (stat, mechanisms, _) in FAKES.items()}
    ep = None
    try:
        ep = start_exporter(tmp_path, {"global": fast_global(), "targets": [
            {"name": name, "type": "memcached", "address": f"127.0.0.1:{fake.port}", "username": USER,
             "password_env": "MC_PW"} for name, fake in fakes.items()]}, {"MC_PW": SECRET})
        ep.wait_polls("good", 3)
        for name, (_, _, reason) in FAKES.items():
            if reason is not None:
                wait_for_reason(ep, name, reason, count=2)
        m = ep.metrics()
        assert m.value("cache_up", target="good") == 1
        assert m.value("memcached_current_items", target="good") == 3
        for name, (_, _, reason) in FAKES.items():
            failed = {s[1]["reason"] for s in m.find("cache_exporter_poll_errors_total", target=name) if s[2] > 0}
            assert failed == (set() if reason is None else {reason}), (name, failed)
        assert "only PLAIN is supported" in ep.target("cram-only")["last_error"]["message"]
        assert fakes["cram-only"].tokens == []  # the password never went to a server that cannot take PLAIN
        assert fakes["good"].tokens and set(fakes["good"].tokens) == {b"\0" + USER.encode() + b"\0" + SECRET.encode()}
        assert ep.proc.poll() is None  # the daemon survived all of it
        for text in (m.text, ep.get("/targets")[1].decode(), ep.log()):
            assert SECRET not in text
    finally:
        stop_lab(ep, fakes)
