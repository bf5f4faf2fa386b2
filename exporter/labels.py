"""The label names the exporter's metric families use themselves, declared in one place.

The config refuses these as static target labels (a series cannot carry two labels of one
name), and it must know them without importing every source, whose modules declare the
families. So the names are listed here, and ``catalog.declare`` refuses a family whose label
is missing from this list: a new source's label cannot go unreserved. A test checks that the
list has no name that no family uses.
"""

from __future__ import annotations

# Every per-target series carries it (exposition adds it).
TARGET_LABEL = "target"

FAMILY_LABELS: frozenset[str] = frozenset({
    TARGET_LABEL,
    # unified and exporter families (exporter.catalog)
    "store", "version", "role", "eviction_policy", "source", "cache", "check", "severity",
    "reason", "family", "section",
    # redis
    "capability", "cmd", "db", "err", "maxmemory_policy", "os", "prefix", "process_id", "redis_build_id",
    "redis_mode", "redis_version", "run_id", "slave_ip", "slave_port", "slave_state", "tcp_port",
    "valkey_version",
    # memcached
    "command", "evictions", "growth_factor", "item_size_max", "lru", "lru_segmented", "maxbytes", "slab",
    "slab_automove", "slab_chunk_max", "slab_reassign", "status",
    # app
    "runtime",
    # http_cache
    "cache_status", "indicator", "layer", "state", "url",
})
