"""Typed, validated descriptions of what to poll: the output of config, the input of sources.

Instances are frozen and comparable, so a reload can tell an unchanged target (keep its
connection and series) from a changed one (replace it) with ``==``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from exporter import secrets

DEFAULT_INTERVAL = 15.0
DEFAULT_TIMEOUT = 5.0
DEFAULT_FORECAST_WINDOW = 3600.0
DEFAULT_MAX_REPLY_SIZE = 16 * 2**20
# A Redis has ~1.5k series (240 commands x 4), a memcached with 63 slab classes ~2.5k: 10k is
# room for any real store, and keeps a hostile one to ~1 MB of /metrics.
DEFAULT_MAX_SERIES = 10_000
DEFAULT_MAX_LABEL_VALUE_LENGTH = 1024  # as for static labels in the config
DEFAULT_LISTEN = ":9611"


@dataclass(frozen=True)
class TLSConfig:
    """Client TLS settings for a target; file paths are checked when the config loads."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class Credentials:
    """Where a target's secret lives. The secret itself is read at connect time, never stored here."""

    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None

    def password(self) -> str | None:
        """Read the password now (env var or file); raises ``SecretUnavailable`` if it is missing."""
        return secrets.read_password(self)


@dataclass(frozen=True)
class Acknowledgement:
    """An audit finding the operator accepts for one target (``acknowledge`` in the config)."""

    check: str
    reason: str | None = None
    until: datetime.date | None = None  # the last day it holds; afterwards the finding alerts again


@dataclass(frozen=True)
class Target:
    """Settings every target type shares."""

    name: str
    type: str
    interval: float
    timeout: float
    labels: tuple[tuple[str, str], ...] = ()
    memory_limit: int | None = None
    max_reply_size: int = DEFAULT_MAX_REPLY_SIZE
    forecast_window: float = DEFAULT_FORECAST_WINDOW
    role: str | None = None  # "cache" (data is disposable) or "database" (data must survive)
    max_series: int = DEFAULT_MAX_SERIES
    max_label_value_length: int = DEFAULT_MAX_LABEL_VALUE_LENGTH
    acknowledge: tuple[Acknowledgement, ...] = ()

    @property
    def address(self) -> str:
        """Where the target lives, for humans (/targets, logs); never contains credentials."""
        raise NotImplementedError


# How a managed service behaves at its data limit: which keys it evicts, if any.
EVICTS_AT_LIMIT = ("all", "ttl", "none")


@dataclass(frozen=True)
class ManagedStore:
    """A store run by a provider (ElastiCache Serverless, Memorystore, ...): the provider enforces a
    data limit the server does not report (``maxmemory`` 0), and the host, its forks and its OOM
    killer are the provider's business, not something the exporter can see or warn about."""

    provider: str
    data_limit: int | None = None  # None: the server's own maxmemory if it reports one, else unknown
    evicts_at_limit: str | None = None  # one of EVICTS_AT_LIMIT; None: as the server's maxmemory-policy says


@dataclass(frozen=True)
class PrefixView:
    """Opt-in per-key-prefix memory, on its own cadence: memcached ``lru_crawler metadump``,
    Redis ``SCAN`` + ``MEMORY USAGE`` on a bounded sample of keys."""

    delimiter: str = ":"
    top: int = 20  # prefixes exported by bytes; the rest are summed as prefix="__other__"
    interval: float = 300.0
    max_time: float = 2.0  # seconds one dump may take (within the poll's timeout)
    max_bytes: int = 64 * 2**20  # memcached: bytes of dump read per run
    max_keys: int = 1000  # redis: keys sampled (SCAN + MEMORY USAGE) per run


@dataclass(frozen=True)
class RedisTarget(Target):
    """A Redis or Valkey server reached over TCP, TLS or a unix socket."""

    scheme: str = "redis"  # redis | rediss | unix
    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # unix socket path
    db: int = 0
    credentials: Credentials = field(default_factory=Credentials)
    tls: TLSConfig | None = None
    managed: ManagedStore | None = None
    prefixes: PrefixView | None = None

    @property
    def address(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class MemcachedTarget(Target):
    """A memcached server over TCP, TLS or a unix socket (text protocol; binary for -S servers)."""

    host: str = "localhost"
    port: int = 11211
    path: str | None = None  # unix socket path
    credentials: Credentials = field(default_factory=Credentials)  # ASCII auth (-Y) or SASL PLAIN (-S)
    tls: TLSConfig | None = None
    slabs: bool = True  # export per-slab-class series
    prefixes: PrefixView | None = None

    @property
    def address(self) -> str:
        if self.path:
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'tls' if self.tls else 'tcp'}://{host}:{self.port}"


V8_YOUNG_GENERATION_RESERVE = 48 * 2**20  # 3 semi-spaces of 16 MiB: V8's default on 64-bit


@dataclass(frozen=True)
class AppTarget(Target):
    """An application's metrics endpoint: Prometheus text, or JSON with a field mapping."""

    scheme: str = "http"  # http | https
    host: str = "localhost"
    port: int = 80
    path: str = "/metrics"
    format: str = "prometheus"  # prometheus | json
    runtime: str = "auto"  # auto | nodejs | nodejs-otel | jvm | go | python | process
    heap_limit: int | None = None
    young_generation_reserve: int = V8_YOUNG_GENERATION_RESERVE
    credentials: Credentials = field(default_factory=Credentials)  # basic auth, or a bearer token
    tls: TLSConfig | None = None
    fields: tuple[tuple[str, str], ...] = ()  # json: heap_used, heap_limit, gc_seconds, resident -> path
    caches: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()  # json: cache -> (counter, path)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


@dataclass(frozen=True)
class ProbeURL:
    """One URL an ``http_cache`` target probes; ``url`` (the metric label) never holds credentials."""

    url: str
    scheme: str  # http | https
    host: str
    port: int
    path: str  # path and query, as sent on the request line

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @classmethod
    def parse(cls, url: str, default_path: str = "/") -> ProbeURL:
        """An http(s) URL with a host; raises ValueError with a message that never quotes the URL."""
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError("not a valid URL; the port must be a number from 1 to 65535") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host, e.g. http://10.0.0.9:3000{default_path}")
        if port is not None and not 1 <= port <= 65535:
            raise ValueError("the port must be a number from 1 to 65535")
        if any(ch.isspace() or not ch.isprintable() for ch in url):
            raise ValueError("the URL must not contain spaces or control characters (percent-encode them)")
        path = (parts.path or default_path) + (f"?{parts.query}" if parts.query else "")
        return cls(url.split("#", 1)[0], parts.scheme, parts.hostname,
                   port or (443 if parts.scheme == "https" else 80), path)


@dataclass(frozen=True)
class Bypass:
    """How to reach the origin past the cache, to tell a stale cached error from a live one."""

    query_param: str | None = None  # appended with a unique value: a cache key no cache holds
    header: tuple[str, str] | None = None  # e.g. a header the proxy's *_cache_bypass honours
    origin: ProbeURL | None = None  # base URL of the origin; each probe's path is appended


DEFAULT_PROBE_INTERVAL = 30.0
DEFAULT_ERROR_STATUSES = ((500, 599),)


@dataclass(frozen=True)
class HttpCacheTarget(Target):
    """URLs behind an HTTP response cache (reverse proxy, gateway, CDN), probed for cached errors.

    ``timeout`` (the poll deadline) covers every request of a round; ``request_timeout``
    bounds each one.
    """

    urls: tuple[ProbeURL, ...] = ()
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    error_statuses: tuple[tuple[int, int], ...] = DEFAULT_ERROR_STATUSES  # inclusive ranges
    bypass: Bypass | None = None
    max_redirects: int = 0
    request_timeout: float = DEFAULT_TIMEOUT
    max_header_bytes: int = 64 * 1024
    credentials: Credentials = field(default_factory=Credentials)  # basic auth, or a bearer token
    tls: TLSConfig | None = None

    @property
    def address(self) -> str:
        more = f" (+{len(self.urls) - 1} more)" if len(self.urls) > 1 else ""
        return (self.urls[0].url if self.urls else "") + more

    def is_error(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in self.error_statuses)


@dataclass(frozen=True)
class GlobalConfig:
    """The ``global`` section: defaults and labels applied to every target."""

    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    labels: tuple[tuple[str, str], ...] = ()
    forecast_window: float = DEFAULT_FORECAST_WINDOW
    max_reply_size: int = DEFAULT_MAX_REPLY_SIZE
    max_series: int = DEFAULT_MAX_SERIES
    max_label_value_length: int = DEFAULT_MAX_LABEL_VALUE_LENGTH


DISCOVERY_KINDS = ("cluster", "sentinel", "file_sd", "dns", "elasticache")


@dataclass(frozen=True)
class Template:
    """A target with ``discover:``: it stands for one target per node its discovery finds.

    ``settings`` is the target's own mapping from the config file without the discovery keys;
    every discovered target is that mapping with the node's address, name and labels filled in,
    validated by the same code as a target written by hand (exporter.config.expand)."""

    name: str
    type: str
    kind: str  # one of DISCOVERY_KINDS
    refresh_interval: float
    timeout: float
    options: dict[str, Any] = field(default_factory=dict, hash=False)  # kind-specific, validated
    settings: dict[str, Any] = field(default_factory=dict, hash=False)
    global_: GlobalConfig = field(default_factory=lambda: GlobalConfig())
    probe: Target | None = field(default=None, compare=False)  # settings validated with a placeholder address


@dataclass(frozen=True)
class Config:
    """A whole, validated configuration."""

    targets: tuple[Target, ...]
    source: str  # file path, or "<built-in default>"
    templates: tuple[Template, ...] = ()
