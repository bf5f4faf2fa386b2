"""The target types that poll a store: redis (and valkey), memcached, and an application's
metrics endpoint (app). Each builds its target from the target's mapping and the common
fields that kinds.build_target has already read."""

from __future__ import annotations

from typing import Any

from exporter.config import rules, sections
from exporter.config.checker import Checker, join, kind_of
from exporter.config.urls import http_url, memcached_address, redis_url
from exporter.config.values import boolean, json_path, one_of, positive_size, string
from exporter.targets import (
    EVICTS_AT_LIMIT,
    V8_YOUNG_GENERATION_RESERVE,
    AppTarget,
    ManagedStore,
    MemcachedTarget,
    RedisTarget,
    Target,
    TLSConfig,
)

# Provider -> what it does at its data limit when the config does not say (None: follow the
# server's maxmemory-policy). ElastiCache Serverless reports maxmemory 0 and evicts keys that
# have a TTL when it reaches its maximum data storage.
MANAGED_PROVIDERS: dict[str, str | None] = {
    "elasticache-serverless": "ttl",
    "elasticache": None,
    "memorystore": None,
    "azure-cache": None,
    "redis-cloud": None,
    "other": None,
}
APP_RUNTIMES = ("auto", "nodejs", "nodejs-otel", "jvm", "go", "python", "process")
APP_JSON_FIELDS = ("heap_used", "heap_limit", "gc_seconds", "resident")
APP_CACHE_COUNTERS = ("hits", "misses", "evictions", "items", "errors")


def redis_target(c: Checker, t: dict[str, Any], path: str, common: dict[str, Any]) -> Target | None:
    url = c.take(t, "url", path, string)
    if url is None:
        return None
    parts = redis_url(c, url, join(path, "url"))
    if parts is None:
        return None
    tls = sections.tls(c, t.get("tls"), join(path, "tls"))
    rules.tls_needs_rediss(c, path, tls, parts.scheme)
    creds = sections.credentials(c, t, path, username_required=False)
    managed_store = managed(c, t, path) if "managed" in t else None
    return RedisTarget(
        **common,
        scheme=parts.scheme,
        host=parts.host,
        port=parts.port,
        path=parts.path,
        db=parts.db,
        credentials=creds,
        tls=tls,
        managed=managed_store,
        prefixes=sections.prefix_view(c, t.get("prefixes"), join(path, "prefixes"), common, "redis")
        if "prefixes" in t else None,
    )


def managed(c: Checker, t: dict[str, Any], path: str) -> ManagedStore | None:
    here = join(path, "managed")
    m = c.mapping(t["managed"], here, {"provider", "data_limit", "evicts_at_limit"})
    if m is None:
        return None
    rules.managed_without_memory_limit(c, t, path)
    provider = c.take(m, "provider", here, one_of(tuple(MANAGED_PROVIDERS)))
    if provider is None:
        return None
    evicts = c.take(m, "evicts_at_limit", here, one_of(EVICTS_AT_LIMIT), MANAGED_PROVIDERS[provider])
    return ManagedStore(
        provider=provider,
        data_limit=c.take(m, "data_limit", here, positive_size(2**20), None),
        evicts_at_limit=evicts,
    )


def memcached_target(c: Checker, t: dict[str, Any], path: str, common: dict[str, Any]) -> Target | None:
    address = c.take(t, "address", path, string)
    if address is None:
        return None
    parts = memcached_address(c, address, join(path, "address"))
    if parts is None:
        return None
    tls = sections.tls(c, t.get("tls"), join(path, "tls")) if "tls" in t else None
    if "tls" in t and tls is None and t.get("tls") is None:
        tls = TLSConfig()  # `tls: {}` or a bare `tls:` turns TLS on with the system CAs
    rules.no_tls_over_socket(c, path, tls, parts.path)
    return MemcachedTarget(
        **common,
        host=parts.host,
        port=parts.port,
        path=parts.path,
        credentials=sections.credentials(c, t, path, username_required=True),
        tls=tls,
        slabs=c.take(t, "slabs", path, boolean, True),
        prefixes=sections.prefix_view(c, t.get("prefixes"), join(path, "prefixes"), common)
        if "prefixes" in t else None,
    )


def app_target(c: Checker, t: dict[str, Any], path: str, common: dict[str, Any]) -> Target | None:
    url = c.take(t, "url", path, string)
    if url is None:
        return None
    parts = http_url(c, url, join(path, "url"), "/metrics")
    if parts is None:
        return None
    tls = sections.tls(c, t.get("tls"), join(path, "tls"))
    rules.tls_needs_https(c, path, tls, [parts.scheme])
    fmt = c.take(t, "format", path, one_of(("prometheus", "json")), "prometheus")
    fields = app_fields(c, t.get("fields"), join(path, "fields"))
    caches = app_caches(c, t.get("caches"), join(path, "caches"))
    rules.app_format(c, path, fmt, fields, caches)
    return AppTarget(
        **common,
        scheme=parts.scheme,
        host=parts.host,
        port=parts.port,
        path=parts.path,
        format=fmt,
        runtime=c.take(t, "runtime", path, one_of(APP_RUNTIMES), "auto"),
        heap_limit=c.take(t, "heap_limit", path, positive_size(1), None),
        young_generation_reserve=c.take(t, "young_generation_reserve", path, positive_size(0),
                                        V8_YOUNG_GENERATION_RESERVE),
        credentials=sections.credentials(c, t, path, username_required=False),
        tls=tls,
        fields=fields,
        caches=caches,
    )


def app_fields(c: Checker, node: Any, path: str) -> tuple[tuple[str, str], ...]:
    m = c.mapping(node, path, set(APP_JSON_FIELDS))
    if not m:
        return ()
    return tuple(sorted((k, c.take(m, k, path, json_path)) for k in m if k in APP_JSON_FIELDS))


def app_caches(c: Checker, node: Any, path: str) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    if node is None:
        return ()
    if not isinstance(node, dict):
        c.error(path, f"expected a mapping of cache names to counter paths, got {kind_of(node)}")
        return ()
    out = []
    for name, counters in node.items():
        here = join(path, str(name))
        m = c.mapping(counters, here, set(APP_CACHE_COUNTERS))
        if not m:
            c.error(here, f"map at least one of: {', '.join(APP_CACHE_COUNTERS)}")
            continue
        out.append((str(name), tuple(sorted((k, c.take(m, k, here, json_path)) for k in m
                                            if k in APP_CACHE_COUNTERS))))
    return tuple(sorted(out))
