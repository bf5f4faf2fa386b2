"""The connection to a Redis server: our RESP2 client (``resp``) on netio's guarded socket
(TLS with our own context, the per-poll deadline and byte budget), the classification of its
failures into reasons, and the TLS handshake probe that tells a TLS-only port from a plain
server dropping clients."""

from __future__ import annotations

import socket
import ssl
import time

from exporter import errors as E
from exporter.errors import PollError
from exporter.netio import Guard, poll_tls_context
from exporter.sources.redis.resp import AuthError, Connection, ProtocolError, ServerError
from exporter.targets import RedisTarget

# Error replies that mean the client is not allowed in, whatever the command: the server's
# reason for refusing INFO too (docs/metrics.md, the ``auth`` reason).
AUTH_CODES = frozenset({"NOAUTH", "WRONGPASS", "NOPERM", "INVALIDUSERNAME"})


def new_connection(target: RedisTarget, password: str | None, guard: Guard) -> Connection:
    """An unconnected RESP2 connection to ``target`` whose socket opens under ``guard``."""
    t = target
    address: str | tuple[str, int] = (t.path or "") if t.scheme == "unix" else (t.host, t.port)
    tls = poll_tls_context(t.tls) if t.scheme == "rediss" else None
    # The connect itself is bounded by the guard (open_stream); ``timeout`` bounds each read.
    return Connection(address, guard, username=t.credentials.username, password=password, db=t.db,
                      timeout=t.timeout, tls_context=tls, server_name=t.tls.server_name if tls and t.tls else None)


def server_error_reason(err: ServerError) -> str:
    """The failure reason of an error reply that ends a poll."""
    if err.closes_connection:
        return E.RESET  # maxclients: the server hangs up right after saying so
    if isinstance(err, AuthError) or err.code in AUTH_CODES:
        return E.AUTH
    return E.ERROR


def classify(exc: BaseException) -> PollError:
    """The failure reason of an exception raised while connecting or polling."""
    if isinstance(exc, ServerError):
        return PollError(server_error_reason(exc), f"{exc.command or 'command'} refused: {exc.text}")
    reason = E.classify_os_error(exc)
    if reason:
        return PollError(reason, E.describe(exc))
    if isinstance(exc, (ProtocolError, UnicodeError)):
        return PollError(E.PROTOCOL, E.describe(exc))
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

