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

REASONS: tuple[str, ...] = (
    REFUSED, UNREACHABLE, DNS, TIMEOUT, TLS, TLS_REQUIRED, AUTH, HTTP, RESET, PROTOCOL, TOO_LARGE, CONFIG, REDIRECT,
    SASL_REQUIRED,
    ERROR,
)

_DESCRIPTIONS = {
    REFUSED: "connection refused",
    UNREACHABLE: "host or network unreachable",
    DNS: "name resolution failed",
    TIMEOUT: "timed out",
    TLS: "TLS handshake or certificate verification failed",
    TLS_REQUIRED: "the server expects TLS (use rediss://)",
    AUTH: "authentication or authorization failed",
    HTTP: "HTTP error status",
    RESET: "connection closed or reset by the server",
    PROTOCOL: "malformed or unexpected reply",
    TOO_LARGE: "reply exceeded max_reply_size",
    CONFIG: "target configuration problem",
    REDIRECT: "redirect loop or too many redirects",
    SASL_REQUIRED: "the server requires SASL authentication over the binary protocol",
    ERROR: "poll failed",
}

_MAX_DETAIL = 200


class PollError(Exception):
    """A classified poll failure. ``str()`` is safe to log and to show in /targets."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        self.reason = reason
        self.detail = redact(detail)[:_MAX_DETAIL]
        text = _DESCRIPTIONS[reason]
        super().__init__(f"{text}: {self.detail}" if self.detail else text)


def chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
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
