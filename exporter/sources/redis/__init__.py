"""Poll a Redis or Valkey server: one persistent connection, one round trip per poll.

One module per concern, as redis_exporter keeps one file per concern:

- ``tables``: every ``redis_*`` family; the INFO and CONFIG GET field tables (field -> metric,
  with the Redis version that introduced the field).
- ``info``: the INFO parser (plain fields, sections, composite lines) and the CONFIG GET reply.
- ``mapping``: a parsed INFO to families, the MemoryView (effective limit, eviction behaviour,
  a managed service's data limit) and the unified ``cache_*`` families.
- ``fork``: fork risk (the window's copy-on-write peak against the hard limit).
- ``resp``: our RESP2 client (hiredis' C parser on netio's guarded socket): connect, AUTH,
  SELECT, pipelines, error replies as ``ServerError``. redis-py is not imported here: ~10 MiB
  of RSS that only cluster/sentinel discovery and the demo pay.
- ``connection``: the target's connection, failure classification, the TLS probe that names a
  TLS-only port.
- ``capabilities``: CONFIG and CLIENT probed, switched off when denied, re-probed hourly.
- ``prefixes``: the opt-in per-key-prefix view (SCAN + MEMORY USAGE).
- ``source``: ``RedisSource``, the poll that ties them together.

A target with a ``managed:`` block (ElastiCache Serverless, Memorystore, ...) counts against
the data limit it declares, evicts as it declares, and has no host, fork or OOM-kill limits.
"""

from __future__ import annotations

from exporter.sources.redis.capabilities import CAPABILITY_REPROBE_SECONDS, Capabilities
from exporter.sources.redis.connection import TLS_PROBE_TIMEOUT, classify, new_connection, speaks_tls
from exporter.sources.redis.fork import COW_FIELDS, ForkRisk
from exporter.sources.redis.info import COMPOSITE_LINES, Composite, Info, config_dict, parse_info
from exporter.sources.redis.mapping import (
    EVICTION_POLICIES,
    MANAGED_LIMIT,
    MANAGED_POLICIES,
    MEMORY_ERRORS,
    ROLES,
    VOLATILE_MIN_EXPIRING,
    add_unified,
    expiring_fraction,
    map_info,
)
from exporter.sources.redis.prefixes import SCAN_BATCH, PrefixSamples, sample_prefixes
from exporter.sources.redis.source import CLIENT_NAME, CONFIG_REFRESH_SECONDS, RedisSource
from exporter.sources.redis.tables import (
    CAPABILITY,
    CMD_CALLS,
    CMD_DURATION,
    CMD_FAILED,
    CMD_REJECTED,
    CONFIG_FIELDS,
    CONFIG_KEYS,
    COW_PEAK,
    DB_AVG_TTL,
    DB_KEYS,
    DB_KEYS_EXPIRING,
    ERRORS,
    FORK_RISK,
    INFO_FIELDS,
    INSTANCE_INFO,
    PREFIX_BYTES,
    PREFIX_KEYS,
    PREFIX_SAMPLED,
    PREFIX_SCAN_COMPLETE,
    PREFIX_SCAN_TIME,
    RDB_ENABLED,
    REDIS,
    REDIS_UP,
    SLAVE_LABELS,
    SLAVE_LAG,
    SLAVE_OFFSET,
    START_TIME,
    STOP_WRITES,
)

__all__ = [
    "CAPABILITY", "CAPABILITY_REPROBE_SECONDS", "CLIENT_NAME", "CMD_CALLS", "CMD_DURATION", "CMD_FAILED",
    "CMD_REJECTED", "COMPOSITE_LINES", "CONFIG_FIELDS", "CONFIG_KEYS", "CONFIG_REFRESH_SECONDS", "COW_FIELDS",
    "COW_PEAK", "DB_AVG_TTL", "DB_KEYS", "DB_KEYS_EXPIRING", "ERRORS", "EVICTION_POLICIES", "FORK_RISK",
    "INFO_FIELDS", "INSTANCE_INFO", "MANAGED_LIMIT", "MANAGED_POLICIES", "MEMORY_ERRORS", "PREFIX_BYTES",
    "PREFIX_KEYS", "PREFIX_SAMPLED", "PREFIX_SCAN_COMPLETE", "PREFIX_SCAN_TIME", "RDB_ENABLED", "REDIS",
    "REDIS_UP", "ROLES", "SCAN_BATCH", "SLAVE_LABELS", "SLAVE_LAG", "SLAVE_OFFSET", "START_TIME", "STOP_WRITES",
    "TLS_PROBE_TIMEOUT", "VOLATILE_MIN_EXPIRING", "Capabilities", "Composite", "ForkRisk", "Info",
    "PrefixSamples", "RedisSource", "add_unified", "classify", "config_dict", "expiring_fraction", "map_info",
    "new_connection", "parse_info", "sample_prefixes", "speaks_tls",
]
