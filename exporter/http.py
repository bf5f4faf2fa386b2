"""The HTTP endpoints: /metrics, /healthz, /readyz, /targets, /-/reload and a landing page."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from exporter import __version__
from exporter.exposition import CONTENT_TYPE
from exporter.secrets import redact, redact_values

if TYPE_CHECKING:
    from exporter.daemon import Daemon

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0  # a client that stalls mid-request must not hold a thread forever
MAX_REQUEST_BODY = 64 * 1024

_LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>cache-exporter</title></head>
<body><h1>cache-exporter {version}</h1>
<p>Warns before a cache runs out of memory.</p>
<ul>
<li><a href="metrics">/metrics</a> &mdash; Prometheus metrics (from stored polls; a scrape never contacts a target)</li>
<li><a href="targets">/targets</a> &mdash; status of every target (JSON)</li>
<li><a href="healthz">/healthz</a> &mdash; liveness</li>
<li><a href="readyz">/readyz</a> &mdash; readiness (first poll round done)</li>
<li>POST /-/reload &mdash; re-read the config (also on SIGHUP)</li>
</ul></body></html>
"""


def parse_listen(listen: str) -> tuple[str, int]:
    """``:9611`` / ``0.0.0.0:9611`` / ``[::1]:9611`` / ``localhost:0`` -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {listen!r}: expected [HOST]:PORT, e.g. :9611 or 127.0.0.1:9611")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, app: Daemon) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"cache-exporter/{__version__}"
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT
    # Headers and body go out in separate writes; with Nagle on, a keep-alive client's
    # delayed ACK stalls every small response by ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("http %s - " + format, self.client_address[0], *args)

    def _send(self, status: int, body: bytes | list[bytes], content_type: str,
              extra: dict[str, str] | None = None) -> None:
        parts = body if isinstance(body, list) else [body]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(p) for p in parts)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            for part in parts:  # the exposition hands over ~1 MiB pieces
                self.wfile.write(part)

    def _text(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
        self._send(status, redact(text).encode("utf-8"), "text/plain; charset=utf-8", extra)

    def _json(self, status: int, payload: object) -> None:
        # Redact values, not the serialized text: a secret such as "null" must not rewrite syntax.
        body = json.dumps(redact_values(payload), indent=2, sort_keys=True) + "\n"
        self._send(status, body.encode("utf-8"), "application/json")

    # routes: path -> {method: handler}
    def _routes(self) -> dict[str, dict[str, Callable[[], None]]]:
        return {
            "/": {"GET": self._landing},
            "/metrics": {"GET": self._metrics},
            "/healthz": {"GET": lambda: self._text(200, "ok\n")},
            "/readyz": {"GET": self._readyz},
            "/targets": {"GET": lambda: self._json(200, self.server.app.targets_status())},
            "/-/reload": {"POST": self._reload},
        }

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        methods = self._routes().get(path)
        if methods is None:
            self._text(404, f"not found: {path[:200]}\n")
            return
        method = "GET" if self.command == "HEAD" else self.command
        handler = methods.get(method)
        if handler is None:
            self._text(405, "method not allowed\n", {"Allow": ", ".join(sorted(methods))})
            return
        try:
            handler()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            log.exception("error serving %s", path)
            self._text(500, "internal error\n")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _landing(self) -> None:
        self._send(200, _LANDING.format(version=__version__).encode(), "text/html; charset=utf-8")

    def _metrics(self) -> None:
        gzip_ok = "gzip" in self.headers.get("Accept-Encoding", "").lower()
        body = self.server.app.exposition.body_parts(compress=gzip_ok)
        self._send(200, body, CONTENT_TYPE, {"Content-Encoding": "gzip"} if gzip_ok else None)

    def _readyz(self) -> None:
        if self.server.app.scheduler.ready():
            self._text(200, "ready\n")
        else:
            self._text(503, "waiting for the first poll of every target\n")

    def _reload(self) -> None:
        # Drain (and cap) any request body so keep-alive stays in sync; the body is unused.
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_REQUEST_BODY:
            self._text(413, "request body too large\n")
            self.close_connection = True
            return
        self.rfile.read(int(length))
        ok, message = self.server.app.reload()
        self._text(200 if ok else 400, message + "\n")


def make_server(listen: str, app: Daemon) -> _Server:
    return _Server(parse_listen(listen), _Handler, app)
