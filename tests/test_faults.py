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
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ExporterProcess, fast_global, free_port, redis_target, start_exporter, wait_until
from fakeserver import (
    HUGE_INTERVAL,
    REASONS,
    FakeServer,
    RespSession,
    Session,
    assert_daemon_survived,
    assert_down,
    assert_huge_reply_capped,
    assert_never_overlaps,
    assert_not_delayed,
    assert_polls_cut_at_timeout,
    assert_reply_cut_at_max_size,
    assert_secret_not_exposed,
    assert_status_failed,
    errors_by_reason,
    stop_lab,
    wait_for_reason,
    wait_metrics,
    watch_good_target,
)

SECRET = "Zq9-s3cr3t-PW-7f1c2e-do-not-leak"
SECRET_ENV = "FAULT_TEST_REDIS_PASSWORD"


# --- a scripted fake RESP server ----------------------------------------------------------

Behaviour = Callable[[RespSession], None]  # called when an INFO command arrives


class FakeRedis(FakeServer):
    """A fake server (see fakeserver.FakeServer) that speaks just enough RESP to script faults.

    HELLO (redis-py 8 sends ``HELLO 3`` on connect unless the client asks for RESP2) gets a
    minimal handshake map or, with ``hello=False``, the error Redis 5 sends;
    AUTH/CLIENT/SELECT/PING get ``+OK``, CONFIG GET gets an empty map/array, and INFO calls
    ``on_info(session)``. With ``silent=True`` nothing is ever answered (a stalled server).
    Records connections, the peak number of simultaneously open ones, AUTH passwords seen,
    and the largest number of bytes sent on one connection.
    """

    session_class = RespSession

    def __init__(self, on_info: Behaviour | None = None, *, silent: bool = False, port: int = 0,
                 name: str = "fake", hello: bool = True) -> None:
        self.on_info = on_info
        self.hello = hello
        self.silent = silent
        self.info_requests = 0
        self.auth_passwords: list[str] = []
        self.config_commands: list[list[str]] = []
        self.on_config: Callable[[Session, list[str]], None] | None = None  # None: an empty reply
        super().__init__(name=name, port=port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _handle(self, s: RespSession) -> None:
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
                with self.lock:
                    self.config_commands.append(cmd)
                if self.on_config is not None:
                    self.on_config(s, cmd)
                else:
                    s.send(b"%0\r\n" if s.resp3 else b"*0\r\n")
            elif name == "INFO":
                with self.lock:
                    self.info_requests += 1
                assert self.on_info is not None
                self.on_info(s)
            else:
                s.send(b"-ERR unknown command\r\n")

    def _hello(self, s: RespSession, cmd: list[str]) -> None:
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
        s.pause(0.05)


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


def huge_info() -> bytes:
    """Valid INFO from a real Redis 7 plus 100k command names and 10k databases (~8 MB)."""
    base = (Path(__file__).parent / "fixtures" / "info_redis_7.0.txt").read_text().replace("\n", "\r\n")
    lines = [base, "# Commandstats"]
    lines += [f"cmdstat_c{i}:calls=1,usec=2,usec_per_call=2.0,rejected_calls=0,failed_calls=0"
              for i in range(100_000)]
    lines += ["# Keyspace"] + [f"db{i}:keys=1,expires=0,avg_ttl=0" for i in range(10_000)]
    return "\r\n".join(lines).encode()


def huge(s: Session) -> None:
    body = s.server.huge_body  # type: ignore[attr-defined]
    s.send(b"$%d\r\n%s\r\n" % (len(body), body))


def redis5_info(s: Session) -> None:
    """A well-behaved Redis 5: valid INFO (Redis 5 only has RESP2; HELLO is unknown to it)."""
    s.send(b"$%d\r\n%s\r\n" % (len(REDIS5_INFO), REDIS5_INFO))


# --- helpers ----------------------------------------------------------------------------

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
        stop_lab(ep, fakes)


# --- 1-9: each fault is reported with its own reason -----------------------------------------

@pytest.mark.parametrize("target", list(EXPECTED), ids=[f"{t}->{r}" for t, r in EXPECTED.items()])
def test_fault_is_reported_with_reason(lab: Lab, target: str) -> None:
    reason = EXPECTED[target]
    wait_for_reason(lab.ep, target, reason, count=3)
    # A few more polls, so an occasional misclassification (a race) has a chance to show.
    m = wait_metrics(lab.ep, lambda m: m.value("cache_exporter_polls_total", target=target) >= 8,
                     timeout=20, message=f"8 polls of {target}")
    assert_down(m, target, "redis")
    errors = errors_by_reason(m, target)
    polls = m.value("cache_exporter_polls_total", target=target)
    # Every poll failed, and every failure was classified with this fault's reason.
    assert sum(errors.values()) == polls, (errors, polls)
    assert {r: n for r, n in errors.items() if n} == {reason: polls}, errors
    assert_status_failed(lab.ep, target, reason)


def test_never_ending_reply_is_cut_at_the_timeout(lab: Lab) -> None:
    fake = lab.fakes["trickle"]
    assert_polls_cut_at_timeout(lab.ep, "trickle")
    assert fake.info_requests >= 3  # the fake really was trickling replies
    assert fake.max_active <= 1


def test_endless_fast_reply_is_cut_at_max_reply_size(lab: Lab) -> None:
    assert_reply_cut_at_max_size(lab.ep, lab.fakes["firehose"], "firehose", "redis")


def test_stalled_target_never_overlaps_itself(lab: Lab) -> None:
    assert_never_overlaps(lab.ep, lab.fakes["stall"], "stall")


def test_secrets_never_leak(lab: Lab) -> None:
    ep = lab.ep
    wait_for_reason(ep, "echo-secret", "error", count=2)
    # The password really was used: every fake that answers got it in AUTH.
    for name, fake in lab.fakes.items():
        if name not in ("stall", "redis5"):
            assert fake.auth_passwords and set(fake.auth_passwords) == {SECRET}, name
    echoed = ep.target("echo-secret")["last_error"]["message"]
    assert "invalid password" in echoed
    assert_secret_not_exposed(ep, SECRET)
    assert SECRET not in json.dumps(ep.targets())


def test_redis5_without_hello_is_polled(lab: Lab) -> None:
    """docs/how-it-works.md: "works with Redis 5". Redis 5 answers HELLO with an error and only speaks RESP2."""
    fake = lab.fakes["redis5"]
    m = lab.ep.wait_polls("redis5", 2)
    assert fake.auth_passwords == [SECRET] * len(fake.auth_passwords) and fake.auth_passwords
    assert errors_by_reason(m, "redis5") == dict.fromkeys(REASONS, 0.0), lab.ep.target("redis5")["last_error"]
    assert m.value("cache_up", target="redis5", store="redis") == 1
    assert m.value("redis_memory_used_bytes", target="redis5") == 1048576
    assert m.value("redis_db_keys", target="redis5", db="db0") == 7


def test_daemon_survives_every_fault(lab: Lab) -> None:
    ep = lab.ep
    assert_daemon_survived(ep, EXPECTED)
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
        m, latencies = watch_good_target(ep, "redis")
        assert m.value("cache_exporter_last_poll_duration_seconds", target="real") < 0.4
        assert_not_delayed(m, latencies, "redis")
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


# --- a valid but huge INFO ----------------------------------------------------------------

def test_huge_valid_info_is_capped_and_does_not_delay_a_healthy_target(redis_server, exporter_factory) -> None:
    """330,050 series, a 23 MB /metrics, 353 MiB RSS and a healthy target delayed by 3.1 s before."""
    fake = FakeRedis(huge, name="huge")
    fake.huge_body = huge_info()  # type: ignore[attr-defined]
    try:
        interval = HUGE_INTERVAL
        ep = exporter_factory({"global": {"interval": f"{interval}s", "timeout": f"{interval * 0.75}s"},
                               "targets": [redis_target("real", redis_server),
                                           {"name": "huge", "type": "redis", "url": fake.url}]})
        assert_huge_reply_capped(ep, "huge", "redis", "redis_commands_total", "real")
        assert "redis_commands_total dropped by max_series (10000)" in ep.log()
        assert ep.stop() == 0
    finally:
        fake.close()
    assert not fake.errors, fake.errors


def test_a_poll_cut_by_the_watchdog_never_leaves_its_socket_behind(exporter_factory) -> None:
    """A reply that arrives in time but takes longer than the timeout to parse: the watchdog
    records the timeout and shuts the socket down while the poll thread still works on it.
    Before, the source kept that socket, and the next poll failed as ``reset`` (in a soak,
    each of 245 resets directly followed a timeout). Every poll here must be a timeout."""
    fake = FakeRedis(huge, name="slow-parse")
    fake.huge_body = huge_info()  # type: ignore[attr-defined]
    try:
        ep = exporter_factory({"global": {"interval": "1s", "timeout": "0.2s"},
                               "targets": [{"name": "slow", "type": "redis", "url": fake.url}]})
        m = wait_metrics(ep, lambda m: (m.value("cache_exporter_polls_total", target="slow") or 0) >= 6,
                         timeout=30, message="6 polls")
        errors = {r: n for r, n in errors_by_reason(m, "slow").items() if n}
        assert set(errors) == {"timeout"}, errors
        assert fake.connections >= 5  # a new connection for every poll after a timeout
        assert ep.stop() == 0
    finally:
        fake.close()


def test_a_redis7_that_takes_one_config_name_gets_star(exporter_factory) -> None:
    """A server that says 7.0 but refuses several names in CONFIG GET (a proxy, a fork) is asked
    for "*" from the next poll on: its settings are read, and nothing counts as an error."""
    info = REDIS5_INFO.replace(b"redis_version:5.0.14", b"redis_version:7.2.0")

    def one_name(s: Session, cmd: list[str]) -> None:
        if len(cmd) > 3:
            s.send(b"-ERR wrong number of arguments for 'config|get' command\r\n")
        else:
            s.send(b"*2\r\n$9\r\nmaxmemory\r\n$7\r\n1234567\r\n")
    fake = FakeRedis(lambda s: s.send(b"$%d\r\n%s\r\n" % (len(info), info)), name="one-name", hello=False)
    fake.on_config = one_name
    try:
        ep = exporter_factory({"global": fast_global(), "targets": [{"name": "f", "type": "redis", "url": fake.url}]})
        m = wait_metrics(ep, lambda m: m.value("redis_config_maxmemory", target="f") is not None,
                         timeout=30, message="maxmemory from CONFIG GET *")
        assert m.value("redis_config_maxmemory", target="f") == 1234567
        assert len(fake.config_commands[0]) > 3 and fake.config_commands[1] == ["CONFIG", "GET", "*"], \
            fake.config_commands
        assert errors_by_reason(m, "f") == dict.fromkeys(REASONS, 0.0)
        assert m.value("cache_up", target="f") == 1
    finally:
        fake.close()
