"""The target types (``type:``): the keys each allows, how its target is built, and the fields
every target shares (name, interval, timeout, labels, memory_limit, role, limits, acknowledge)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.config import rules, sections
from exporter.config.checker import Checker, join, kind_of
from exporter.config.probes import http_cache_target
from exporter.config.stores import app_target, memcached_target, redis_target
from exporter.config.values import one_of, positive_duration, positive_size, target_name
from exporter.targets import DEFAULT_PROBE_INTERVAL, GlobalConfig, Target

COMMON_KEYS = {"name", "type", "labels", "interval", "timeout", *rules.MEMORY_KEYS, *sections.LIMIT_KEYS}
CREDENTIAL_KEYS = {"username", "password_env", "password_file"}
ROLES = ("cache", "database")
TargetBuilder = Callable[[Checker, dict[str, Any], str, dict[str, Any]], Target | None]


@dataclass(frozen=True)
class Kind:
    """What one target type adds to the common keys, and how its target is built."""

    keys: frozenset[str]
    build: TargetBuilder
    # False for a probe of someone else's cache: memory_limit and role mean nothing there.
    holds_memory: bool = True
    default_interval: float | None = None  # None: global.interval


KINDS: dict[str, Kind] = {
    "redis": Kind(frozenset({"url", "tls", "managed", "prefixes"} | CREDENTIAL_KEYS), redis_target),
    "memcached": Kind(frozenset({"address", "tls", "slabs", "prefixes"} | CREDENTIAL_KEYS), memcached_target),
    "app": Kind(frozenset({"url", "format", "runtime", "heap_limit", "young_generation_reserve", "tls", "fields",
                           "caches"} | CREDENTIAL_KEYS), app_target),
    # A probe has its own cadence: a cached error shows within a TTL, not within a store's poll.
    "http_cache": Kind(frozenset({"url", "urls", "paths", "method", "headers", "error_statuses", "bypass",
                                  "max_redirects", "max_header_bytes", "tls"} | CREDENTIAL_KEYS),
                       http_cache_target, holds_memory=False, default_interval=DEFAULT_PROBE_INTERVAL),
}


def build_target(c: Checker, node: Any, path: str, glob: GlobalConfig) -> Target | None:
    """The target a mapping under ``targets`` describes, or None if it has any problem (recorded)."""
    if not isinstance(node, dict):
        c.error(path, f"expected a mapping describing a target, got {kind_of(node)}")
        return None
    kind = node.get("type")
    if not isinstance(kind, str) or kind not in KINDS:
        c.error(join(path, "type"), "is required" if kind is None else
                f"unknown target type {kind!r}; supported: {', '.join(sorted(KINDS))}")
        return None
    spec = KINDS[kind]
    t = c.mapping(node, path, COMMON_KEYS | spec.keys)
    if t is None:
        return None
    before = len(c.problems)
    name = c.take(t, "name", path, target_name)
    if not spec.holds_memory:
        rules.no_memory_keys(c, t, path, kind)
    interval = c.take(t, "interval", path, positive_duration(0.1), spec.default_interval or glob.interval)
    timeout = c.take(t, "timeout", path, positive_duration(0.05), min(glob.timeout, interval))
    rules.timeout_within_interval(c, join(path, "timeout"), timeout, interval)
    labels = dict(glob.labels)
    labels.update(sections.labels(c, t.get("labels"), join(path, "labels")))
    common = dict(
        name=name, type=kind, interval=interval, timeout=timeout, labels=tuple(sorted(labels.items())),
        memory_limit=c.take(t, "memory_limit", path, positive_size(1), None) if spec.holds_memory else None,
        max_reply_size=glob.max_reply_size, forecast_window=glob.forecast_window,
        **{key: c.take(t, key, path, parse, getattr(glob, key)) for key, parse in sections.LIMIT_KEYS.items()},
        role=c.take(t, "role", path, one_of(ROLES), None) if spec.holds_memory else None,
    )
    target = spec.build(c, t, path, common)
    if target is not None and "acknowledge" in t:
        target = dataclasses.replace(target, acknowledge=sections.acknowledge(
            c, t["acknowledge"], join(path, "acknowledge"), type(target)))
    return target if len(c.problems) == before else None
