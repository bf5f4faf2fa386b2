"""The address grammars: redis:// (and valkey://, rediss://, unix://) URLs, memcached's
host:port or socket path, http(s) URLs, and a DNS server's ip[:port].

A URL may hold a password, so no message here quotes it, nor anything a parser said about it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exporter.config.checker import Checker
from exporter.config.values import string
from exporter.targets import ProbeURL

HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?$")
_NO_CREDENTIALS = "credentials in the URL are not allowed; use username and password_env/password_file"


@dataclass(frozen=True)
class RedisURL:
    scheme: str  # redis, rediss or unix (valkey:// and valkeys:// are the first two)
    host: str  # "" for a socket
    port: int
    path: str | None  # the socket's path
    db: int


@dataclass(frozen=True)
class MemcachedAddress:
    host: str  # "" for a socket
    port: int
    path: str | None  # the socket's path


def redis_url(c: Checker, url: str, here: str) -> RedisURL | None:
    """The parts of a Redis URL, or None after recording why it cannot be used.

    A wrong database number or URL parameter is recorded but the parts are still returned, so
    the rest of the target is checked too."""
    # Checked before anything parses the URL: a password containing '/', '?' or '#' ends
    # the host part early, and urlsplit's port errors would then echo part of the password.
    if "@" in url:
        c.error(here, _NO_CREDENTIALS)
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # Never echo the URL or urlsplit's message: they may contain a secret.
        c.error(here, "not a valid URL; the port must be a number from 1 to 65535")
        return None
    scheme = {"valkey": "redis", "valkeys": "rediss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("redis", "rediss", "unix"):
        c.error(here, f"scheme '{parts.scheme[:20]}' is not supported; use redis://, rediss:// or unix://")
        return None
    if port is not None and not 1 <= port <= 65535:
        c.error(here, "the port must be a number from 1 to 65535")
        return None
    db = 0
    query = parse_qs(parts.query)
    if scheme == "unix":
        if not parts.path:
            c.error(here, "unix:// needs a socket path, e.g. unix:///run/redis/redis.sock")
            return None
        db_text = query.pop("db", ["0"])[0]
    else:
        if not parts.hostname:
            c.error(here, "needs a host, e.g. redis://10.0.0.5:6379")
            return None
        db_text = parts.path.strip("/") or "0"
    if query:
        c.error(here, f"unsupported URL parameters: {', '.join(sorted(query))}")
    if not re.fullmatch(r"[0-9]{1,6}", db_text):
        c.error(here, "the database must be a number, e.g. redis://host:6379/0")
    else:
        db = int(db_text)
    return RedisURL(scheme=scheme, host=parts.hostname or "", port=6379 if port is None else port,
                    path=parts.path if scheme == "unix" else None, db=db)


def memcached_address(c: Checker, address: str, here: str) -> MemcachedAddress | None:
    """``host:port`` (port 11211 if left out), ``[v6]:port``, or a socket path (``/...``, ``unix:...``)."""
    if address.startswith("/") or address.startswith("unix:"):
        socket_path = address.removeprefix("unix://").removeprefix("unix:")
        if not socket_path.startswith("/"):
            c.error(here, "a unix socket address must be an absolute path, e.g. /run/memcached/memcached.sock")
            return None
        return MemcachedAddress(host="", port=11211, path=socket_path)
    match = HOST_PORT.match(address)
    if match is None:
        c.error(here, "expected host:port (e.g. 10.0.0.7:11211, [::1]:11211) or a unix socket path")
        return None
    port = 11211
    if match.group("port"):
        port = int(match.group("port"))
        if not 1 <= port <= 65535:
            c.error(here, "the port must be a number from 1 to 65535")
            return None
    return MemcachedAddress(host=match.group("v6") or match.group("host"), port=port, path=None)


def http_url(c: Checker, url: str, here: str, default_path: str = "/") -> ProbeURL | None:
    """An http(s) URL with a host, or None after recording why not."""
    # Checked before anything parses the URL: see redis_url.
    if "@" in url:
        c.error(here, _NO_CREDENTIALS)
        return None
    try:
        return ProbeURL.parse(url, default_path)
    except ValueError as exc:
        c.error(here, str(exc))
        return None


def nameserver(value: Any) -> tuple[str, int]:
    """A DNS server as ``ip`` or ``ip:port`` (``[v6]:port``); port 53 if left out."""
    text = string(value).strip()
    match = HOST_PORT.match(text)
    host = (match.group("v6") or match.group("host")) if match else ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("expected an IP address with an optional port, e.g. 10.96.0.10 or 127.0.0.1:5353") from None
    port = int(match.group("port")) if match and match.group("port") else 53
    if not 1 <= port <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    return host, port
