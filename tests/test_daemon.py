"""The daemon end to end: HTTP endpoints, readiness, reload (HTTP and SIGHUP), shutdown, defaults."""

from __future__ import annotations

import gzip
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import BINARIES, REPO, Metrics, RedisServer, fast_global, free_port, need, redis_target, wait_until

SECRET = "hunter2-very-secret-value"


class StallServer:
    """Accepts TCP connections and never answers (a hung Redis)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self._stop = True
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def stall():
    server = StallServer()
    yield server
    server.close()


def test_endpoints(redis_server, exporter_factory):
    ep = exporter_factory({"global": fast_global(labels={"env": "test"}), "targets": [
        redis_target("r", redis_server, password_env="PW", labels={"team": "web"})]}, env={"PW": ""})
    status, body, headers = ep.get("/")
    assert status == 200 and b'href="metrics"' in body and headers["Content-Type"].startswith("text/html")
    assert ep.get("/healthz")[:2] == (200, b"ok\n")
    assert ep.get("/readyz")[:2] == (200, b"ready\n")
    status, body, headers = ep.get("/metrics")
    assert status == 200 and headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    m = Metrics(body.decode())
    assert m.value("cache_up", target="r", env="test", team="web", store="redis") == 1
    assert m.has("cache_exporter_build_info")
    assert m.value("cache_exporter_targets", type="redis") == 1
    assert m.value("cache_exporter_config_last_reload_successful") == 1
    assert ep.get("/nope")[0] == 404
    status, _, headers = ep.get("/-/reload")  # GET is not allowed: reloading changes state
    assert status == 405 and headers["Allow"] == "POST"
    assert ep.get("/metrics", method="POST")[0] == 405
    status, body, headers = ep.get("/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000
    targets = ep.targets()
    assert [t["name"] for t in targets] == ["r"]
    t = targets[0]
    assert t["up"] is True and t["address"] == f"redis://127.0.0.1:{redis_server.port}"
    assert t["labels"] == {"env": "test", "team": "web"} and t["last_error"] is None
    assert t["memory"]["limit_source"] == "system" and t["details"]["version"]


STORE_FAMILY = re.compile(r"(cache_(?!exporter_)|redis_|memcached_|app_|http_cache_)")


def _family_groups(text: str) -> list[int]:
    """Each family's group in scrape order: 0 a store's, 1 the exporter's own, 2 the process's."""
    groups = []
    for name in re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE):
        group = 0 if STORE_FAMILY.match(name) else 1 if name.startswith("cache_exporter_") else \
            2 if name.startswith(("process_", "python_")) else None
        assert group is not None, f"{name}: a family of no known group"
        groups.append(group)
    return groups


def test_gzip_body_matches_plain_and_both_list_the_stores_first(redis_server, exporter_factory):
    ep = exporter_factory({"global": {"interval": "30s", "timeout": "2s"},
                           "targets": [redis_target("r", redis_server)]})
    status, zipped, headers = ep.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    plain = ep.get("/metrics")[1].decode()
    unzipped = gzip.decompress(zipped).decode()  # multi-member stream reads as one
    # Polls are 30 s apart, so the per-target part is identical; process stats may differ.
    target_lines = lambda text: [ln for ln in text.splitlines() if 'target="r"' in ln]  # noqa: E731
    assert target_lines(unzipped) == target_lines(plain) and len(target_lines(plain)) > 100
    # A reader sees the caches first, the exporter's own next, the Python process's last.
    for text in (plain, unzipped):
        assert text.startswith("# HELP cache_up ")
        groups = _family_groups(text)
        assert groups == sorted(groups) and set(groups) == {0, 1, 2}


def test_readyz_waits_for_first_round(redis_server, stall, exporter_factory):
    ep = exporter_factory({"global": {"interval": "10s", "timeout": "3s"}, "targets": [
        redis_target("fast", redis_server), {"name": "hung", "type": "redis", "url": f"redis://127.0.0.1:{stall.port}"}
    ]}, wait_ready=False)
    status, body, _ = ep.get("/readyz")
    assert status == 503 and b"waiting" in body
    assert ep.get("/healthz")[0] == 200  # alive while not ready
    wait_until(lambda: ep.get("/metrics")[1].count(b'cache_up{target="fast"') == 1, timeout=5)
    assert ep.get("/readyz")[0] == 503  # fast is done; hung is still inside its 3 s timeout
    wait_until(lambda: ep.get("/readyz")[0] == 200, timeout=10, message="ready after the hung poll times out")
    m = ep.metrics()
    assert m.value("cache_up", target="hung") == 0
    assert m.value("cache_exporter_poll_errors_total", target="hung", reason="timeout") == 1
    assert 2.5 < m.value("cache_exporter_last_poll_duration_seconds", target="hung") < 4.5


def test_reload_keeps_unchanged_replaces_changed_removes_gone(redis_factory, exporter_factory):
    a, b, c = redis_factory(), redis_factory(), redis_factory()
    config = {"global": fast_global(), "targets": [redis_target("a", a), redis_target("b", b, labels={"v": "1"}),
                                                   redis_target("c", c)]}
    ep = exporter_factory(config, args=["--web.enable-lifecycle"])
    for name in "abc":
        ep.wait_polls(name, 1)
    probe = a.client()  # one persistent connection, so measuring does not add connections
    conns_a = probe.info("stats")["total_connections_received"]

    # A broken config is rejected; the running one keeps polling.
    ep.write_config("targets: [{name: a, type: redis, url: 'http://nope'}]\n")
    status, body, _ = ep.get("/-/reload", method="POST")
    assert status == 400 and b"targets[0].url" in body and b"keeping the running config" in body
    m = ep.wait_polls("c", 2)
    assert m.value("cache_exporter_config_last_reload_successful") == 0
    assert m.value("cache_up", target="c") == 1

    # a unchanged, b relabelled, c removed, d added.
    d = redis_factory()
    config["targets"] = [redis_target("a", a), redis_target("b", b, labels={"v": "2"}), redis_target("d", d)]
    ep.write_config(config)
    status, body, _ = ep.get("/-/reload", method="POST")
    assert status == 200, body
    assert b"added: 1, removed: 1, changed: 1, unchanged: 1" in body
    m = ep.wait_polls("d", 1)
    ep.wait_polls("b", 1)
    m = ep.metrics()
    assert m.value("cache_exporter_config_last_reload_successful") == 1
    assert not m.find("cache_up", target="c") and not m.text.count('target="c"')
    assert m.value("cache_up", target="b", v="2") == 1 and not m.find("cache_up", target="b", v="1")
    assert m.value("cache_up", target="d") == 1
    # The unchanged target kept its connection (and its poll counter).
    assert probe.info("stats")["total_connections_received"] == conns_a
    assert ep.target("a")["details"]["connections_opened"] == 1
    assert m.value("cache_exporter_polls_total", target="a") > 3


def test_sighup_reload_and_sigterm(redis_factory, exporter_factory):
    a, b = redis_factory(), redis_factory()
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("a", a)]})
    ep.write_config({"global": fast_global(), "targets": [redis_target("a", a), redis_target("b", b)]})
    ep.signal(signal.SIGHUP)
    wait_until(lambda: ep.metrics().value("cache_up", target="b") == 1, timeout=10, message="b after SIGHUP")
    ep.write_config("targets: {broken")
    ep.signal(signal.SIGHUP)
    wait_until(lambda: ep.metrics().value("cache_exporter_config_last_reload_successful") == 0, timeout=10)
    assert ep.wait_polls("b", 1).value("cache_up", target="b") == 1  # still running the old config
    started = time.monotonic()
    assert ep.stop() == 0
    assert time.monotonic() - started < 5
    assert "shutting down" in ep.log()


def test_builtin_default_config_polls_localhost_6379(exporter_factory, tmp_path):
    """No --config: the built-in default polls redis://localhost:6379 (docs/configuration.md)."""
    server = None
    try:
        import redis
        redis.Redis(port=6379, socket_timeout=1).ping()
    except Exception:
        need(BINARIES["redis7"] is not None, "redis-server not installed")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", 6379)) == 0:
                pytest.fail("port 6379 is taken by something that is not Redis")
        server = RedisServer(binary=BINARIES["redis7"], workdir=tmp_path / "default", port=6379).start()
    try:
        ep = exporter_factory(None, args=["--web.enable-lifecycle"])  # ready = every target polled once
        m = ep.metrics()
        assert m.value("cache_up", target="redis", store="redis") == 1
        assert ep.target("redis")["address"] == "redis://localhost:6379"
        status, body, _ = ep.get("/-/reload", method="POST")
        assert status == 200 and b"nothing to reload" in body
    finally:
        if server:
            server.stop()


def test_static_label_values_are_escaped(redis_server, exporter_factory):
    weird = 'quote " backslash \\ newline \n end'
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target('t"x', redis_server,
                                                                             labels={"note": weird})]})
    m = ep.wait_polls('t"x', 1)
    assert m.value("cache_up", target='t"x', note=weird) == 1


def test_promtool_check_metrics_is_clean(redis_factory, exporter_factory, stall):
    need(bool(subprocess.run(["which", "promtool"], capture_output=True).returncode == 0), "promtool missing")
    r7 = redis_factory(args=["--maxmemory", "8mb"])
    vk = redis_factory(kind="valkey")
    r7.client().set("k", "v", ex=100)
    for i in range(5):
        r7.client().get(f"missing{i}")
    ep = exporter_factory({"global": fast_global(labels={"env": "ci"}), "targets": [
        redis_target("r7", r7), redis_target("vk", vk),
        {"name": "down", "type": "redis", "url": f"redis://127.0.0.1:{free_port()}"},
        {"name": "hung", "type": "redis", "url": f"redis://127.0.0.1:{stall.port}"}]})
    ep.wait_polls("r7", 1)
    body = ep.get("/metrics")[1]
    result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b"", result
    assert body.count(b"# TYPE cache_up gauge") == 1  # each family once, all targets under it


@pytest.mark.servers
@pytest.mark.parametrize("listen,code,message", [
    ("nonsense", 2, "expected [HOST]:PORT"),
    ("127.0.0.1:99999", 2, "expected [HOST]:PORT"),
])
def test_bad_listen_address(listen, code, message):
    result = subprocess.run([sys.executable, "-m", "exporter", "run", "--listen", listen], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == code and message in result.stderr


@pytest.mark.servers
def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "exporter", "run", "--listen", f"127.0.0.1:{port}"],
                                cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "cannot listen" in result.stderr


def test_targets_json_has_no_secrets(redis_factory, exporter_factory, tmp_path):
    server = redis_factory(password=SECRET)
    pw = tmp_path / "pw"
    pw.write_text(SECRET)
    ep = exporter_factory({"global": fast_global(), "targets": [
        redis_target("ok", server, password_file=str(pw)),
        redis_target("bad", server, password_env="WRONG")]}, env={"WRONG": SECRET + "x"})
    ep.wait_polls("bad", 2)
    text = ep.get("/targets")[1].decode()
    data = json.loads(text)
    assert {t["name"]: t["up"] for t in data} == {"ok": True, "bad": False}
    assert next(t for t in data if t["name"] == "bad")["last_error"]["reason"] == "auth"
    for blob in (text, ep.metrics().text, ep.log()):
        assert SECRET not in blob


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_password_that_is_ordinary_text_keeps_json_and_names_intact(redis_factory, exporter_factory):
    """The password "null" is a JSON literal and part of the target name "r_null"; scrubbing it as a
    substring broke the /targets JSON and renamed the target in the log."""
    server = redis_factory(password="null")
    ep = exporter_factory({"global": fast_global(), "targets": [
        redis_target("r_null", server, password_env="PW", labels={"team": "null-ish"}),
        redis_target("r_wrong", server, password_env="WRONG")]}, env={"PW": "null", "WRONG": "nullnull"})
    ep.wait_polls("r_wrong", 2)
    status, body, _ = ep.get("/targets")
    assert status == 200
    data = {t["name"]: t for t in json.loads(body)}
    assert set(data) == {"r_null", "r_wrong"}
    assert data["r_null"]["up"] is True and data["r_null"]["last_error"] is None
    assert data["r_null"]["labels"] == {"team": "null-ish"}
    assert data["r_wrong"]["up"] is False and data["r_wrong"]["last_error"]["reason"] == "auth"
    log = ep.log()
    assert "target r_null (" in log and "target r_wrong (" in log
    as_word = re.compile(r"(?<![A-Za-z0-9_])(?:null|nullnull)(?![A-Za-z0-9_])")
    assert not as_word.search(log.replace("r_null", ""))
    # Everything but the operator's own name and labels ("null-ish" stays) is scrubbed.
    values = [{k: v for k, v in t.items() if k not in ("name", "labels")} for t in data.values()]
    assert not [s for s in _strings(values) if as_word.search(s)]


def test_targets_from_flags_without_a_config_file(redis_factory, memcached_factory, exporter_factory, tmp_path):
    """`run --redis.addr ... --redis.password-file ... --memcached.address ...`: both polled, the
    password used and never shown; SIGHUP keeps them (there is no file to re-read) and says so."""
    redis_server = redis_factory(password=SECRET)
    memcached = memcached_factory()
    pw = tmp_path / "redis-password"
    pw.write_text(SECRET + "\n")
    ep = exporter_factory(None, args=["--redis.addr", f"redis://127.0.0.1:{redis_server.port}",
                                      "--redis.password-file", str(pw),
                                      "--memcached.address", f"127.0.0.1:{memcached.port}"])
    redis_name, memcached_name = f"127.0.0.1:{redis_server.port}", f"127.0.0.1:{memcached.port}"
    m = ep.metrics()  # ready: every target polled once
    assert m.value("cache_up", target=redis_name, store="redis") == 1
    assert m.value("cache_up", target=memcached_name, store="memcached") == 1
    assert {t["name"] for t in ep.targets()} == {redis_name, memcached_name}  # no self-scrape, no defaults
    ep.signal(signal.SIGHUP)
    wait_until(lambda: "nothing to reload, keeping them" in ep.log(), timeout=10, message="the reload's log line")
    # Not a new poll: the default interval (15 s) would cost this test 15 s.
    assert {t["name"]: t["up"] for t in ep.targets()} == {redis_name: True, memcached_name: True}
    assert "with 2 targets from command-line flags" in ep.log()
    for blob in (ep.get("/targets")[1].decode(), ep.metrics().text, ep.log()):
        assert SECRET not in blob
