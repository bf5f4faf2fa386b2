"""The HTTP endpoints: /metrics, /healthz, /readyz, /targets, /-/reload and the status page at /.

They see the daemon only through the four callables of ``Endpoints``; the server underneath is
``exporter.httpserver``, and authentication, TLS and extra headers come from ``exporter.webconfig``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exporter import __version__
from exporter.exposition import CONTENT_TYPE
from exporter.httpserver import Limits, Request, Response, Server
from exporter.secrets import redact, redact_values

if TYPE_CHECKING:
    # Imported by whoever builds one (the command line with --web.config.file): without a web
    # config the process needs neither it nor bcrypt.
    from exporter.webconfig import WebConfigFile

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes stay open under basic auth

def parse_listen(listen: str) -> tuple[str, int]:
    """``:9611`` (every address, IPv6 and IPv4) / ``0.0.0.0:9611`` / ``[::1]:9611`` / ``localhost:0``
    -> (host, port); an empty host means every address."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--web.listen-address {listen!r}: expected [HOST]:PORT, e.g. :9611 or 127.0.0.1:9611")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"--web.listen-address {listen!r}: an IPv6 address goes in brackets, e.g. [::1]:9611")
    return host.strip("[]"), int(port)


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value (RFC 9110 12.5.3) admits gzip: named with q > 0, or not named
    and ``*`` with q > 0. A malformed q counts as 0 (not acceptable)."""
    named = star = None
    for item in header.split(","):
        coding, *params = item.split(";")
        coding = coding.strip().lower()
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if coding in ("gzip", "x-gzip"):
            named = q if named is None else max(named, q)
        elif coding == "*":
            star = q
    if named is not None:
        return named > 0
    return star is not None and star > 0


@dataclass
class Endpoints:
    """Routes a request to what the daemon offers; owns authentication and the lifecycle gate."""

    metrics: Callable[[bool], list[bytes]]  # compress? -> body parts
    targets: Callable[[], list[dict[str, Any]]]  # the /targets records
    ready: Callable[[], bool]
    reload: Callable[[], tuple[bool, str]]
    lifecycle: bool = False
    web: WebConfigFile | None = None
    # compress? -> body parts when already built (no waiting, no store walk), else None
    cached_metrics: Callable[[bool], list[bytes] | None] | None = None
    routes: dict[str, dict[str, Callable[[Request], Response]]] = field(init=False)

    def __post_init__(self) -> None:
        self.routes = {
            "/": {"GET": self._status_page},
            "/metrics": {"GET": self._metrics},
            "/healthz": {"GET": lambda _: _text(200, "ok\n")},
            "/readyz": {"GET": self._readyz},
            "/targets": {"GET": lambda _: _json(200, self.targets())},
            "/-/reload": {"POST": self._reload},
        }

    def __call__(self, request: Request) -> Response:
        web = self.web.current() if self.web else None
        response = self._route(request)
        if web is not None:
            response.headers.extend(web.headers)
        return response

    def fast(self, request: Request) -> Response | None:
        """The event loop's answer to a /metrics request it can serve at once -- the body already
        built, no bcrypt to run, no web config files to look at -- else None (the worker pool
        answers, as ``__call__``). The same headers as ``__call__``; nothing to count: only the
        pool path refuses credentials."""
        if request.path != "/metrics" or request.method not in ("GET", "HEAD") or self.cached_metrics is None:
            return None
        web = None
        if self.web is not None:
            web = self.web.current_nowait()
            if web is None or not self.web.known(web, request.headers.get("authorization")):
                return None
        gzip_ok = accepts_gzip(request.headers.get("accept-encoding", ""))
        parts = self.cached_metrics(gzip_ok)
        if parts is None:
            return None
        response = _metrics_response(gzip_ok, parts)
        if web is not None:
            response.headers.extend(web.headers)
        return response

    def _route(self, request: Request) -> Response:
        methods = self.routes.get(request.path)
        if methods is None:
            return _text(404, f"not found: {request.path[:200]}\n")
        if self.web is not None and request.path not in OPEN_PATHS:
            verdict = self.web.authenticate(request.headers.get("authorization"))
            if verdict is False:
                return _text(401, "unauthorized\n", [("WWW-Authenticate", 'Basic realm="cache-exporter"')])
        handler = methods.get("GET" if request.method == "HEAD" else request.method)
        if handler is None:
            return _text(405, "method not allowed\n", [("Allow", ", ".join(sorted(methods)))])
        try:
            return handler(request)
        except Exception:
            log.exception("error serving %s", request.path)
            return _text(500, "internal error\n")

    def _status_page(self, _: Request) -> Response:
        from exporter import statuspage  # only when someone opens the page

        # The /targets records, redacted the same way: the page shows nothing /targets would not.
        page = statuspage.render(redact_values(self.targets()), __version__)
        return Response(200, [page.encode("utf-8")],
                        [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")])

    def _metrics(self, request: Request) -> Response:
        gzip_ok = accepts_gzip(request.headers.get("accept-encoding", ""))
        return _metrics_response(gzip_ok, self.metrics(gzip_ok))

    def _readyz(self, _: Request) -> Response:
        if self.ready():
            return _text(200, "ready\n")
        return _text(503, "waiting for the first poll of every target\n")

    def _reload(self, _: Request) -> Response:
        if not self.lifecycle:
            return _text(403, "the lifecycle API is disabled: start with --web.enable-lifecycle to reload over "
                              "HTTP, or send SIGHUP\n")
        ok, message = self.reload()
        return _text(200 if ok else 400, message + "\n")


def _metrics_response(gzip_ok: bool, parts: list[bytes]) -> Response:
    headers = [("Content-Type", CONTENT_TYPE), ("Vary", "Accept-Encoding")]
    if gzip_ok:
        headers.append(("Content-Encoding", "gzip"))
    return Response(200, parts, headers)


def _text(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [redact(text).encode("utf-8")],
                    [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])])


def _json(status: int, payload: object) -> Response:
    # Redact values, not the serialized text: a secret such as "null" must not rewrite syntax.
    body = json.dumps(redact_values(payload), indent=2, sort_keys=True) + "\n"
    return Response(status, [body.encode("utf-8")], [("Content-Type", "application/json")])


def make_server(listen: str | list[str], endpoints: Endpoints, limits: Limits | None = None) -> Server:
    """Bind every listen address (OSError if one cannot be bound) and serve ``endpoints`` on them."""
    addresses = [parse_listen(a) for a in ([listen] if isinstance(listen, str) else listen)]
    web = endpoints.web
    return Server(addresses, endpoints, limits or Limits(), tls=web.tls_context if web is not None else None,
                  fast_handler=endpoints.fast if endpoints.cached_metrics is not None else None)
