"""Fault injection for the memcached source: scripted fake memcached servers that misbehave.

A fake answers the text protocol the exporter speaks (``stats``, ``stats settings``,
``stats slabs``, ``stats items``, ``version`` and the ASCII-auth ``set``) and plays one
scripted behaviour per command. What must come out:

* an optional section (settings, slabs, items) that fails gives a partial snapshot, counted
  once in ``cache_exporter_section_errors_total{section}`` and then skipped;
* a failing ``stats`` (or a broken connection) gives ``cache_up 0`` with one consistent
  ``reason`` in ``cache_exporter_poll_errors_total``;
* no poll outlives its timeout or buffers an endless reply, a target never overlaps itself,
  a bad target never delays a good one or /metrics, the password is never sent to a server
  that does not ask for it and never shows up anywhere, and the daemon survives all of it.

Most fakes share one exporter (module-scoped ``lab``); isolation uses its own exporter.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator

import pytest
from conftest import ExporterProcess, Metrics, fast_global, free_port, memcached_target, start_exporter, wait_until
from fakeserver import (
    HUGE_INTERVAL,
    REASONS,
    FakeServer,
    Session,
    SessionClosed,
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

SECTIONS = ("settings", "slabs", "items")
USER = "exporter"
SECRET = "Mc7-s3cr3t-PW-9a4b1d-do-not-leak"
SECRET_ENV = "FAULT_TEST_MEMCACHED_PASSWORD"
TOKEN = f"{USER} {SECRET}"

LIMIT = 67108864
MALLOCED = 1048576
ITEMS = 7


# --- canned replies -----------------------------------------------------------------------

def stat_reply(fields: dict[str, object]) -> bytes:
    return b"".join(b"STAT %s %s\r\n" % (str(k).encode(), str(v).encode()) for k, v in fields.items()) + b"END\r\n"


GOOD_STATS_FIELDS: dict[str, object] = {
    "pid": 4242, "uptime": 1000, "time": 1700000000, "version": "1.6.18", "curr_connections": 2,
    "total_connections": 10, "get_hits": 10, "get_misses": 3, "evictions": 0, "curr_items": ITEMS,
    "total_items": 20, "bytes": 1234, "limit_maxbytes": LIMIT,
}
GOOD = {
    "stats": stat_reply(GOOD_STATS_FIELDS),
    "stats settings": stat_reply({"maxbytes": LIMIT, "maxconns": 1024, "evictions": "on",
                                  "item_size_max": 1048576, "slab_automove": 1}),
    "stats slabs": stat_reply({"1:chunk_size": 96, "1:chunks_per_page": 10922, "1:total_pages": 1,
                               "1:total_chunks": 10922, "1:used_chunks": ITEMS, "1:free_chunks": 10915,
                               "active_slabs": 1, "total_malloced": MALLOCED}),
    "stats items": stat_reply({f"items:1:{k}": v for k, v in
                               {"number": ITEMS, "age": 100, "evicted": 0, "outofmemory": 0}.items()}),
}
# A syntactically valid stats reply without the two fields every memcached has.
NO_VERSION_STATS = stat_reply({k: v for k, v in GOOD_STATS_FIELDS.items() if k not in ("version", "curr_items")})
# Valid apart from two values that are not numbers.
MALFORMED_STATS = stat_reply({**GOOD_STATS_FIELDS, "curr_items": "lots", "evictions": "???"})


# --- a scripted fake memcached ------------------------------------------------------------

class McSession(Session):
    """One accepted connection (fakeserver.Session: a line reader plus send/close helpers)."""

    authenticated = False  # set (on the instance) by a successful ASCII auth


Behaviour = Callable[[McSession], None]
Reply = bytes | Behaviour  # a canned reply, or a behaviour that sends (and maybe closes) itself


class FakeMemcached(FakeServer):
    """A fake server (see fakeserver.FakeServer) speaking just enough memcached text protocol.

    ``replies`` overrides the good reply per command line (``"stats"``, ``"stats items"``, ...).
    With ``auth`` set, the server demands ASCII auth like ``memcached -Y``: any command on an
    unauthenticated connection gets ``CLIENT_ERROR unauthenticated`` and the connection is
    closed; ``set <key> 0 0 <n>`` with data equal to ``auth`` gets ``STORED`` (anything else:
    ``CLIENT_ERROR authentication failure`` and a close). Without ``auth``, ``version`` gets
    ``VERSION 1.6.18`` and a ``set`` is "stored". With ``silent=True`` nothing is answered.
    Records every byte received, the command lines, the auth tokens, connections, the peak
    number of simultaneously open connections and the most bytes sent on one connection.
    """

    session_class = McSession

    def __init__(self, replies: dict[str, Reply] | None = None, *, silent: bool = False, auth: str | None = None,
                 name: str = "fake", port: int = 0) -> None:
        self.replies = {**GOOD, **(replies or {})}
        self.silent = silent
        self.auth = auth
        self.commands: collections.Counter[str] = collections.Counter()
        self.tokens: list[str] = []
        self.received = bytearray()
        super().__init__(name=name, port=port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def note_received(self, data: bytes) -> None:
        with self.lock:
            if len(self.received) < 1 << 20:
                self.received += data

    def count(self, command: str) -> int:
        with self.lock:
            return self.commands[command]

    def _handle(self, s: McSession) -> None:
        while True:
            line = s.read_line()
            if line is None:
                return
            words = line.split()
            if not words:
                continue
            line = " ".join(words)  # memcached's tokenizer skips extra spaces (the exporter pads its probe)
            if words[0] == "set":
                self._set(s, words)
                continue
            with self.lock:
                self.commands[line] += 1
            if self.silent:
                continue
            if self.auth is not None and not s.authenticated:
                s.send(b"CLIENT_ERROR unauthenticated\r\n")
                s.close_graceful()
            if line == "version":
                s.send(b"VERSION 1.6.18\r\n")
                continue
            reply = self.replies.get(line)
            if reply is None:
                s.send(b"ERROR\r\n")
            elif isinstance(reply, bytes):
                s.send(reply)
            else:
                reply(s)

    def _set(self, s: McSession, words: list[str]) -> None:
        with self.lock:
            self.commands["set"] += 1
        if len(words) != 5 or not words[4].isdigit():
            self.errors.append(f"malformed set command: {words!r}")
            s.send(b"CLIENT_ERROR bad command line format\r\n")
            s.close_graceful()
        data = s.read_exact(int(words[4]) + 2)
        if data is None:
            raise SessionClosed
        if not data.endswith(b"\r\n"):
            self.errors.append(f"set data block of the wrong length: {data[:80]!r}")
        token = data[:-2].decode("utf-8", "replace")
        with self.lock:
            self.tokens.append(token)
        if self.silent:
            return
        if self.auth is None:
            s.send(b"STORED\r\n")  # an ordinary server just stores the "password" as a value
        elif token == self.auth:
            s.authenticated = True
            s.send(b"STORED\r\n")
        else:
            s.send(b"CLIENT_ERROR authentication failure\r\n")
            s.close_graceful()


# --- behaviours ---------------------------------------------------------------------------

def garbage(s: Session) -> None:
    """An HTTP server on the memcached port: a non-STAT answer, then a (graceful) close."""
    s.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    s.close_graceful()


def garbage_open(s: Session) -> None:
    """The same non-STAT answer, but the peer keeps the connection open (no END ever comes)."""
    s.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def truncated(s: Session) -> None:
    body = GOOD["stats"]
    s.send(body[:len(body) // 2])
    s.close_graceful()


def long_line(s: Session) -> None:
    """A 12 KB line that never ends (below max_reply_size, above the 8192-byte line limit)."""
    s.send(b"STAT huge " + b"x" * 12000)
    s.wait_eof()
    raise SessionClosed


def firehose(s: Session) -> None:
    chunk = b"".join(b"STAT filler_%06d 1234567890\r\n" % i for i in range(2500))  # ~75 KB
    while True:
        s.send(chunk)


def trickle(s: Session) -> None:
    """A stats line every 50 ms, never END."""
    n = 0
    while True:
        s.send(b"STAT slow_%d 1\r\n" % n)
        n += 1
        s.pause(0.05)


def reset(s: Session) -> None:
    s.close_reset()


def error_line(text: bytes) -> bytes:
    return text + b"\r\n"


# --- helpers ------------------------------------------------------------------------------

def section_errors(m: Metrics, target: str) -> dict[str, float]:
    return {s[1]["section"]: s[2] for s in m.find("cache_exporter_section_errors_total", target=target)}


def eventually(predicate: Callable[[], object], timeout: float) -> bool:
    """Like wait_until, but returns False on timeout (so the assertion can say more)."""
    try:
        wait_until(predicate, timeout=timeout)
    except AssertionError:
        return False
    return True


def wait_for_polls(ep: ExporterProcess, target: str, n: int, timeout: float = 20) -> Metrics:
    return wait_metrics(ep, lambda m: (m.value("cache_exporter_polls_total", target=target) or 0) >= n,
                        timeout=timeout, message=f"{n} polls of {target}")


# --- the shared fault lab -----------------------------------------------------------------

# target name -> (reply overrides, silent, auth expected by the fake, target has credentials)
PARTIAL = {
    "good": {},
    "items-error": {"stats items": error_line(b"ERROR")},
    "settings-error": {"stats settings": error_line(b"ERROR")},
    "slabs-error": {"stats slabs": error_line(b"SERVER_ERROR x")},
    "malformed": {"stats": MALFORMED_STATS},
}
# target name -> (reply overrides, silent, expected reason)
FAILING: dict[str, tuple[dict[str, Reply], bool, str]] = {
    "stats-error": ({"stats": error_line(b"ERROR")}, False, "protocol"),
    # A non-STAT line is rejected as soon as it arrives, whether or not the peer then closes:
    # waiting for an END that never comes would turn it into a timeout.
    "garbage": ({"stats": garbage}, False, "protocol"),
    "garbage-open": ({"stats": garbage_open}, False, "protocol"),
    "truncated": ({"stats": truncated}, False, "reset"),
    "long-line": ({"stats": long_line}, False, "protocol"),
    "firehose": ({"stats": firehose}, False, "too_large"),
    "trickle": ({"stats": trickle}, False, "timeout"),
    "stall": ({}, True, "timeout"),
    "rst": ({"stats": reset}, False, "reset"),
    "no-version": ({"stats": NO_VERSION_STATS}, False, "protocol"),
}
EXPECTED = {name: reason for name, (_, _, reason) in FAILING.items()}
EXPECTED.update({"auth-fail": "auth", "auth-missing": "auth", "refused": "refused"})


class Lab:
    def __init__(self, ep: ExporterProcess, fakes: dict[str, FakeMemcached]) -> None:
        self.ep = ep
        self.fakes = fakes


def fake_target(name: str, fake: FakeMemcached, credentials: bool = False) -> dict:
    entry: dict[str, object] = {"name": name, "type": "memcached", "address": fake.address}
    if credentials:
        entry.update(username=USER, password_env=SECRET_ENV)
    return entry


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    fakes: dict[str, FakeMemcached] = {}
    ep: ExporterProcess | None = None
    try:
        targets = []
        for name, replies in PARTIAL.items():
            fakes[name] = FakeMemcached(replies, name=name)
            targets.append(fake_target(name, fakes[name]))
        for name, (replies, silent, _) in FAILING.items():
            fakes[name] = FakeMemcached(replies, silent=silent, name=name)
            targets.append(fake_target(name, fakes[name]))
        # ASCII auth: one server that wants our token, one that refuses it, one without -Y.
        fakes["auth-ok"] = FakeMemcached(auth=TOKEN, name="auth-ok")
        fakes["auth-fail"] = FakeMemcached(auth=f"{USER} some-other-password", name="auth-fail")
        fakes["noauth"] = FakeMemcached(name="noauth")
        for name in ("auth-ok", "auth-fail", "noauth"):
            targets.append(fake_target(name, fakes[name], credentials=True))
        # A -Y server, but no credentials configured: stats gets CLIENT_ERROR unauthenticated.
        fakes["auth-missing"] = FakeMemcached(auth=TOKEN, name="auth-missing")
        targets.append(fake_target("auth-missing", fakes["auth-missing"]))
        targets.append({"name": "refused", "type": "memcached", "address": f"127.0.0.1:{free_port()}"})
        config = {"global": fast_global(max_reply_size="64KiB"), "targets": targets}
        ep = start_exporter(tmp_path_factory.mktemp("memcached-faultlab"), config, {SECRET_ENV: SECRET})
        yield Lab(ep, fakes)
    finally:
        stop_lab(ep, fakes)


# --- the control: a well-behaved fake gives a full snapshot ---------------------------------

def test_good_fake_gives_a_full_snapshot(lab: Lab) -> None:
    m = wait_for_polls(lab.ep, "good", 4)
    assert m.value("cache_up", target="good", store="memcached") == 1
    assert m.value("memcached_up", target="good") == 1
    assert errors_by_reason(m, "good") == dict.fromkeys(REASONS, 0.0)
    assert section_errors(m, "good") == {}
    assert m.value("cache_exporter_malformed_fields_total", target="good") == 0
    assert m.value("memcached_version", target="good", version="1.6.18") == 1
    assert m.value("cache_items", target="good", store="memcached") == ITEMS
    assert m.value("cache_memory_used_bytes", target="good", store="memcached") == MALLOCED
    assert m.value("cache_memory_limit_bytes", target="good", store="memcached") == LIMIT
    assert m.value("cache_evicts_when_full", target="good", store="memcached") == 1
    assert m.value("memcached_slab_current_items", target="good", slab="1") == ITEMS
    assert m.value("memcached_slab_chunk_size_bytes", target="good", slab="1") == 96
    assert m.has("memcached_settings_info", target="good", evictions="on")
    fake = lab.fakes["good"]
    for command in ("stats", "stats settings", "stats slabs", "stats items"):
        assert fake.count(command) >= 4, (command, fake.commands)
    assert fake.count("version") == 0 and fake.count("set") == 0  # no credentials configured: no probe


# --- 1, 2: optional sections failing give partial snapshots ---------------------------------

def test_items_error_is_a_partial_snapshot_counted_once(lab: Lab) -> None:
    fake = lab.fakes["items-error"]
    m = wait_for_polls(lab.ep, "items-error", 6)
    assert m.value("cache_up", target="items-error", store="memcached") == 1
    assert m.value("memcached_up", target="items-error") == 1
    assert sum(errors_by_reason(m, "items-error").values()) == 0, errors_by_reason(m, "items-error")
    # Counted once, then skipped: the fake was asked only on the first poll.
    assert section_errors(m, "items-error") == {"items": 1}
    assert fake.count("stats items") == 1, fake.commands
    assert fake.count("stats") >= 6 and fake.count("stats slabs") >= 6, fake.commands
    # Items-derived series are absent; everything else is still there.
    assert not m.find("memcached_slab_current_items", target="items-error")
    assert not m.find("memcached_slab_items_age_seconds", target="items-error")
    assert m.value("cache_memory_used_bytes", target="items-error", store="memcached") == MALLOCED
    assert m.value("memcached_slab_chunk_size_bytes", target="items-error", slab="1") == 96
    assert m.value("cache_items", target="items-error", store="memcached") == ITEMS
    assert m.has("memcached_settings_info", target="items-error")
    status = lab.ep.target("items-error")
    assert status["up"] is True
    assert status["details"]["capabilities"] == {"settings": True, "slabs": True, "items": False}
    mentions = [line for line in lab.ep.log().splitlines() if "items-error" in line and "stats items" in line]
    assert len(mentions) == 1, mentions


def test_settings_error_is_a_partial_snapshot(lab: Lab) -> None:
    fake = lab.fakes["settings-error"]
    m = wait_for_polls(lab.ep, "settings-error", 5)
    assert m.value("cache_up", target="settings-error", store="memcached") == 1
    assert sum(errors_by_reason(m, "settings-error").values()) == 0
    assert section_errors(m, "settings-error") == {"settings": 1}
    assert fake.count("stats settings") == 1, fake.commands
    assert not m.find("memcached_settings_info", target="settings-error")
    assert not m.find("memcached_max_connections", target="settings-error")
    assert not m.find("cache_evicts_when_full", target="settings-error")
    assert m.value("cache_memory_used_bytes", target="settings-error", store="memcached") == MALLOCED
    assert m.value("memcached_slab_current_items", target="settings-error", slab="1") == ITEMS


def test_slabs_server_error_drops_memory_used(lab: Lab) -> None:
    fake = lab.fakes["slabs-error"]
    m = wait_for_polls(lab.ep, "slabs-error", 5)
    assert m.value("cache_up", target="slabs-error", store="memcached") == 1
    assert m.value("memcached_up", target="slabs-error") == 1
    assert sum(errors_by_reason(m, "slabs-error").values()) == 0
    assert section_errors(m, "slabs-error") == {"slabs": 1}
    assert fake.count("stats slabs") == 1, fake.commands
    # used = total_malloced comes from stats slabs: without it there is no used/utilization.
    assert not m.find("cache_memory_used_bytes", target="slabs-error")
    assert not m.find("cache_memory_utilization_ratio", target="slabs-error")
    assert not m.find("memcached_malloced_bytes", target="slabs-error")
    assert not m.find("memcached_slab_chunk_size_bytes", target="slabs-error")
    assert m.value("cache_memory_limit_bytes", target="slabs-error", store="memcached") == LIMIT
    assert m.value("memcached_slab_current_items", target="slabs-error", slab="1") == ITEMS
    assert m.value("cache_items", target="slabs-error", store="memcached") == ITEMS
    mentions = [line for line in lab.ep.log().splitlines() if "slabs-error" in line and "stats slabs" in line]
    assert len(mentions) == 1, mentions


# --- 12: non-numeric values are counted, not fatal ------------------------------------------

def test_non_numeric_values_are_counted_and_dropped(lab: Lab) -> None:
    m = wait_for_polls(lab.ep, "malformed", 4)
    assert m.value("cache_up", target="malformed", store="memcached") == 1
    ok_polls = m.value("cache_exporter_polls_total", target="malformed") - sum(
        errors_by_reason(m, "malformed").values())
    assert ok_polls >= 3
    # Two bad fields (curr_items, evictions) per successful poll.
    assert m.value("cache_exporter_malformed_fields_total", target="malformed") == 2 * ok_polls
    for name, labels in (("memcached_current_items", {}), ("memcached_items_evicted_total", {}),
                         ("cache_items", {"store": "memcached"}), ("cache_evictions_total", {"store": "memcached"})):
        assert not m.find(name, target="malformed", **labels), name
    assert m.value("memcached_limit_bytes", target="malformed") == LIMIT
    assert m.value("cache_hits_total", target="malformed", store="memcached") == 10
    assert m.value("memcached_version", target="malformed", version="1.6.18") == 1
    assert m.value("cache_memory_used_bytes", target="malformed", store="memcached") == MALLOCED


# --- 3-11: each fault is reported with its own reason -----------------------------------------

@pytest.mark.servers
@pytest.mark.parametrize("target", list(EXPECTED), ids=[f"{t}->{r}" for t, r in EXPECTED.items()])
def test_fault_is_reported_with_reason(lab: Lab, target: str) -> None:
    reason = EXPECTED[target]
    wait_for_reason(lab.ep, target, reason, count=3)
    # A few more polls, so an occasional misclassification (a race) has a chance to show.
    m = wait_for_polls(lab.ep, target, 7)
    assert_down(m, target, "memcached")
    errors = errors_by_reason(m, target)
    polls = m.value("cache_exporter_polls_total", target=target)
    # Every poll failed, and every failure was classified with this fault's reason.
    assert {r: n for r, n in errors.items() if n} == {reason: polls}, errors
    assert not m.find("memcached_version", target=target)
    assert_status_failed(lab.ep, target, reason)


def test_fakes_really_played_their_faults(lab: Lab) -> None:
    """The reasons above came from the scripted behaviour, not from some earlier failure."""
    for name in FAILING:
        fake = lab.fakes[name]
        # Each failure closes the connection; later polls reconnect and get the same treatment.
        wait_until(lambda fake=fake: fake.connections >= 2 and fake.count("stats") >= 2, timeout=15,
                   message=f"2 connections to {name}, each sent stats")
    assert lab.fakes["garbage"].max_sent == len(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert 0 < lab.fakes["truncated"].max_sent < len(GOOD["stats"])


@pytest.mark.servers
def test_never_ending_reply_is_cut_at_the_timeout(lab: Lab) -> None:
    fake = lab.fakes["trickle"]
    assert_polls_cut_at_timeout(lab.ep, "trickle")
    assert fake.count("stats") >= 3  # the fake really was trickling replies
    assert fake.max_active <= 1


def test_endless_fast_reply_is_cut_at_max_reply_size(lab: Lab) -> None:
    assert_reply_cut_at_max_size(lab.ep, lab.fakes["firehose"], "firehose", "memcached")


@pytest.mark.servers
def test_stalled_target_never_overlaps_itself(lab: Lab) -> None:
    fake = lab.fakes["stall"]
    assert_never_overlaps(lab.ep, fake, "stall")
    # Each connection got the whole pipelined request (and nothing was answered).
    assert fake.count("stats") >= 3 and fake.count("stats items") >= 3


# --- 13: ASCII authentication ------------------------------------------------------------

@pytest.mark.servers
def test_auth_is_sent_only_when_the_server_asks(lab: Lab) -> None:
    ep = lab.ep
    m = wait_for_polls(ep, "auth-ok", 4)
    wait_for_polls(ep, "noauth", 4)
    m = wait_for_reason(ep, "auth-fail", "auth", count=2)
    # The server that demands auth got exactly "<user> <password>" and then served stats.
    ok = lab.fakes["auth-ok"]
    assert m.value("cache_up", target="auth-ok", store="memcached") == 1
    assert sum(errors_by_reason(m, "auth-ok").values()) == 0, ep.target("auth-ok")["last_error"]
    assert m.value("cache_items", target="auth-ok", store="memcached") == ITEMS
    assert ok.tokens and set(ok.tokens) == {TOKEN}, ok.tokens
    assert len(ok.tokens) <= ok.connections - 1  # one auth per connection, after the version probe
    assert ok.count("version") >= len(ok.tokens)  # every auth was preceded by a probe
    # The server that refuses the credentials: reason auth, and the password is not retried in a loop.
    bad = lab.fakes["auth-fail"]
    assert set(bad.tokens) == {TOKEN}, bad.tokens
    assert bad.count("stats") == 0
    # The server without -Y: the password is never sent, polls succeed.
    plain = lab.fakes["noauth"]
    assert m.value("cache_up", target="noauth", store="memcached") == 1
    assert sum(errors_by_reason(m, "noauth").values()) == 0, ep.target("noauth")["last_error"]
    assert plain.count("version") == plain.connections, plain.commands  # one probe per connection
    assert plain.count("set") == 0 and plain.tokens == []
    with plain.lock:
        received = bytes(plain.received)
    assert b"stats" in received  # the recording works
    assert SECRET.encode() not in received and SECRET[:12].encode() not in received
    assert b"set " not in received and b"auth" not in received


def test_secret_never_leaks(lab: Lab) -> None:
    ep = lab.ep
    wait_for_reason(ep, "auth-fail", "auth", count=2)
    assert "authentication refused" in ep.target("auth-fail")["last_error"]["message"]
    assert_secret_not_exposed(ep, SECRET)
    # Only the two servers that asked for auth ever saw the secret.
    for name, fake in lab.fakes.items():
        with fake.lock:
            saw = SECRET.encode() in fake.received
        assert saw == (name in ("auth-ok", "auth-fail")), name


# --- 15: the daemon survives everything (runs last in the lab) ------------------------------

def test_daemon_survives_every_fault(lab: Lab) -> None:
    ep = lab.ep
    assert_daemon_survived(ep, [*PARTIAL, *EXPECTED, "auth-ok", "noauth"])
    assert "unexpected error" not in ep.log()
    assert ep.stop() == 0


# --- 13b: the server behind the address changes its auth mode (restart, failover) ----------

def _swap_exporter(exporter_factory, first: FakeMemcached) -> ExporterProcess:
    config = {"global": fast_global(), "targets": [fake_target("swap", first, credentials=True)]}
    ep = exporter_factory(config, env={SECRET_ENV: SECRET})
    wait_metrics(ep, lambda m: m.value("cache_up", target="swap", store="memcached") == 1, timeout=10,
                 message="swap target up on the first server")
    return ep


def test_password_not_sent_to_a_server_restarted_without_auth(exporter_factory) -> None:
    """Auth server replaced by one without -Y on the same port: the password must not be sent.

    An ordinary memcached stores ``set auth 0 0 N`` as a key, so sending it there leaves
    ``<user> <password>`` readable by any client (``get auth``).
    """
    first = FakeMemcached(auth=TOKEN, name="swap-auth")
    second: FakeMemcached | None = None
    try:
        ep = _swap_exporter(exporter_factory, first)
        assert first.tokens == [TOKEN]
        port = first.port
        first.close()
        second = FakeMemcached(name="swap-plain", port=port)
        plain = second
        wait_until(lambda: plain.count("stats") >= 2, timeout=15,
                   message="the exporter polling the restarted server")
        m = wait_metrics(ep, lambda m: m.value("cache_up", target="swap", store="memcached") == 1, timeout=10,
                         message="swap target up on the restarted server")
        assert m.value("memcached_up", target="swap") == 1
        with plain.lock:
            received = bytes(plain.received)
        assert plain.tokens == [], f"credentials sent to a server without auth (stored as a key): {plain.tokens}"
        assert SECRET.encode() not in received
        assert ep.stop() == 0
    finally:
        first.close()
        if second is not None:
            second.close()
    assert not first.errors and not (second and second.errors)


def test_recovers_when_a_server_restarts_with_auth(exporter_factory) -> None:
    """A server without -Y replaced by one with -Y: the exporter must authenticate, not stay down."""
    first = FakeMemcached(name="swap-plain")
    second: FakeMemcached | None = None
    try:
        ep = _swap_exporter(exporter_factory, first)
        assert first.count("version") == first.connections and first.tokens == []
        port = first.port
        first.close()
        second = FakeMemcached(auth=TOKEN, name="swap-auth", port=port)
        secured = second
        wait_until(lambda: secured.connections >= 2, timeout=15, message="the exporter reconnecting")

        def up() -> bool:
            return ep.metrics().value("cache_up", target="swap", store="memcached") == 1
        assert eventually(up, timeout=8), (
            f"still down after the server enabled auth: {ep.target('swap')['last_error']}; "
            f"{secured.connections} connections, auth tokens sent: {len(secured.tokens)}")
        assert secured.tokens and set(secured.tokens) == {TOKEN}
        assert ep.stop() == 0
    finally:
        first.close()
        if second is not None:
            second.close()
    assert not first.errors and not (second and second.errors)


# --- 14: a bad target never delays a good one ---------------------------------------------

def test_bad_targets_do_not_delay_a_real_memcached(memcached_factory, exporter_factory) -> None:
    server = memcached_factory(args=["-m", "8"])
    stall = FakeMemcached(silent=True, name="iso-stall")
    slow = FakeMemcached({"stats": trickle}, name="iso-trickle")
    try:
        config = {"global": fast_global(), "targets": [
            memcached_target("real", server),
            fake_target("stall", stall),
            fake_target("trickle", slow),
        ]}
        ep = exporter_factory(config)
        m, latencies = watch_good_target(ep, "memcached")
        assert section_errors(m, "real") == {}
        assert m.value("cache_exporter_last_poll_duration_seconds", target="real") < 0.4
        assert m.value("cache_memory_limit_bytes", target="real", store="memcached") == 8 * 2**20
        assert_not_delayed(m, latencies, "memcached")
        assert stall.max_active <= 1 and slow.max_active <= 1
        assert ep.stop() == 0
    finally:
        stall.close()
        slow.close()
    assert not stall.errors and not slow.errors, (stall.errors, slow.errors)


# --- a valid but huge reply -----------------------------------------------------------------

def huge_slabs(classes: int = 20_000) -> dict[str, bytes]:
    """``stats slabs`` and ``stats items`` for 20,000 slab classes (a real memcached has at most 63)."""
    slabs: dict[str, object] = {"active_slabs": classes, "total_malloced": MALLOCED}
    items: dict[str, object] = {}
    for c in range(1, classes + 1):
        slabs.update({f"{c}:chunk_size": 96, f"{c}:chunks_per_page": 10922, f"{c}:total_pages": 1,
                      f"{c}:used_chunks": 1, f"{c}:free_chunks": 10921, f"{c}:get_hits": 3, f"{c}:cmd_set": 4})
        items.update({f"items:{c}:number": 1, f"items:{c}:age": 100, f"items:{c}:evicted": 0})
    return {"stats slabs": stat_reply(slabs), "stats items": stat_reply(items)}


def test_huge_valid_reply_is_capped_and_does_not_delay_a_real_memcached(memcached_factory, exporter_factory) -> None:
    """60,034 series from 20,000 slab classes before."""
    server = memcached_factory(args=["-m", "8"])
    fake = FakeMemcached(huge_slabs(), name="huge")
    try:
        ep = exporter_factory({"global": {"interval": f"{HUGE_INTERVAL}s", "timeout": f"{HUGE_INTERVAL * 0.75}s"},
                               "targets": [memcached_target("real", server), fake_target("huge", fake)]})
        assert_huge_reply_capped(ep, "huge", "memcached", "memcached_slab_chunk_size_bytes", "real")
        assert ep.stop() == 0
    finally:
        fake.close()
    assert not fake.errors, fake.errors
