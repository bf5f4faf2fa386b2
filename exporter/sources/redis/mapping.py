"""The mapping of a parsed INFO (and the last CONFIG GET values) to families: the field
tables, the server's description, the MemoryView (effective limit, eviction behaviour; a
managed service's declared data limit) and the unified ``cache_*`` families."""

from __future__ import annotations

from exporter import catalog
from exporter.snapshot import MemoryView, Samples, SeriesLimits
from exporter.sources.base import Reading
from exporter.sources.fields import finite, plausible_bytes
from exporter.sources.memory import add_unified_memory
from exporter.sources.redis.info import Info
from exporter.sources.redis.tables import (
    CONFIG_FIELDS,
    DB_KEYS,
    DB_KEYS_EXPIRING,
    ERRORS,
    INFO_FIELDS,
    INSTANCE_INFO,
    RDB_ENABLED,
    REDIS,
    START_TIME,
    STOP_WRITES,
)
from exporter.targets import ManagedStore, RedisTarget

# maxmemory-policy -> does the store evict when full? None: depends on expiring keys.
EVICTION_POLICIES: dict[str, bool | None] = {
    "noeviction": False,
    "allkeys-lru": True,
    "allkeys-lfu": True,
    "allkeys-random": True,
    "volatile-lru": None,
    "volatile-lfu": None,
    "volatile-random": None,
    "volatile-ttl": None,
}

# volatile-* counts as "evicts when full" only if at least this share of keys has a TTL.
VOLATILE_MIN_EXPIRING = 0.10


def expiring_fraction(samples: Samples) -> float:
    """Share of keys (all databases) that have a TTL; 0 with no keys."""
    keys = sum(s.value for s in samples if s.family == DB_KEYS)
    expiring = sum(s.value for s in samples if s.family == DB_KEYS_EXPIRING)
    return expiring / keys if keys > 0 else 0.0


MANAGED_LIMIT = "managed"  # cache_memory_limit_info{source}: the data limit declared in managed.data_limit

MEMORY_ERRORS = ("OOM", "MISCONF")  # write refusals caused by memory (OOM) or a failed save (MISCONF)

ROLES = {"master": "primary", "primary": "primary", "slave": "replica", "replica": "replica"}


def map_info(info: Info, target: RedisTarget, config: dict[str, str], now: float) -> Reading:
    """Turn a parsed INFO (and the last CONFIG GET values) into samples and a MemoryView."""
    out = Samples(SeriesLimits.of(target))
    malformed = 0
    f = info.fields

    for key, field in INFO_FIELDS.items():
        raw = f.get(key)
        if raw is None:
            continue
        try:
            out.add(field.metric, field.parse(raw))
        except ValueError:
            malformed += 1
    for kind, key, raw in info.composite:
        if out.full:  # parsing what can no longer be kept would only cost CPU
            out.skipped(kind.families)
            continue
        try:
            kind.handler(key, raw, out)
        except (KeyError, ValueError):
            malformed += 1
    present = out.families()  # INFO's value wins over CONFIG's
    for key, field in CONFIG_FIELDS.items():
        if key in config and field.metric not in present:
            try:
                out.add(field.metric, field.parse(config[key]))
            except ValueError:
                malformed += 1

    uptime = finite(f.get("uptime_in_seconds"))
    if uptime is not None:
        out.add(START_TIME, round(now - uptime))

    policy = f.get("maxmemory_policy") or config.get("maxmemory-policy") or ""
    version = f.get("valkey_version") or f.get("redis_version", "")
    role = f.get("role", "")
    out.add(INSTANCE_INFO, 1, (
        ("role", role), ("redis_version", f.get("redis_version", "")),
        ("valkey_version", f.get("valkey_version", "")), ("redis_build_id", f.get("redis_build_id", "")),
        ("redis_mode", f.get("redis_mode") or f.get("server_mode", "")), ("os", f.get("os", "")),
        ("maxmemory_policy", policy), ("tcp_port", f.get("tcp_port", "")), ("run_id", f.get("run_id", "")),
        ("process_id", f.get("process_id", "")),
    ))

    if "save" in config:
        out.add(RDB_ENABLED, int(bool(config["save"].strip())))
    if "stop-writes-on-bgsave-error" in config:
        out.add(STOP_WRITES, int(config["stop-writes-on-bgsave-error"] == "yes"))
    memory = _memory_view(out, f, target, policy)
    add_unified(out, info, memory, version, ROLES.get(role, role))
    details: dict[str, object] = {
        "server": f.get("server_name", "redis"),
        "version": version,
        "role": role,
        "mode": f.get("redis_mode") or f.get("server_mode", ""),
        "maxmemory_policy": policy,
    }
    return Reading(out, memory, details, malformed)


def _memory_view(out: Samples, f: dict[str, str], target: RedisTarget, policy: str) -> MemoryView:
    used_memory = plausible_bytes(f.get("used_memory"))
    not_counted = plausible_bytes(f.get("mem_not_counted_for_evict")) or 0.0
    used = used_memory - not_counted if used_memory is not None else None
    maxmemory = plausible_bytes(f.get("maxmemory")) or 0.0
    resident = plausible_bytes(f.get("used_memory_rss"))
    if target.managed is not None:
        return _managed_memory_view(out, target.managed, used, maxmemory, resident, policy)
    system = plausible_bytes(f.get("total_system_memory")) or 0.0

    # Effective limit: what the store enforces, else what kills it (config), else the host.
    candidates = (("maxmemory", maxmemory), ("config", target.memory_limit or 0), ("system", system))
    limit_source, limit = next(((s, v) for s, v in candidates if v > 0), (None, None))
    hard_candidates = (target.memory_limit or 0, system)
    resident_limit = next((v for v in hard_candidates if v > 0), None)

    evicts = EVICTION_POLICIES.get(policy)
    if maxmemory <= 0:
        evicts = False  # no maxmemory: Redis never evicts, it grows until killed
    elif evicts is None and policy in EVICTION_POLICIES:
        evicts = _ttl_keys_suffice(out)
    return MemoryView(
        used=used, limit=limit, limit_source=limit_source,
        resident=resident, resident_limit=resident_limit,
        evicts_when_full=evicts, eviction_policy=policy or None,
    )


def _ttl_keys_suffice(out: Samples) -> bool:
    # Evicting only keys with a TTL (volatile-*, a managed service's "ttl"): with few of them,
    # eviction frees little and writes soon fail as under noeviction.
    return expiring_fraction(out) >= VOLATILE_MIN_EXPIRING


# A managed service's eviction behaviour -> the maxmemory-policy that behaves the same.
MANAGED_POLICIES = {"all": "allkeys-lru", "ttl": "volatile-lru", "none": "noeviction"}


def _managed_memory_view(out: Samples, managed: ManagedStore, used: float | None, maxmemory: float,
                         resident: float | None, policy: str) -> MemoryView:
    """The limit is the service's data limit (declared, else a maxmemory the server reports); the
    host's memory is not the store's (the provider scales or moves it), so there is no fallback to
    it and no hard limit: resident-memory and fork countdowns would count against a host nobody sees."""
    if managed.data_limit:
        limit_source, limit = MANAGED_LIMIT, float(managed.data_limit)
    elif maxmemory > 0:
        limit_source, limit = "maxmemory", maxmemory
    else:
        limit_source, limit = None, None
    effective = MANAGED_POLICIES[managed.evicts_at_limit] if managed.evicts_at_limit else policy
    evicts = EVICTION_POLICIES.get(effective)
    if evicts is None and effective in EVICTION_POLICIES:
        evicts = _ttl_keys_suffice(out)
    return MemoryView(
        used=used, limit=limit, limit_source=limit_source, resident=resident, resident_limit=None,
        evicts_when_full=evicts if limit is not None else None, eviction_policy=effective or None,
    )


def add_unified(out: Samples, info: Info, m: MemoryView, version: str, role: str) -> None:
    """The unified families of a Redis poll: memory (as every store), then hits, misses,
    evictions, expirations, write rejections and items from INFO."""
    add_unified_memory(out, REDIS, m, version, role)
    f = info.fields
    store = (("store", REDIS),)
    out.add(catalog.CACHE_HITS, finite(f.get("keyspace_hits")), store)
    out.add(catalog.CACHE_MISSES, finite(f.get("keyspace_misses")), store)
    out.add(catalog.CACHE_EVICTIONS, finite(f.get("evicted_keys")), store)
    out.add(catalog.CACHE_EXPIRATIONS, finite(f.get("expired_keys")), store)
    if "errorstats" in info.sections:  # 6.2+: an absent line means that error has not happened yet
        # Emit the errors alerts watch at 0 until they first happen: a series that appears already
        # non-zero hides its first burst from increase().
        for err in MEMORY_ERRORS:
            if out.value(ERRORS, (("err", err),)) is None:
                out.add(ERRORS, 0, (("err", err),))
        out.add(catalog.CACHE_WRITE_REJECTIONS, out.value(ERRORS, (("err", "OOM"),)), store)
    keys = [s.value for s in out if s.family == DB_KEYS]
    out.add(catalog.CACHE_ITEMS, sum(keys), store)

