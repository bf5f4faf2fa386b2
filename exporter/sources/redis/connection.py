"""The connection to a Redis server: redis-py's RESP connection on netio's guarded socket
(TLS with our own context, the per-poll deadline and byte budget), the classification of its
failures into reasons, and the TLS handshake probe that tells a TLS-only port from a plain
server dropping clients."""

from __future__ import annotations

import socket
import ssl
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from exporter import errors as E
from exporter.errors import PollError
from exporter.netio import Guard, GuardedSocket, open_stream, poll_tls_context
from exporter.targets import RedisTarget


class _GuardedMixin:
    """Replaces redis-py's socket creation with netio's opener: TLS with our own context, the
    per-poll guard, and the failure classification every source shares."""

    _guard: Guard
    _tls_context: ssl.SSLContext | None = None
    _server_name: str | None = None

    def _address(self) -> str | tuple[str, int]:
        raise NotImplementedError

    def _connect(self) -> GuardedSocket:
        return open_stream(self._guard, self._address(), self._tls_context, self._server_name)


class _TCPConnection(_GuardedMixin, redis.Connection):
    def _address(self) -> tuple[str, int]:
        return self.host, self.port


class _UnixConnection(_GuardedMixin, redis.UnixDomainSocketConnection):
    def _address(self) -> str:
        return self.path

    # redis-py declares ``host`` abstract and reads it on some failure paths (a connect timeout)
    # of every connection; a socket's address is its path, and a path does not move.
    @property
    def host(self) -> str:
        return self.path

    @host.setter
    def host(self, value: str) -> None:
        pass


def new_connection(target: RedisTarget, password: str | None, guard: Guard) -> redis.connection.AbstractConnection:
    """An unconnected RESP2 connection to ``target`` whose socket opens under ``guard``."""
    t = target
    common = dict(
        username=t.credentials.username, password=password, db=t.db,
        socket_timeout=t.timeout,  # the connect itself is bounded by the guard (open_stream)
        retry=Retry(NoBackoff(), 0), driver_info=None, health_check_interval=0,
        # RESP2: redis-py 8 defaults to RESP3, whose HELLO handshake costs a round trip
        # and fails outright on Redis 5 and on servers with HELLO renamed away.
        protocol=2,
        # INFO ALL is ~10 KiB; redis-py's 64 KiB default buffer per target is waste at scale.
        socket_read_size=16384,
    )
    conn: _TCPConnection | _UnixConnection
    if t.scheme == "unix":
        conn = _UnixConnection(path=t.path, **common)
    else:
        conn = _TCPConnection(host=t.host, port=t.port, **common)
        if t.scheme == "rediss":
            conn._tls_context = poll_tls_context(t.tls)
            conn._server_name = t.tls.server_name if t.tls else None
    conn._guard = guard
    return conn


def classify(exc: BaseException) -> PollError:
    """The failure reason of an exception raised while connecting or polling."""
    if isinstance(exc, (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)):
        return PollError(E.AUTH, E.describe(exc))
    if isinstance(exc, redis.exceptions.ResponseError):
        word = str(exc).split(" ", 1)[0].upper()
        if word in ("NOAUTH", "WRONGPASS", "NOPERM", "INVALIDUSERNAME"):
            return PollError(E.AUTH, E.describe(exc))
        return PollError(E.ERROR, E.describe(exc))
    reason = E.classify_os_error(exc)
    if reason:
        return PollError(reason, E.describe(exc))
    if isinstance(exc, redis.exceptions.TimeoutError):
        return PollError(E.TIMEOUT, E.describe(exc))
    if isinstance(exc, (redis.exceptions.InvalidResponse, redis.exceptions.DataError, UnicodeError)):
        return PollError(E.PROTOCOL, E.describe(exc))
    if isinstance(exc, redis.exceptions.ConnectionError):
        text = str(exc).lower()
        if "closed by server" in text or "connection reset" in text:
            return PollError(E.RESET, E.describe(exc))
        if "protocol" in text:
            return PollError(E.PROTOCOL, E.describe(exc))
        return PollError(E.RESET, E.describe(exc))
    return PollError(E.ERROR, E.describe(exc))


TLS_PROBE_TIMEOUT = 2.0


def speaks_tls(host: str, port: int, deadline: float) -> bool:
    """Whether ``host:port`` takes part in a TLS handshake: it completes one, or answers the
    ClientHello with a TLS alert (e.g. it wants a client certificate). Nothing is verified: this
    only tells a TLS port from a plain one, and nothing is sent after the handshake."""
    timeout = min(TLS_PROBE_TIMEOUT, deadline - time.monotonic())
    if timeout <= 0:
        return False
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.settimeout(max(0.001, min(timeout, deadline - time.monotonic())))  # connect + handshake within it
            with ctx.wrap_socket(raw, server_hostname=host or None):
                return True
    except ssl.SSLError as exc:
        return "ALERT" in str(exc.reason or "").upper()
    except (OSError, ValueError):
        return False

