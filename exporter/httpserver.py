"""An HTTP/1.1 server for the exporter's few small endpoints, bounded against slow and hostile clients.

asyncio accepts connections and reads them; h11 does the framing (Content-Length and chunked bodies,
keep-alive for HTTP/1.0 and 1.1, conflicting lengths refused), so a request body is always read as a
body and never parsed as the next request. A slow client costs a socket, never a thread: the
handler runs on a small fixed thread pool, and only once the whole request has arrived. An optional
fast handler is asked first, on the loop thread: it answers what it can without blocking (a /metrics
body already built) and the pool gets the rest -- the hand-off to a thread and back cost more than
building such a body.

Bounds (``Limits``): the listen backlog; the open connections (at the cap, the connection idle the
longest -- waiting for a request or still sending one -- is closed to admit the new one, so a scrape
is never locked out by slow clients); the time to send a request head, to wait between keep-alive
requests, to send a body, and to take a response; the size of a head and of a body.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus

import h11

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    backlog: int = 1024  # the kernel caps it at net.core.somaxconn (4096 on current Linux)
    max_connections: int = 512
    workers: int = 4  # threads running handlers: a /metrics body is built from stored bytes
    head_timeout: float = 10.0  # from a request's first byte (or the TLS handshake's) to its last header
    idle_timeout: float = 120.0  # keep-alive: longer than any sane scrape interval's gap
    body_timeout: float = 10.0
    write_timeout: float = 30.0
    max_head: int = 16 * 1024
    max_body: int = 64 * 1024


@dataclass
class Request:
    method: str
    path: str  # without the query
    query: str
    headers: Mapping[str, str]  # lower-case names; a repeated header's values joined by ", "
    body: bytes
    peer: str
    tls: bool


@dataclass
class Response:
    status: int
    body: list[bytes] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False  # close the connection after this response


Handler = Callable[[Request], Response]
# Called on the event loop thread: a Response only when it can answer at once without blocking
# (e.g. /metrics from an already built body), else None and the request goes to the pool.
FastHandler = Callable[[Request], "Response | None"]
TLSProvider = Callable[[], "ssl.SSLContext | None"]


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket. An empty host listens on every address, IPv6 and IPv4 alike where the
    machine has IPv6 (one dual-stack socket), else on every IPv4 address."""
    if host == "":
        if socket.has_ipv6:
            try:
                sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            except OSError:  # IPv6 compiled in but disabled in the kernel
                sock = None
            if sock is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    return _listen(sock, ("::", port), backlog)
                except OSError:
                    sock.close()
        host = "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if family == socket.AF_INET:
        try:
            socket.inet_aton(host)
        except OSError:  # a name: the first address it resolves to
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, _, _, addr = infos[0]
            host = str(addr[0])
    return _listen(socket.socket(family, socket.SOCK_STREAM), (host, port), backlog)


def _listen(sock: socket.socket, address: tuple[str, int], backlog: int) -> socket.socket:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Conn:
    __slots__ = ("task", "transport", "busy")

    def __init__(self, task: asyncio.Task[None] | None) -> None:
        self.task = task
        self.transport: asyncio.Transport | None = None  # once the TLS handshake (if any) is done
        self.busy = False  # a request is being handled or its response written: never evicted

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        elif self.task is not None:
            # Still inside connect_accepted_socket: asyncio owns the socket and has callbacks queued on
            # its fd, so closing the socket here would hand them a dead (or reused) descriptor.
            # Cancelling makes asyncio close its transport, which turns those callbacks into no-ops.
            self.task.cancel()


class _Refused(Exception):
    """The client broke the protocol or a bound: answer ``status`` (if possible) and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Server:
    """Serves ``handler`` on every address until ``shutdown()``. Sockets are bound at construction
    (an address in use raises OSError there); ``serve_forever`` runs the event loop in its thread."""

    def __init__(self, addresses: list[tuple[str, int]], handler: Handler, limits: Limits | None = None,
                 tls: TLSProvider | None = None, fast_handler: FastHandler | None = None) -> None:
        self.limits = limits or Limits()
        self.handler = handler
        self.fast_handler = fast_handler
        self.tls = tls or (lambda: None)
        self._socks: list[socket.socket] = []
        try:
            for host, port in addresses:
                self._socks.append(bind(host, port, self.limits.backlog))
        except OSError:
            self.server_close()
            raise
        self._conns: dict[_Conn, None] = {}  # insertion order: the oldest first
        self._tasks: set[asyncio.Task] = set()
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="http-worker")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self.refused = 0  # connections turned away at the cap with every slot busy
        self.evicted = 0  # idle or slow connections closed to admit a new one
        self.fast_served = 0  # requests answered on the loop thread, without the worker pool

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self._socks]

    @property
    def server_address(self) -> tuple[str, int]:
        return self.addresses[0]

    @property
    def connections(self) -> int:
        return len(self._conns)

    def serve_forever(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving and wait for the loop to end (from another thread)."""
        if not self._started.wait(timeout=5):
            return
        if self._loop is not None and self._stop is not None and not self._stopped.is_set():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._stopped.wait(timeout=10)

    def server_close(self) -> None:
        for sock in self._socks:
            sock.close()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(_log_loop_exception)
        self._stop = asyncio.Event()
        # Our own accept loops rather than asyncio.start_server: each connection gets the TLS context
        # current at its accept (certificate rotation), wrapped before a byte is read, and the listen
        # backlog stays the one ``bind`` set.
        accepting = [asyncio.create_task(self._accept_loop(sock)) for sock in self._socks]
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            for task in accepting:
                task.cancel()
            for conn in list(self._conns):
                conn.abort()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*accepting, *self._tasks, return_exceptions=True)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors: back off rather than spin
                log.warning("http: accept failed: %s", exc.strerror or exc)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._connection(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connection(self, sock: socket.socket) -> None:
        conn = _Conn(asyncio.current_task())
        if len(self._conns) >= self.limits.max_connections:
            victim = next((c for c in self._conns if not c.busy), None)
            if victim is None:
                self.refused += 1
                log.debug("http: %d connections, all busy: refusing one", len(self._conns))
                try:
                    sock.setblocking(False)
                    sock.send(_plain_response(503, "too many connections\n"))
                except OSError:
                    pass
                sock.close()
                return
            self.evicted += 1
            self._conns.pop(victim, None)
            victim.abort()
        self._conns[conn] = None
        peer = "?"
        loop = asyncio.get_running_loop()
        writer = None
        try:
            peer = str(sock.getpeername()[0])
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small responses: no Nagle delay
            ctx = self.tls()
            reader = asyncio.StreamReader(limit=self.limits.max_head, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=ctx,
                ssl_handshake_timeout=self.limits.head_timeout if ctx is not None else None)
            conn.transport = transport
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._serve(conn, reader, writer, peer, ctx is not None)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError, OSError) as exc:
            log.debug("http %s: connection ended: %s", peer, type(exc).__name__)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: through the logger, never a bare traceback on stderr
            log.exception("http %s: error", peer)
        finally:
            self._conns.pop(conn, None)
            if writer is not None:
                writer.close()
            else:
                # After callbacks asyncio may already have queued for this fd (see _Conn.abort);
                # closing a socket object twice is harmless.
                loop.call_soon(sock.close)

    async def _serve(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: str, tls: bool) -> None:
        lim = self.limits
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=lim.max_head)
        first = True
        while True:
            try:
                request = await self._read_request(h, reader, peer, tls, first)
            except _Refused as exc:
                log.debug("http %s: %s", peer, exc)
                if h.our_state in (h11.IDLE, h11.SEND_RESPONSE) and exc.status:
                    await self._write(writer, h, Response(exc.status, [f"{exc}\n".encode()],
                                                          [("Content-Type", "text/plain; charset=utf-8")],
                                                          close=True), head=False)
                return
            if request is None:  # the client closed between requests, or stayed idle too long
                return
            first = False
            conn.busy = True
            try:
                response = self._fast(request, peer)
                if response is None:
                    response = await asyncio.get_running_loop().run_in_executor(self._pool, self.handler, request)
                await self._write(writer, h, response, head=request.method == "HEAD")
            finally:
                conn.busy = False
            if h.our_state is h11.MUST_CLOSE or h.their_state is h11.MUST_CLOSE or response.close:
                return
            try:
                h.start_next_cycle()
            except h11.LocalProtocolError:
                return

    def _fast(self, request: Request, peer: str) -> Response | None:
        """The fast handler's answer, or None for the pool. The handoff to a worker thread and back
        costs more than building a cached /metrics body (docs/benchmarks.md, "Design measurements")."""
        if self.fast_handler is None:
            return None
        try:
            response = self.fast_handler(request)
        except Exception:  # never into the loop: the pool path answers instead
            log.debug("http %s: fast path failed, using the pool", peer, exc_info=True)
            return None
        if response is not None:
            self.fast_served += 1
        return response

    async def _read_request(self, h: h11.Connection, reader: asyncio.StreamReader, peer: str, tls: bool,
                            first: bool) -> Request | None:
        """The next whole request, or None when the client closed or idled out between requests."""
        lim = self.limits
        head: h11.Request | None = None
        # A new connection must send its head promptly; on keep-alive the clock starts at the first byte.
        deadline = time.monotonic() + lim.head_timeout if first else None
        body = bytearray()
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Refused(exc.error_status_hint, f"bad request: {exc}") from None
            if event is h11.NEED_DATA:
                timeout = lim.idle_timeout if deadline is None else deadline - time.monotonic()
                if timeout <= 0:
                    raise _Refused(408, "request timeout")
                try:
                    data = await asyncio.wait_for(reader.read(65536), timeout)
                except TimeoutError:
                    if deadline is None:
                        return None
                    raise _Refused(408, "request timeout") from None
                if deadline is None:
                    deadline = time.monotonic() + lim.head_timeout
                h.receive_data(data)  # b"" is the end of the stream
            elif isinstance(event, h11.Request):
                head = event
                names = [n for n, _ in event.headers]
                if b"transfer-encoding" in names and b"content-length" in names:
                    raise _Refused(400, "bad request: both Transfer-Encoding and Content-Length")
                deadline = time.monotonic() + lim.body_timeout
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > lim.max_body:
                    raise _Refused(413, f"request body over {lim.max_body} bytes")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return _request(head, bytes(body), peer, tls)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _write(self, writer: asyncio.StreamWriter, h: h11.Connection, response: Response, head: bool) -> None:
        headers = list(response.headers)
        headers.append(("Content-Length", str(sum(len(p) for p in response.body))))
        if response.close:
            headers.append(("Connection", "close"))
        try:
            reason = HTTPStatus(response.status).phrase.encode()
        except ValueError:
            reason = b""
        writer.write(h.send(h11.Response(status_code=response.status, headers=headers, reason=reason)) or b"")
        if not head:
            for part in response.body:
                writer.write(h.send(h11.Data(data=part)) or b"")
        writer.write(h.send(h11.EndOfMessage()) or b"")
        await asyncio.wait_for(writer.drain(), self.limits.write_timeout)


def _request(head: h11.Request, body: bytes, peer: str, tls: bool) -> Request:
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = head.target.decode("latin-1")
    path, _, query = target.partition("?")
    return Request(head.method.decode("latin-1"), path, query, headers, body, peer, tls)


def _plain_response(status: int, text: str) -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    exc = context.get("exception")
    if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
        log.debug("http: %s", context.get("message") or exc)
    else:
        log.error("http: %s", context.get("message"), exc_info=exc)
