"""Connection plumbing shared by the TCP sources and discovery: per-poll deadlines and byte budgets, TLS.

Client libraries apply their socket timeout to each ``recv``; a server that trickles one
byte per second, or streams an endless bulk reply, would hold a poll (and memory) forever.
``GuardedSocket`` wraps the real socket and enforces, for the current poll, one absolute
deadline across every send/recv and one byte budget across every reply.
"""

from __future__ import annotations

import io
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from exporter.errors import PROTOCOL, RESET, TIMEOUT, TLS, TOO_LARGE, PollError, chain
from exporter.targets import TLSConfig

# A plain int: socket.MSG_PEEK is an IntFlag, and ``flags & IntFlag`` goes through the enum
# machinery on every recv (~9 % of the poll path's CPU at 1000 targets, py-spy).
_MSG_PEEK = int(socket.MSG_PEEK)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class Guard:
    """The current poll's limits. Re-armed by the source at the start of every poll."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.deadline = time.monotonic()
        self.received = 0
        self.tripped: str | None = None  # TIMEOUT or TOO_LARGE once a limit fired

    def arm(self, deadline: float) -> None:
        self.deadline = deadline
        self.received = 0
        self.tripped = None

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.tripped = TIMEOUT
            raise TimeoutError("poll deadline exceeded")
        return left

    def count(self, n: int) -> None:
        self.received += n
        if self.received > self.max_bytes:
            self.tripped = TOO_LARGE
            raise OSError(f"reply larger than {self.max_bytes} bytes")


class GuardedSocket:
    """A socket proxy that applies a ``Guard`` to every blocking call.

    Unknown attributes delegate to the wrapped socket, so ``hasattr(sock, "pending")``
    stays true exactly when the real socket is an ``ssl.SSLSocket``.
    """

    def __init__(self, sock: socket.socket, guard: Guard) -> None:
        self._sock = sock
        self._guard = guard
        self._requested_timeout: float | None = None
        # Like socket.socket: an open makefile() reader keeps the descriptor alive after close().
        # http.client closes the socket after the headers of a `Connection: close` response and
        # reads the body through the reader.
        self._io_refs = 0
        self._closed = False
        self.eof = False  # a read returned no bytes: the peer closed its side

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def _bound(self) -> None:
        left = self._guard.remaining()
        req = self._requested_timeout
        self._sock.settimeout(left if req is None else min(left, req))

    def settimeout(self, value: float | None) -> None:
        self._requested_timeout = value

    def gettimeout(self) -> float | None:
        return self._requested_timeout

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._bound()
        data = self._sock.recv(bufsize, flags)
        if not flags & _MSG_PEEK:
            self._guard.count(len(data))
            self.eof = self.eof or (bufsize > 0 and not data)
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._bound()
        n = self._sock.recv_into(buffer, nbytes, flags)
        self._guard.count(n)
        self.eof = self.eof or (n == 0 and (nbytes or len(buffer)) > 0)
        return n

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._bound()
        self._sock.sendall(data, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        self._bound()
        return self._sock.send(data, flags)

    def makefile(self, mode: str = "r", buffering: int | None = None, **_: object) -> io.BufferedReader:
        """A buffered reader whose reads go through this proxy (and so through the guard).

        ``http.client`` reads responses via ``sock.makefile("rb")``; delegating to the real
        socket's makefile would bypass the deadline and the byte budget. Writes go through
        ``sendall``, never through a file.
        """
        if "w" in mode:
            raise io.UnsupportedOperation(f"GuardedSocket.makefile({mode!r}): only reading is guarded")
        raw = _GuardedReader(self)
        self._io_refs += 1
        return io.BufferedReader(raw, buffering if buffering and buffering > 0 else io.DEFAULT_BUFFER_SIZE)

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs == 0:
            self._sock.close()

    def close(self) -> None:
        self._closed = True
        if self._io_refs == 0:
            self._sock.close()

    def abort(self) -> None:
        """Unblock a thread stuck in recv/send on this socket (called from the watchdog)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def open_stream(guard: Guard, address: str | tuple[str, int], tls_context: ssl.SSLContext | None = None,
                server_name: str | None = None) -> GuardedSocket:
    """The one way a source or a discovery connects: a unix socket path or a ``(host, port)``, within the
    guard's deadline, closed again on any failure; TCP gets TCP_NODELAY (a poll is a small
    request waiting for its reply, which Nagle would hold back) and, given a context, TLS
    verified for ``server_name`` or the host.

    Callers build the context first, with ``poll_tls_context``: unusable TLS files are then
    a ``tls`` failure whether or not the server is up, for every source alike. What this
    raises is left to ``errors.classify_os_error``.
    """
    if isinstance(address, str):
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        raw = socket.create_connection(address, timeout=guard.remaining())
    try:
        if isinstance(address, str):
            raw.settimeout(guard.remaining())
            raw.connect(address)
        else:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls_context is not None:
                raw.settimeout(guard.remaining())
                raw = tls_context.wrap_socket(raw, server_hostname=server_name or address[0])
    except BaseException:
        raw.close()
        raise
    return GuardedSocket(raw, guard)


def client_tls_context(tls: TLSConfig) -> ssl.SSLContext:
    """Build a client context; raises ``ssl.SSLError``/``OSError`` for unusable files."""
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


def poll_tls_context(tls: TLSConfig | None) -> ssl.SSLContext:
    """``client_tls_context`` inside a poll: files that became unusable since the config was
    checked are a counted ``tls`` failure of that target."""
    try:
        return client_tls_context(tls or TLSConfig())
    except (OSError, ValueError) as exc:
        raise PollError(TLS, f"cannot load TLS files: {exc}") from None


class ReplyTooLarge(OSError):
    """A reply (declared, received or decompressed) exceeds the byte budget."""


def bounded_gunzip(data: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing to produce more than ``limit`` bytes (gzip bombs).

    Raises ReplyTooLarge past the limit, ValueError for a body that is not (complete) gzip.
    """
    import zlib

    d = zlib.decompressobj(wbits=47)  # gzip or zlib header
    try:
        out = d.decompress(data, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise ReplyTooLarge(f"decompressed body larger than {limit} bytes")
        out += d.flush()
    except zlib.error as exc:
        raise ValueError(f"the body is labelled gzip but is not: {exc}") from None
    if not d.eof:
        raise ValueError("the gzip body is truncated")
    return out


def authorization(username: str | None, password: str) -> str:
    """The Authorization value for an HTTP target: basic with a username, else a bearer token."""
    import base64

    from exporter.secrets import remember

    if not username:
        return f"Bearer {password}"
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    remember(token)  # the encoded form is as secret as the password
    return f"Basic {token}"


def classify_http_error(exc: BaseException) -> str | None:
    """The reason for an HTTP-level failure; None for what the socket-level rules decide."""
    import http.client

    if isinstance(exc, ReplyTooLarge):
        return TOO_LARGE
    if isinstance(exc, http.client.IncompleteRead):
        # http.client turns a chunk-size line it cannot parse into IncompleteRead(b''), with
        # the ValueError as its context: that is a malformed reply, not a cut connection.
        return PROTOCOL if any(isinstance(e, ValueError) for e in chain(exc)) else RESET
    # A bad status line, > 100 header lines, a line > 64 KiB; RemoteDisconnected is an OSError (reset).
    if isinstance(exc, http.client.HTTPException) and not isinstance(exc, OSError):
        return PROTOCOL
    # ssl.CertificateError is a ValueError too: that one is a TLS failure, left to the socket rules.
    if isinstance(exc, ValueError) and not isinstance(exc, (UnicodeError, ssl.CertificateError)):
        return PROTOCOL
    return None


class _GuardedReader(io.RawIOBase):
    """``socket.SocketIO`` for a ``GuardedSocket``: reads via its ``recv_into``; closing the
    last reader of a closed socket closes the descriptor."""

    def __init__(self, sock: GuardedSocket) -> None:
        super().__init__()
        self._sock = sock
        self._timed_out = False

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._sock.fileno()

    def readinto(self, buffer: WriteableBuffer) -> int:
        # As SocketIO: after a timeout the buffered reader's state is unknown; no further reads.
        if self._timed_out:
            raise OSError("cannot read from timed out object")
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            self._timed_out = True
            raise

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._sock._decref_socketios()


DRAIN_SECONDS = 0.5  # how long a small body may take to arrive before the connection is closed instead


class GuardedHTTPConnection:
    """One persistent HTTP/1.1 connection whose every read and write obeys a ``Guard``."""

    def __init__(self, host: str, port: int, guard: Guard, tls_context: ssl.SSLContext | None = None,
                 server_name: str | None = None) -> None:
        import http.client

        self.guard = guard
        outer = self

        class _Response(http.client.HTTPResponse):
            def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
                super().__init__(sock, *args, **kwargs)
                self.guarded_sock = sock  # head() asks it whether the headers ended in EOF

            def _read_status(self) -> Any:
                # http.client skips only "100 Continue"; a 102/103 (Early Hints) would be taken
                # for the answer, and the real one left in the read buffer. Skip every interim
                # response but 101 (RFC 9110 15.2); 100 is left to http.client.
                while True:
                    # typeshed leaves out http.client's private hook overridden here.
                    version, status, reason = super()._read_status()  # type: ignore[misc]
                    if not 100 < status < 200 or status == 101:
                        return version, status, reason
                    http.client.parse_headers(self.fp)

        class _Conn(http.client.HTTPConnection):
            response_class = _Response

            def connect(self) -> None:  # noqa: D401 - http.client hook
                self.sock = open_stream(outer.guard, (self.host, self.port), tls_context,
                                        server_name or host)
                outer.connects += 1

        self.connects = 0
        self.headers_at = 0.0
        self.conn = _Conn(host, port, timeout=None)

    @property
    def sock(self) -> GuardedSocket | None:
        sock = self.conn.sock  # http.client declares a plain socket; connect() above set ours
        return sock if isinstance(sock, GuardedSocket) else None

    def get(self, path: str, headers: dict[str, str], limit: int) -> tuple[int, dict[str, str], bytes]:
        """GET ``path``; returns (status, lower-cased headers, body), the body gunzipped and bounded."""
        resp = self._exchange("GET", path, headers)
        declared_text = resp.getheader("Content-Length")
        declared = int(declared_text) if declared_text is not None and declared_text.isdigit() else None
        if declared is not None and declared > limit:
            raise ReplyTooLarge(f"response declares {declared} bytes, larger than {limit}")
        body = resp.read(limit + 1)
        if len(body) > limit:
            raise ReplyTooLarge(f"response body larger than {limit} bytes")
        if declared is not None and len(body) < declared:
            raise ConnectionResetError(f"body ended after {len(body)} of {declared} bytes")
        if not resp.isclosed():
            resp.read()  # should be empty; keeps the connection usable
        got = {k.lower(): v for k, v in resp.getheaders()}
        if got.get("content-encoding", "").lower() == "gzip":
            body = bounded_gunzip(body, limit)
        if resp.will_close:
            self.close()
        return resp.status, got, body

    def _exchange(self, method: str, path: str, headers: dict[str, str]) -> Any:
        import http.client

        reused = self.conn.sock is not None
        try:
            self.conn.request(method, path, headers=headers)
            return self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            # The server closed the idle keep-alive connection (Node.js keepAliveTimeout is 5 s,
            # shorter than most poll intervals): that is not a failure; try once on a new one.
            self.close()
            self.conn.request(method, path, headers=headers)
            return self.conn.getresponse()

    def head(self, method: str, path: str, headers: dict[str, str],
             drain_limit: int, max_header_bytes: int) -> tuple[int, list[tuple[str, str]]]:
        """Send a request and return (status, raw header lines) without needing the body.

        A small declared body (<= ``drain_limit``) is read and dropped so the connection can be
        reused, if it arrives within ``DRAIN_SECONDS``; anything else (chunked, large, slow) is
        not read at all: the connection is closed instead. Reading the body can therefore never
        fail the request, nor stall it more than ``DRAIN_SECONDS``. ``headers_at`` is the
        monotonic time the head was in (before any draining).
        ``max_header_bytes`` narrows the guard's byte budget while the head is read (plus one
        read-ahead buffer, which may already hold the start of the body).
        """
        import http.client

        budget = self.guard.max_bytes
        self.guard.max_bytes = min(budget, self.guard.received + max_header_bytes + io.DEFAULT_BUFFER_SIZE)
        try:
            resp = self._exchange(method, path, headers)
        finally:
            self.guard.max_bytes = budget
        if getattr(getattr(resp, "guarded_sock", None), "eof", False):
            # http.client takes EOF for the end of the headers; the head was cut (RFC 9112 section 8).
            resp.close()
            self.close()
            raise ConnectionResetError("the connection closed inside the response headers")
        self.headers_at = time.monotonic()
        status, fields = resp.status, list(resp.getheaders())
        # RFC 9112 6.3: differing or invalid Content-Length values (http.client takes the first
        # one, and int() also takes "+5" or "5_0") leave the framing unknown: draining by one of
        # them could leave the rest of the body to be read as the next response. Close instead.
        declared = {v.strip() for k, v in fields if k.lower() == "content-length"}
        bodiless = method == "HEAD" or status in (204, 304) or 100 <= status < 200  # http.client's length 0
        if not bodiless and (len(declared) > 1 or not all(d.isdigit() and d.isascii() for d in declared)):
            self.close()
            return status, fields
        if resp.length is not None and resp.length <= drain_limit and not resp.will_close:
            tripped, deadline = self.guard.tripped, self.guard.deadline
            # The answer is in hand: give a small body a moment, not the rest of the request's time.
            self.guard.deadline = min(deadline, time.monotonic() + DRAIN_SECONDS)
            try:
                resp.read()
                return status, fields
            except (OSError, http.client.HTTPException):
                self.guard.tripped = tripped  # the body is not needed: give the connection up instead
            finally:
                self.guard.deadline = deadline
        elif resp.length == 0 and not resp.will_close:
            return status, fields
        self.close()
        return status, fields

    def close(self) -> None:
        self.conn.close()
