"""The Redis source's own RESP2 client (exporter/sources/redis/resp.py) against a scripted
in-process server: the AUTH fallback for Redis < 6, pipelines kept in step across error replies,
and what each kind of error reply means for a poll. Threads, no process: the fast tier."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fakeserver import FakeServer, RespSession

from exporter.netio import Guard
from exporter.sources.redis import classify, new_connection
from exporter.sources.redis.resp import AuthError, Connection, ProtocolError, ServerError
from exporter.targets import Credentials, RedisTarget

UNKNOWN = b"-ERR unknown command\r\n"


class Scripted(FakeServer):
    """Answers each command it is sent by the reply scripted for it (``UNKNOWN`` otherwise); a
    reply of None closes the connection instead. Records every command, in order."""

    session_class = RespSession

    def __init__(self, script: dict[tuple[str, ...], bytes | None], greeting: bytes = b"") -> None:
        self.script = script
        self.greeting = greeting  # sent as soon as a client connects, before it says anything
        self.seen: list[tuple[str, ...]] = []
        super().__init__(name="scripted-redis")

    def _handle(self, s: RespSession) -> None:
        if self.greeting:
            s.send(self.greeting)
        while (command := s.read_command()) is not None:
            words = tuple(command)
            self.seen.append(words)
            reply = self.script.get(words, UNKNOWN)
            if reply is None:
                return
            s.send(reply)


@pytest.fixture
def scripted() -> Iterator[list[Scripted]]:
    servers: list[Scripted] = []
    yield servers
    for s in servers:
        s.close()


def connection(server: Scripted, username: str | None = None, password: str | None = None,
               db: int = 0) -> Connection:
    target = RedisTarget(name="t", type="redis", interval=15, timeout=2, host="127.0.0.1", port=server.port,
                         db=db, credentials=Credentials(username=username))
    guard = Guard(1 << 20)
    guard.arm(time.monotonic() + 5)
    return new_connection(target, password, guard)


def test_auth_with_a_user_falls_back_to_the_password_alone_on_redis_5(scripted: list[Scripted]) -> None:
    server = Scripted({("AUTH", "exporter", "pw"): b"-ERR wrong number of arguments for 'auth' command\r\n",
                       ("AUTH", "pw"): b"+OK\r\n", ("SELECT", "2"): b"+OK\r\n", ("PING",): b"+PONG\r\n"})
    scripted.append(server)
    conn = connection(server, "exporter", "pw", db=2)
    conn.connect()
    assert conn.call("PING") == b"PONG"
    conn.close()
    # AUTH and SELECT went in one write; after the arity error both again, the password alone.
    assert server.seen == [("AUTH", "exporter", "pw"), ("SELECT", "2"), ("AUTH", "pw"), ("SELECT", "2"), ("PING",)]


def test_a_refused_auth_is_an_auth_failure(scripted: list[Scripted]) -> None:
    server = Scripted({("AUTH", "s3cr3t-pw"): b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"})
    scripted.append(server)
    conn = connection(server, password="s3cr3t-pw")
    with pytest.raises(AuthError) as info:
        conn.connect()
    conn.close()
    err = classify(info.value)
    assert err.reason == "auth" and "AUTH refused: WRONGPASS invalid username-password pair" in str(err)


def test_error_replies_keep_a_pipeline_in_step_and_each_means_its_reason(scripted: list[Scripted]) -> None:
    server = Scripted({
        ("CLIENT", "SETNAME", "x"): b"-NOPERM this user has no permissions to run the 'client|setname' command\r\n",
        ("INFO", "ALL"): b"-LOADING Redis is loading the dataset in memory\r\n",
        ("CONFIG", "GET", "*"): b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n",
        ("DBSIZE",): b":0\r\n",
    })
    scripted.append(server)
    conn = connection(server)
    conn.connect()
    denied, loading, config, size = conn.execute([("CLIENT", "SETNAME", "x"), ("INFO", "ALL"), ("CONFIG", "GET", "*"),
                                                  ("DBSIZE",)])
    assert isinstance(denied, ServerError) and denied.code == "NOPERM" and denied.command == "CLIENT"
    assert isinstance(loading, ServerError) and loading.code == "LOADING"
    assert (config, size) == ([b"maxmemory", b"0"], 0)  # a 0 reply is 0, not "incomplete"
    assert (classify(denied).reason, classify(loading).reason) == ("auth", "error")
    assert str(classify(loading)).endswith("INFO refused: LOADING Redis is loading the dataset in memory")
    with pytest.raises(ServerError, match="unknown command"):
        conn.call("NOSUCH")
    conn.close()


def test_max_clients_is_a_reset_not_an_auth_failure(scripted: list[Scripted]) -> None:
    """Redis greets a client over maxclients with this error and hangs up: whatever the client
    sent first (AUTH here) seems to be refused, but the server simply closed the connection."""
    server = Scripted({("AUTH", "pw"): None}, greeting=b"-ERR max number of clients reached\r\n")
    scripted.append(server)
    conn = connection(server, password="pw")
    with pytest.raises(ServerError) as info:
        conn.connect()
    conn.close()
    assert classify(info.value).reason == "reset"


def test_a_close_mid_reply_is_a_reset_and_bytes_not_resp_are_protocol(scripted: list[Scripted]) -> None:
    server = Scripted({("INFO", "ALL"): b"$100\r\npartial", ("PING",): None})
    scripted.append(server)
    conn = connection(server)
    conn.connect()
    with pytest.raises(ConnectionResetError) as info:
        conn.execute([("INFO", "ALL"), ("PING",)])
    assert classify(info.value).reason == "reset"
    conn.close()
    garbage = Scripted({}, greeting=b"HTTP/1.1 400 Bad Request\r\n\r\n")
    scripted.append(garbage)
    conn = connection(garbage)
    conn.connect()
    with pytest.raises(ProtocolError) as bad:
        conn.read()
    assert classify(bad.value).reason == "protocol"
    conn.close()
