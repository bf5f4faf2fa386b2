"""Why a poll failed, as one of a small fixed set of reasons (a bounded ``reason`` label).

Classification walks the exception chain because client libraries (redis-py included) wrap
the informative ``OSError`` in their own exception types and keep it only as context.
"""

from __future__ import annotations

import errno
import socket
import ssl

from exporter.secrets import redact

REFUSED = "refused"
UNREACHABLE = "unreachable"
DNS = "dns"
TIMEOUT = "timeout"
TLS = "tls"
TLS_REQUIRED = "tls_required"
AUTH = "auth"
HTTP = "http"
RESET = "reset"
PROTOCOL = "protocol"
TOO_LARGE = "too_large"
CONFIG = "config"
REDIRECT = "redirect"
SASL_REQUIRED = "sasl_required"
ERROR = "error"

# Every reason, in the order the HELP text and the docs list them: what a PollError says (logs,
# /targets), then what it means to an operator (the table in docs/metrics.md). The HELP of
# cache_exporter_poll_errors_total and that table are generated from here.
_TABLE: dict[str, tuple[str, str]] = {
    REFUSED: ("connection refused", "nothing listens (or the unix socket is missing)"),
    UNREACHABLE: ("host or network unreachable", "no route to the host"),
    DNS: ("name resolution failed", "the host name does not resolve"),
    TIMEOUT: ("timed out",
              "the poll did not finish within `timeout` (a stall, a trickling reply, a frozen server)"),
    TLS: ("TLS handshake or certificate verification failed",
          "handshake or certificate verification failed, or the target's TLS files cannot be read"),
    TLS_REQUIRED: ("the server expects TLS (use rediss://)",
                   "Redis: a plain `redis://` URL for a port that speaks only TLS (the server reset the "
                   "connection and answers a TLS handshake): use `rediss://`"),
    AUTH: ("authentication or authorization failed",
           "wrong password or user, or INFO not permitted (`NOAUTH`, `WRONGPASS`, `NOPERM`); HTTP 401/403"),
    HTTP: ("HTTP error status", "an app endpoint answered with another HTTP error status"),
    RESET: ("connection closed or reset by the server", "the server closed or reset the connection mid-poll"),
    PROTOCOL: ("malformed or unexpected reply",
               "the reply is not RESP / not memcached `STAT` lines, has the wrong type, or lacks the essentials "
               "(e.g. a Sentinel's INFO, `stats` without `curr_items`)"),
    TOO_LARGE: ("reply exceeded max_reply_size", "the replies exceeded `max_reply_size`"),
    CONFIG: ("target configuration problem", "the target's secret is unavailable"),
    REDIRECT: ("redirect loop or too many redirects",
               "http_cache: a redirect loop, or more redirects than `max_redirects`"),
    SASL_REQUIRED: ("the server requires SASL authentication over the binary protocol",
                    "memcached: the server requires SASL over the binary protocol (`-S`) and the target has no "
                    "credentials, or the server offers no SASL `PLAIN`"),
    ERROR: ("poll failed", "anything else (the log and `/targets` say what)"),
}

REASONS: tuple[str, ...] = tuple(_TABLE)


def meaning(reason: str) -> str:
    """What ``reason`` tells an operator, for the generated docs."""
    return _TABLE[reason][1]


_MAX_DETAIL = 200


class PollError(Exception):
    """A classified poll failure. ``str()`` is safe to log and to show in /targets."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in _TABLE:  # a real check: an assert would vanish under `python -O`
            raise ValueError(f"unknown failure reason {reason!r} (a bounded label: one of {', '.join(REASONS)})")
        self.reason = reason
        self.detail = redact(detail)[:_MAX_DETAIL]
        text = _TABLE[reason][0]
        super().__init__(f"{text}: {self.detail}" if self.detail else text)


def chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in seen and len(seen) < 10:
        seen.append(link)
        link = link.__cause__ or link.__context__
    return seen


def classify_os_error(exc: BaseException) -> str | None:
    """Map a socket-level exception anywhere in the chain to a reason, or None."""
    for e in chain(exc):
        if isinstance(e, socket.gaierror):
            return DNS
        if isinstance(e, (ssl.SSLError, ssl.CertificateError)):
            return TLS
        if isinstance(e, (socket.timeout, TimeoutError)):
            return TIMEOUT
        if isinstance(e, ConnectionRefusedError):
            return REFUSED
        if isinstance(e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, EOFError)):
            return RESET
        if isinstance(e, OSError) and e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return UNREACHABLE
        if isinstance(e, OSError) and e.errno in (errno.ENOENT, errno.ECONNREFUSED):
            return REFUSED  # a missing unix socket is the local form of "nobody listens"
    return None


def describe(exc: BaseException) -> str:
    """A short, secret-free description of an exception for logs and /targets."""
    return redact(f"{type(exc).__name__}: {exc}")[:_MAX_DETAIL]
