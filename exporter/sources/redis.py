"""Poll a Redis or Valkey server: one persistent connection, one round trip per poll.

Each poll pipelines ``INFO ALL`` and, at most once a minute, ``CONFIG GET *`` (settings the
audit reads and Redis 5 lacks in INFO). A new connection also sends ``CLIENT SETNAME`` in the
same round trip. Optional commands are capability-probed: a server where CONFIG or CLIENT
is renamed away or denied by ACL (ElastiCache, Memorystore, least-privilege users) gets them
switched off after the first error reply, logged once, re-probed hourly — no error counts,
no log spam; ``redis_capability{capability}`` says which work. A plain ``redis://`` poll that a
server resets before any reply gets one TLS handshake to tell a TLS-only port (``tls_required``)
from a plain server dropping clients (``reset``).

A target with a ``managed:`` block (ElastiCache Serverless, Memorystore, ...) counts against
the data limit it declares, evicts as it declares, and has no host, fork or OOM-kill limits.

INFO fields map to metrics through ``INFO_FIELDS`` (field -> metric, with the Redis version
that introduced the field); composite lines (``db0:``, ``cmdstat_*``, ``errorstat_*``,
``slaveN:``) through ``COMPOSITE_LINES``. Names follow oliver006/redis_exporter except where
its names break Prometheus conventions (see docs/compatibility.md).
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from exporter import catalog
from exporter import errors as E
from exporter.errors import PollError
from exporter.netio import Guard, GuardedSocket, open_stream, poll_tls_context
from exporter.snapshot import MemoryView, Samples, SeriesLimits
from exporter.sources.base import Capability, PersistentConnectionSource, Reading
from exporter.sources.fields import (
    MICROSECONDS,
    MILLISECONDS,
    Field,
    Parser,
    counter_field,
    finite,
    gauge_field,
    number,
    percent,
    plausible_bytes,
    status,
)
from exporter.sources.prefixes import PrefixTally
from exporter.targets import ManagedStore, RedisTarget

log = logging.getLogger(__name__)

CLIENT_NAME = "cache-exporter"
CONFIG_REFRESH_SECONDS = 60.0
CAPABILITY_REPROBE_SECONDS = 3600.0
REDIS = "redis"


# --- field tables -----------------------------------------------------------------------

def _gauge(metric: str, help: str, since: str, parse: Parser = number) -> Field:
    return gauge_field(REDIS, metric, help, since, parse)


def _counter(metric: str, help: str, since: str, parse: Parser = number) -> Field:
    return counter_field(REDIS, metric, help, since, parse)


REDIS_UP = catalog.gauge("redis_up", "1 if the last poll of the Redis server succeeded, else 0.", (), REDIS)
INSTANCE_INFO = catalog.gauge(
    "redis_instance_info",
    "Constant 1; labels describe the server.",
    ("role", "redis_version", "valkey_version", "redis_build_id", "redis_mode", "os",
     "maxmemory_policy", "tcp_port", "run_id", "process_id"),
    REDIS,
)

INFO_FIELDS: dict[str, Field] = {
    # Server
    "uptime_in_seconds": _gauge("redis_uptime_in_seconds", "Seconds since the server started.", "1.0"),
    "process_id": _gauge("redis_process_id", "PID of the server process.", "1.0"),
    "io_threads_active": _gauge("redis_io_threads_active", "1 if I/O threads are active.", "6.0"),
    # Clients
    "connected_clients": _gauge("redis_connected_clients", "Client connections (excluding replicas).", "1.0"),
    "blocked_clients": _gauge("redis_blocked_clients", "Clients blocked in a blocking call.", "1.0"),
    "tracking_clients": _gauge("redis_tracking_clients", "Clients with client-side caching tracking.", "6.0"),
    "clients_in_timeout_table": _gauge("redis_clients_in_timeout_table", "Clients in the timeout table.", "6.0"),
    "cluster_connections": _gauge("redis_cluster_connections", "Cluster bus connections.", "7.0"),
    "maxclients": _gauge("redis_config_maxclients", "The maxclients setting.", "6.2"),
    "client_recent_max_input_buffer": _gauge(
        "redis_client_recent_max_input_buffer_bytes", "Largest recent client input buffer.", "5.0"),
    "client_recent_max_output_buffer": _gauge(
        "redis_client_recent_max_output_buffer_bytes", "Largest recent client output buffer.", "5.0"),
    # Memory
    "used_memory": _gauge("redis_memory_used_bytes", "Bytes allocated by Redis (used_memory).", "1.0"),
    "used_memory_rss": _gauge("redis_memory_used_rss_bytes", "Resident set size of the server.", "1.0"),
    "used_memory_peak": _gauge("redis_memory_used_peak_bytes", "Peak used_memory.", "2.0"),
    "used_memory_overhead": _gauge("redis_memory_used_overhead_bytes", "Memory for internal structures.", "4.0"),
    "used_memory_startup": _gauge("redis_memory_used_startup_bytes", "Memory used at startup.", "4.0"),
    "used_memory_dataset": _gauge("redis_memory_used_dataset_bytes", "Memory used by the dataset.", "4.0"),
    "used_memory_lua": _gauge("redis_memory_used_lua_bytes", "Memory used by the Lua engine.", "2.6"),
    "used_memory_vm_eval": _gauge("redis_memory_used_vm_eval_bytes", "Memory used by the eval engine.", "7.0"),
    "used_memory_scripts": _gauge("redis_memory_used_scripts_bytes", "Memory used by cached scripts.", "4.0"),
    "number_of_cached_scripts": _gauge("redis_number_of_cached_scripts", "Cached Lua scripts.", "4.0"),
    "total_system_memory": _gauge("redis_total_system_memory_bytes", "Memory of the host Redis runs on.", "3.2"),
    "maxmemory": _gauge("redis_memory_max_bytes", "The maxmemory setting (0 = no limit).", "3.2"),
    "mem_fragmentation_ratio": _gauge("redis_mem_fragmentation_ratio", "used_memory_rss / used_memory.", "2.2"),
    "mem_fragmentation_bytes": _gauge("redis_mem_fragmentation_bytes", "used_memory_rss - used_memory.", "5.0"),
    "allocator_allocated": _gauge("redis_allocator_allocated_bytes", "Bytes allocated by the allocator.", "5.0"),
    "allocator_active": _gauge("redis_allocator_active_bytes", "Bytes in active allocator pages.", "5.0"),
    "allocator_resident": _gauge("redis_allocator_resident_bytes", "Bytes resident in the allocator.", "5.0"),
    "allocator_frag_ratio": _gauge("redis_allocator_frag_ratio", "Allocator fragmentation ratio.", "5.0"),
    "allocator_frag_bytes": _gauge("redis_allocator_frag_bytes", "Allocator fragmentation bytes.", "5.0"),
    "allocator_rss_ratio": _gauge("redis_allocator_rss_ratio", "Allocator resident / active ratio.", "5.0"),
    "allocator_rss_bytes": _gauge("redis_allocator_rss_bytes", "Allocator resident - active bytes.", "5.0"),
    "rss_overhead_ratio": _gauge("redis_rss_overhead_ratio", "RSS / allocator resident ratio.", "5.0"),
    "rss_overhead_bytes": _gauge("redis_rss_overhead_bytes", "RSS - allocator resident bytes.", "5.0"),
    "mem_not_counted_for_evict": _gauge(
        "redis_mem_not_counted_for_eviction_bytes", "Memory not counted against maxmemory.", "5.0"),
    "mem_replication_backlog": _gauge(
        "redis_mem_replication_backlog_bytes", "Memory used by the replication backlog.", "5.0"),
    "mem_total_replication_buffers": _gauge(
        "redis_mem_total_replication_buffers_bytes", "Memory used by replication buffers.", "7.0"),
    "mem_clients_slaves": _gauge("redis_mem_clients_slaves", "Memory used by replica clients (bytes).", "5.0"),
    "mem_clients_normal": _gauge("redis_mem_clients_normal", "Memory used by normal clients (bytes).", "5.0"),
    "mem_aof_buffer": _gauge("redis_mem_aof_buffer_bytes", "Memory used by AOF buffers.", "5.0"),
    "active_defrag_running": _gauge("redis_active_defrag_running", "1 if active defrag is running.", "4.0"),
    "lazyfree_pending_objects": _gauge("redis_lazyfree_pending_objects", "Objects waiting to be freed.", "4.0"),
    # Persistence
    "loading": _gauge("redis_loading_dump_file", "1 while loading a dump file.", "2.0"),
    "rdb_changes_since_last_save": _gauge(
        "redis_rdb_changes_since_last_save", "Changes since the last RDB save.", "2.6"),
    "rdb_bgsave_in_progress": _gauge("redis_rdb_bgsave_in_progress", "1 while a BGSAVE runs.", "2.6"),
    "rdb_last_save_time": _gauge(
        "redis_rdb_last_save_timestamp_seconds", "Unix time of the last successful RDB save.", "2.6"),
    "rdb_last_bgsave_status": _gauge(
        "redis_rdb_last_bgsave_status", "1 if the last BGSAVE succeeded, 0 if it failed.", "2.6", status),
    "rdb_last_bgsave_time_sec": _gauge(
        "redis_rdb_last_bgsave_duration_seconds", "Duration of the last BGSAVE (-1 if none).", "2.6"),
    "rdb_current_bgsave_time_sec": _gauge(
        "redis_rdb_current_bgsave_duration_seconds", "Duration of the running BGSAVE (-1 if none).", "2.6"),
    "rdb_last_cow_size": _gauge(
        "redis_rdb_last_cow_size_bytes", "Copy-on-write memory of the last RDB save.", "4.0"),
    "rdb_saves": _counter("redis_rdb_saves_total", "RDB saves since startup.", "7.0"),
    "aof_enabled": _gauge("redis_aof_enabled", "1 if AOF is enabled.", "2.6"),
    "aof_rewrite_in_progress": _gauge("redis_aof_rewrite_in_progress", "1 while an AOF rewrite runs.", "2.6"),
    "aof_rewrite_scheduled": _gauge("redis_aof_rewrite_scheduled", "1 if an AOF rewrite is scheduled.", "2.6"),
    "aof_last_rewrite_time_sec": _gauge(
        "redis_aof_last_rewrite_duration_seconds", "Duration of the last AOF rewrite (-1 if none).", "2.6"),
    "aof_current_rewrite_time_sec": _gauge(
        "redis_aof_current_rewrite_duration_seconds", "Duration of the running AOF rewrite (-1 if none).", "2.6"),
    "aof_last_bgrewrite_status": _gauge(
        "redis_aof_last_bgrewrite_status", "1 if the last AOF rewrite succeeded.", "2.6", status),
    "aof_last_write_status": _gauge(
        "redis_aof_last_write_status", "1 if the last AOF write succeeded.", "2.6", status),
    "aof_last_cow_size": _gauge(
        "redis_aof_last_cow_size_bytes", "Copy-on-write memory of the last AOF rewrite.", "4.0"),
    "module_fork_in_progress": _gauge("redis_module_fork_in_progress", "1 while a module fork runs.", "6.0"),
    "module_fork_last_cow_size": _gauge(
        "redis_module_fork_last_cow_size", "Copy-on-write bytes of the last module fork.", "6.0"),
    "current_cow_size": _gauge(
        "redis_current_cow_size_bytes", "Copy-on-write bytes of the running fork (0 if none).", "6.2"),
    "current_cow_peak": _gauge(
        "redis_current_cow_peak_bytes", "Peak copy-on-write bytes of the running fork.", "7.0"),
    "current_fork_perc": _gauge(
        "redis_current_fork_progress_ratio", "Progress of the running fork child (0-1).", "6.2", percent),
    # Stats
    "total_connections_received": _counter(
        "redis_connections_received_total", "Connections accepted.", "1.0"),
    "total_commands_processed": _counter("redis_commands_processed_total", "Commands processed.", "1.0"),
    "total_net_input_bytes": _counter("redis_net_input_bytes_total", "Network bytes read.", "2.8"),
    "total_net_output_bytes": _counter("redis_net_output_bytes_total", "Network bytes written.", "2.8"),
    "rejected_connections": _counter(
        "redis_rejected_connections_total", "Connections rejected (maxclients reached).", "2.6"),
    "sync_full": _counter("redis_replica_resyncs_full_total", "Full resyncs with replicas.", "2.8"),
    "sync_partial_ok": _counter(
        "redis_replica_partial_resync_accepted_total", "Partial resync requests accepted.", "2.8"),
    "sync_partial_err": _counter(
        "redis_replica_partial_resync_denied_total", "Partial resync requests denied.", "2.8"),
    "expired_keys": _counter("redis_expired_keys_total", "Keys expired.", "1.0"),
    "expired_stale_perc": _gauge(
        "redis_expired_stale_percentage", "Estimated percentage of logically expired keys.", "5.0"),
    "expired_time_cap_reached_count": _counter(
        "redis_expired_time_cap_reached_total", "Active expire cycles stopped early.", "5.0"),
    "evicted_keys": _counter("redis_evicted_keys_total", "Keys evicted due to maxmemory.", "1.0"),
    "evicted_clients": _counter(
        "redis_evicted_clients_total", "Clients evicted due to maxmemory-clients.", "7.0"),
    "total_eviction_exceeded_time": _counter(
        "redis_eviction_exceeded_seconds_total", "Time used_memory spent above maxmemory.", "7.0", MILLISECONDS),
    "current_eviction_exceeded_time": _gauge(
        "redis_current_eviction_exceeded_seconds", "Time since used_memory went above maxmemory.", "7.0", MILLISECONDS),
    "keyspace_hits": _counter("redis_keyspace_hits_total", "Successful key lookups.", "1.0"),
    "keyspace_misses": _counter("redis_keyspace_misses_total", "Failed key lookups.", "1.0"),
    "pubsub_channels": _gauge("redis_pubsub_channels", "Pub/Sub channels with subscribers.", "2.0"),
    "pubsub_patterns": _gauge("redis_pubsub_patterns", "Pub/Sub pattern subscriptions.", "2.0"),
    "latest_fork_usec": _gauge("redis_latest_fork_seconds", "Duration of the latest fork.", "2.4", MICROSECONDS),
    "total_forks": _counter("redis_forks_total", "Forks since startup.", "6.2"),
    "migrate_cached_sockets": _gauge("redis_migrate_cached_sockets", "Sockets open for MIGRATE.", "3.0"),
    "slave_expires_tracked_keys": _gauge(
        "redis_slave_expires_tracked_keys", "Keys tracked for expiry on a writable replica.", "4.0"),
    "active_defrag_hits": _counter("redis_defrag_hits_total", "Values reallocated by active defrag.", "4.0"),
    "active_defrag_misses": _counter("redis_defrag_misses_total", "Active defrag skipped allocations.", "4.0"),
    "active_defrag_key_hits": _counter("redis_defrag_key_hits_total", "Keys actively defragmented.", "4.0"),
    "active_defrag_key_misses": _counter("redis_defrag_key_misses_total", "Keys skipped by active defrag.", "4.0"),
    "tracking_total_keys": _gauge("redis_tracking_total_keys", "Keys tracked for client-side caching.", "6.0"),
    "tracking_total_items": _gauge("redis_tracking_total_items", "Items tracked for client-side caching.", "6.0"),
    "tracking_total_prefixes": _gauge("redis_tracking_total_prefixes", "Tracked prefixes.", "6.0"),
    "unexpected_error_replies": _counter(
        "redis_unexpected_error_replies_total", "Unexpected error replies (AOF load, replication).", "6.0"),
    "total_error_replies": _counter("redis_error_replies_total", "Error replies sent to clients.", "6.2"),
    "dump_payload_sanitizations": _counter(
        "redis_dump_payload_sanitizations_total", "Deep payload integrity validations.", "6.2"),
    "total_reads_processed": _counter("redis_reads_processed_total", "Read events processed.", "6.0"),
    "total_writes_processed": _counter("redis_writes_processed_total", "Write events processed.", "6.0"),
    "io_threaded_reads_processed": _counter(
        "redis_io_threaded_reads_processed_total", "Reads processed by I/O threads.", "6.0"),
    "io_threaded_writes_processed": _counter(
        "redis_io_threaded_writes_processed_total", "Writes processed by I/O threads.", "6.0"),
    # Replication
    "connected_slaves": _gauge("redis_connected_slaves", "Connected replicas.", "2.0"),
    "master_repl_offset": _gauge("redis_master_repl_offset", "Replication offset of the primary.", "2.8"),
    "second_repl_offset": _gauge(
        "redis_second_repl_offset", "Offset up to which replication IDs are accepted (-1 if none).", "4.0"),
    "repl_backlog_active": _gauge("redis_repl_backlog_is_active", "1 if the replication backlog is active.", "2.8"),
    "repl_backlog_size": _gauge("redis_replication_backlog_bytes", "Replication backlog size.", "2.8"),
    "repl_backlog_histlen": _gauge("redis_repl_backlog_history_bytes", "Data in the replication backlog.", "2.8"),
    "repl_backlog_first_byte_offset": _gauge(
        "redis_repl_backlog_first_byte_offset", "First offset held by the backlog.", "2.8"),
    "master_link_status": _gauge("redis_master_link_up", "1 if the replica's link to its primary is up.", "2.0",
                                 status),
    "master_last_io_seconds_ago": _gauge(
        "redis_master_last_io_seconds_ago", "Seconds since the last interaction with the primary.", "2.0"),
    "master_link_down_since_seconds": _gauge(
        "redis_master_link_down_since_seconds", "Seconds since the link to the primary went down.", "2.0"),
    "master_sync_in_progress": _gauge("redis_master_sync_in_progress", "1 while syncing with the primary.", "2.0"),
    "slave_repl_offset": _gauge("redis_slave_repl_offset", "Replication offset of the replica.", "2.8"),
    # CPU
    "used_cpu_sys": _counter("redis_cpu_sys_seconds_total", "System CPU consumed.", "1.0"),
    "used_cpu_user": _counter("redis_cpu_user_seconds_total", "User CPU consumed.", "1.0"),
    "used_cpu_sys_children": _counter(
        "redis_cpu_sys_children_seconds_total", "System CPU consumed by children.", "1.0"),
    "used_cpu_user_children": _counter(
        "redis_cpu_user_children_seconds_total", "User CPU consumed by children.", "1.0"),
    "used_cpu_sys_main_thread": _counter(
        "redis_cpu_sys_main_thread_seconds_total", "System CPU consumed by the main thread.", "6.2"),
    "used_cpu_user_main_thread": _counter(
        "redis_cpu_user_main_thread_seconds_total", "User CPU consumed by the main thread.", "6.2"),
    # Cluster
    "cluster_enabled": _gauge("redis_cluster_enabled", "1 if cluster mode is enabled.", "3.0"),
}

# CONFIG GET settings kept per target (for metrics below and the config audit); the rest of
# the ~200 settings are dropped at once rather than held in memory for every target.
CONFIG_KEYS = frozenset({
    "maxmemory", "maxmemory-policy", "maxmemory-samples", "maxmemory-eviction-tenacity", "maxclients",
    "io-threads", "save", "appendonly", "appendfsync", "stop-writes-on-bgsave-error",
    "replica-ignore-maxmemory", "lazyfree-lazy-eviction", "activedefrag", "maxmemory-clients",
    "client-output-buffer-limit", "repl-backlog-size",
})

# CONFIG GET values exported as metrics; INFO wins where both have a value (maxclients).
CONFIG_FIELDS: dict[str, Field] = {
    "maxmemory": _gauge("redis_config_maxmemory", "The maxmemory setting, from CONFIG GET.", "2.0"),
    "io-threads": _gauge("redis_config_io_threads", "The io-threads setting, from CONFIG GET.", "6.0"),
    "maxclients": Field("redis_config_maxclients", number, "2.6"),
}

DB_KEYS = catalog.gauge("redis_db_keys", "Keys in the database.", ("db",), REDIS)
DB_KEYS_EXPIRING = catalog.gauge("redis_db_keys_expiring", "Keys with a TTL in the database.", ("db",), REDIS)
DB_AVG_TTL = catalog.gauge("redis_db_avg_ttl_seconds", "Average TTL of keys with a TTL.", ("db",), REDIS)
CMD_CALLS = catalog.counter("redis_commands_total", "Calls per command.", ("cmd",), REDIS)
CMD_DURATION = catalog.counter(
    "redis_commands_duration_seconds_total", "Time spent per command.", ("cmd",), REDIS)
CMD_REJECTED = catalog.counter(
    "redis_commands_rejected_calls_total", "Calls rejected before execution, per command.", ("cmd",), REDIS)
CMD_FAILED = catalog.counter(
    "redis_commands_failed_calls_total", "Calls that failed during execution, per command.", ("cmd",), REDIS)
ERRORS = catalog.counter("redis_errors_total", "Error replies by error prefix (errorstats).", ("err",), REDIS)
SLAVE_LABELS = ("slave_ip", "slave_port", "slave_state")
SLAVE_OFFSET = catalog.gauge(
    "redis_connected_slave_offset_bytes", "Replication offset of a connected replica.", SLAVE_LABELS, REDIS)
SLAVE_LAG = catalog.gauge(
    "redis_connected_slave_lag_seconds", "Seconds since a connected replica last acknowledged.", SLAVE_LABELS,
    REDIS)
START_TIME = catalog.gauge("redis_start_time_seconds", "Unix time the server started.", (), REDIS)
RDB_ENABLED = catalog.gauge(
    "redis_rdb_enabled", "1 if RDB snapshots are configured (CONFIG save is not empty).", (), REDIS)
STOP_WRITES = catalog.gauge(
    "redis_config_stop_writes_on_bgsave_error",
    "1 if Redis refuses writes (-MISCONF) after a failed background save.", (), REDIS)
COW_PEAK = catalog.gauge(
    "redis_recent_cow_peak_bytes",
    "Largest copy-on-write size of any fork (RDB, AOF rewrite, module) seen in the forecast window.", (), REDIS)
FORK_RISK = catalog.gauge(
    "redis_fork_memory_risk_ratio",
    "(resident memory + redis_recent_cow_peak_bytes) / cache_resident_memory_limit_bytes: above 1, the "
    "next fork is likely to fail or get the process killed (failed BGSAVE, then -MISCONF if "
    "stop-writes-on-bgsave-error).", (), REDIS)
CAPABILITY = catalog.gauge(
    "redis_capability",
    "1 if an optional command works on this server, 0 if it is renamed away or denied by ACL (re-checked "
    "hourly); absent until probed. capability=\"config\" at 0: the audit checks and metrics that read "
    "CONFIG GET (persistence, stop-writes, redis_config_*) are missing for this target.",
    ("capability",), REDIS)
_COW_FIELDS = ("rdb_last_cow_size", "aof_last_cow_size", "module_fork_last_cow_size", "current_cow_peak",
               "current_cow_size")


def _kv(raw: str) -> dict[str, str]:
    """``keys=1,expires=0,avg_ttl=0`` -> dict; tolerant of junk between commas."""
    out: dict[str, str] = {}
    for part in raw.split(","):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _keyspace(name: str, raw: str, out: Samples) -> None:
    kv = _kv(raw)
    labels = (("db", name),)
    out.add(DB_KEYS, float(kv["keys"]), labels)
    out.add(DB_KEYS_EXPIRING, float(kv.get("expires", "0")), labels)
    if "avg_ttl" in kv:
        out.add(DB_AVG_TTL, float(kv["avg_ttl"]) / 1000.0, labels)


def _cmdstat(name: str, raw: str, out: Samples) -> None:
    kv = _kv(raw)
    labels = (("cmd", name.removeprefix("cmdstat_")),)
    out.add(CMD_CALLS, float(kv["calls"]), labels)
    out.add(CMD_DURATION, float(kv.get("usec", "0")) / 1e6, labels)
    if "rejected_calls" in kv:  # 6.2+
        out.add(CMD_REJECTED, float(kv["rejected_calls"]), labels)
        out.add(CMD_FAILED, float(kv.get("failed_calls", "0")), labels)


def _errorstat(name: str, raw: str, out: Samples) -> None:
    out.add(ERRORS, float(_kv(raw)["count"]), (("err", name.removeprefix("errorstat_")),))


def _slave(name: str, raw: str, out: Samples) -> None:
    kv = _kv(raw)
    labels = (("slave_ip", kv.get("ip", "")), ("slave_port", kv.get("port", "")),
              ("slave_state", kv.get("state", "")))
    out.add(SLAVE_OFFSET, float(kv["offset"]), labels)
    if "lag" in kv:
        out.add(SLAVE_LAG, float(kv["lag"]), labels)


@dataclass(frozen=True)
class Composite:
    """A kind of INFO line whose value holds several fields (``db0:keys=1,expires=0``)."""

    pattern: str
    handler: Callable[[str, str, Samples], None]
    families: tuple[str, ...]  # what one line adds, for counting the lines skipped past the series cap


COMPOSITE_LINES: list[Composite] = [
    Composite(r"db\d+", _keyspace, (DB_KEYS, DB_KEYS_EXPIRING, DB_AVG_TTL)),
    Composite(r"cmdstat_.+", _cmdstat, (CMD_CALLS, CMD_DURATION, CMD_REJECTED, CMD_FAILED)),
    Composite(r"errorstat_.+", _errorstat, (ERRORS,)),
    Composite(r"slave\d+", _slave, (SLAVE_OFFSET, SLAVE_LAG)),
]
# One alternation, one match per line: group n is COMPOSITE_LINES[n - 1].
_COMPOSITE = re.compile("|".join(f"({c.pattern})" for c in COMPOSITE_LINES))

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


# --- parsing ----------------------------------------------------------------------------

@dataclass
class Info:
    fields: dict[str, str]
    sections: set[str]
    composite: list[tuple[Composite, str, str]]


def parse_info(text: str) -> Info:
    """Split an INFO reply into plain fields, section names and composite lines."""
    fields: dict[str, str] = {}
    sections: set[str] = set()
    composite: list[tuple[Composite, str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            sections.add(line.lstrip("# ").lower())
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        kind = _COMPOSITE.fullmatch(key)
        if kind is not None:
            composite.append((COMPOSITE_LINES[kind.lastindex - 1], key, value))  # type: ignore[operator]
        else:
            fields[key] = value
    if "used_memory" not in fields or "redis_version" not in fields:
        hint = " (a Sentinel has no memory section)" if fields.get("redis_mode") == "sentinel" else ""
        raise PollError(E.PROTOCOL, f"INFO reply lacks redis_version/used_memory{hint}")
    return Info(fields, sections, composite)


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
        if out.full:  # 100k command names cost a second of CPU to parse only to be dropped
            out.skipped(kind.families)
            continue
        try:
            kind.handler(key, raw, out)
        except (KeyError, ValueError):
            malformed += 1
    for key, field in CONFIG_FIELDS.items():
        if key in config and out.value(field.metric) is None:
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
    _add_unified(out, info, memory, version, ROLES.get(role, role))
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


def _add_unified(out: Samples, info: Info, m: MemoryView, version: str, role: str) -> None:
    f = info.fields
    store = (("store", REDIS),)
    out.add(catalog.CACHE_INFO, 1, store + (
        ("version", version), ("role", role), ("eviction_policy", m.eviction_policy or "")))
    out.add(catalog.CACHE_MEMORY_USED, m.used, store)
    if m.limit is not None:
        out.add(catalog.CACHE_MEMORY_LIMIT, m.limit, store)
        out.add(catalog.CACHE_MEMORY_LIMIT_INFO, 1, store + (("source", m.limit_source or ""),))
        if m.used is not None:
            out.add(catalog.CACHE_MEMORY_UTILIZATION, m.used / m.limit, store)
            out.add(catalog.CACHE_MEMORY_HEADROOM, m.limit - m.used, store)
    out.add(catalog.CACHE_RESIDENT, m.resident, store)
    out.add(catalog.CACHE_RESIDENT_LIMIT, m.resident_limit, store)
    if m.evicts_when_full is not None:
        out.add(catalog.CACHE_EVICTS_WHEN_FULL, int(m.evicts_when_full), store)
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


# --- connection -------------------------------------------------------------------------

class _GuardedMixin:
    """Replaces redis-py's socket creation with netio's opener: TLS with our own context, the
    per-poll guard, and the failure classification every source shares."""

    _guard: Guard
    _tls_context: ssl.SSLContext | None = None
    _server_name: str | None = None

    def _address(self) -> str | tuple[str, int]:
        raise NotImplementedError

    def _connect(self) -> GuardedSocket:
        return open_stream(self._guard, self._address(), self._tls_context, self._server_name)


class _TCPConnection(_GuardedMixin, redis.Connection):
    def _address(self) -> tuple[str, int]:
        return self.host, self.port


class _UnixConnection(_GuardedMixin, redis.UnixDomainSocketConnection):
    def _address(self) -> str:
        return self.path


# Opt-in per-key-prefix view: SCAN + MEMORY USAGE on a bounded sample, every prefixes.interval.
PREFIX_BYTES = catalog.gauge(
    "redis_prefix_bytes",
    "Estimated bytes of the keys with the prefix: MEMORY USAGE summed over a SCAN sample and scaled to DBSIZE "
    "(exact when the sample covered every key); top prefixes, the rest as prefix=\"__other__\".", ("prefix",), REDIS)
PREFIX_KEYS = catalog.gauge("redis_prefix_keys", "Estimated keys with the prefix (same sample, same scaling).",
                            ("prefix",), REDIS)
PREFIX_SAMPLED = catalog.gauge("redis_prefix_sampled_keys", "Keys the last prefix sample measured.", (), REDIS)
PREFIX_SCAN_COMPLETE = catalog.gauge(
    "redis_prefix_scan_complete", "1 if the last prefix sample covered every key (the figures are exact).", (), REDIS)
PREFIX_SCAN_TIME = catalog.gauge("redis_prefix_scan_timestamp_seconds", "Unix time the last prefix sample ended.",
                                 (), REDIS)
SCAN_BATCH = 500  # keys asked of one SCAN and measured in one pipeline of MEMORY USAGE


class RedisSource(PersistentConnectionSource):
    """Polls one Redis/Valkey target over a persistent connection."""

    store = REDIS
    up_family = REDIS_UP
    EXPECTED_ERRORS = (OSError, redis.exceptions.RedisError, UnicodeError)

    def __init__(self, target: RedisTarget) -> None:
        super().__init__(target)
        self.target: RedisTarget = target
        self.conn: redis.connection.AbstractConnection | None = None
        self.fresh_connection = False
        self.answered = False  # the current connection got a reply: the server speaks RESP in the clear
        self.caps = {"config": Capability(), "client": Capability()}
        self.config_values: dict[str, str] = {}
        self.config_fetched_at = float("-inf")
        self.cow_history: deque[tuple[float, float]] = deque()
        self.prefix_samples: list[tuple[str, float | int | None, tuple]] | None = None
        self.prefix_due = 0.0

    def _socket(self) -> GuardedSocket | None:
        sock = getattr(self.conn, "_sock", None)
        return sock if isinstance(sock, GuardedSocket) else None

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # closing a broken socket must never fail a reload
                pass

    def _connect(self, password: str | None) -> None:
        t = self.target
        common = dict(
            username=t.credentials.username, password=password, db=t.db,
            socket_timeout=t.timeout,  # the connect itself is bounded by the guard (open_stream)
            retry=Retry(NoBackoff(), 0), driver_info=None, health_check_interval=0,
            # RESP2: redis-py 8 defaults to RESP3, whose HELLO handshake costs a round trip
            # and fails outright on Redis 5 and on servers with HELLO renamed away.
            protocol=2,
            # INFO ALL is ~10 KiB; redis-py's 64 KiB default buffer per target is waste at scale.
            socket_read_size=16384,
        )
        conn: redis.connection.AbstractConnection
        if t.scheme == "unix":
            conn = _UnixConnection(path=t.path, **common)
        else:
            conn = _TCPConnection(host=t.host, port=t.port, **common)
            if t.scheme == "rediss":
                conn._tls_context = poll_tls_context(t.tls)  # type: ignore[attr-defined]
                conn._server_name = t.tls.server_name if t.tls else None  # type: ignore[attr-defined]
        conn._guard = self.guard  # type: ignore[attr-defined]
        self.conn = conn
        self.answered = False
        conn.connect()
        self.connections_opened += 1
        self.fresh_connection = True

    def _poll_once(self) -> Reading:
        conn = self.conn
        assert conn is not None
        now = time.monotonic()
        commands: list[tuple[str, ...]] = []
        if self.fresh_connection and self.caps["client"].wanted(now):
            commands.append(("CLIENT", "SETNAME", CLIENT_NAME))
        commands.append(("INFO", "ALL"))
        # CONFIG waits for the poll after a connect, so no poll sends more than 2 commands.
        want_config = (len(commands) == 1 and now - self.config_fetched_at >= CONFIG_REFRESH_SECONDS
                       and self.caps["config"].wanted(now))
        if want_config:
            commands.append(("CONFIG", "GET", "*"))

        conn.send_packed_command(conn.pack_commands(commands))
        replies: list[object] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)
            self.answered = True
        self.fresh_connection = False

        by_name = dict(zip((c[0] for c in commands), replies, strict=True))
        if "CLIENT" in by_name:
            self._note_capability("client", by_name["CLIENT"], now)
        if want_config:
            reply = by_name["CONFIG"]
            if self._note_capability("config", reply, now):
                self.config_values = _config_dict(reply)
                self.config_fetched_at = now

        info = by_name["INFO"]
        if isinstance(info, redis.exceptions.ResponseError):
            text = str(info)
            reason = E.AUTH if text.split(" ", 1)[0].upper() in ("NOAUTH", "WRONGPASS", "NOPERM") else E.ERROR
            raise PollError(reason, f"INFO refused: {text}")
        if not isinstance(info, (bytes, str)):
            raise PollError(E.PROTOCOL, f"INFO returned {type(info).__name__}, expected a bulk string")
        text = info.decode("utf-8", "replace") if isinstance(info, bytes) else info
        info = parse_info(text)
        self.guard.remaining()  # past the deadline (a huge reply on a busy CPU): stop, do not map it too
        reading = map_info(info, self.target, self.config_values, time.time())
        if self.target.managed is None:  # a managed service's forks happen on hosts nobody can see
            self._fork_risk(info, reading, now)
        for name, cap in self.caps.items():
            if cap.available is not None:
                reading.samples.add(CAPABILITY, int(cap.available), (("capability", name),))
        if self.target.prefixes is not None:
            if now >= self.prefix_due:
                self.prefix_due = now + self.target.prefixes.interval
                error = self._sample_prefixes(conn)
                if error is not None:
                    reading.section_errors.append("prefixes")
                    log.info("target %s: per-prefix view unavailable this time (%s); next try in %s s",
                             self.target.name, error, self.target.prefixes.interval)
            for family, value, labels in self.prefix_samples or ():
                reading.samples.add(family, value, labels)
        reading.details["config"] = dict(self.config_values)
        reading.details["capabilities"] = {k: v.available for k, v in self.caps.items()}
        reading.details["connections_opened"] = self.connections_opened
        return reading

    def poll(self, deadline: float) -> Reading:
        try:
            return super().poll(deadline)
        except PollError as err:
            # A TLS-only port (ElastiCache Serverless on 6379 and 6380) resets a plain-text client
            # without a word: "reset" would send the user after maxclients and proxies.
            if (err.reason in (E.RESET, E.PROTOCOL) and self.target.scheme == "redis" and not self.answered
                    and not self.guard.tripped and _speaks_tls(self.target.host, self.target.port, deadline)):
                raise PollError(E.TLS_REQUIRED, f"{self.target.address} answers a TLS handshake but reset "
                                                "plain-text RESP; use a rediss:// URL") from None
            raise

    def _sample_prefixes(self, conn: redis.connection.AbstractConnection) -> str | None:
        """SCAN up to max_keys keys and MEMORY USAGE each (pipelined per batch), within max_time;
        sums by prefix, scaled to DBSIZE. Returns why not, or None."""
        view = self.target.prefixes
        assert view is not None
        deadline = min(self.guard.deadline - 0.05 * self.target.timeout, time.monotonic() + view.max_time)
        tally = PrefixTally(view.delimiter)
        sampled, cursor, finished = 0, b"0", False
        try:
            conn.send_command("DBSIZE")
            dbsize = int(conn.read_response())  # type: ignore[arg-type]
            while sampled < view.max_keys and time.monotonic() < deadline:
                conn.send_command("SCAN", cursor, "COUNT", min(SCAN_BATCH, view.max_keys - sampled))
                cursor, reply = conn.read_response()  # type: ignore[misc]
                keys = list(reply)[:view.max_keys - sampled]  # SCAN's COUNT is a hint, not a cap
                cut = len(keys) < len(reply)
                if keys:
                    conn.send_packed_command(conn.pack_commands([("MEMORY", "USAGE", k) for k in keys]))
                    refused: redis.exceptions.ResponseError | None = None
                    for key in keys:
                        try:  # read every reply, even after an error: the connection stays in step
                            size = conn.read_response()
                        except redis.exceptions.ResponseError as exc:
                            refused = refused or exc
                            continue
                        if isinstance(size, int):  # None: the key expired in between
                            tally.add(key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key), size)
                    if refused is not None:
                        raise refused
                    sampled += len(keys)
                if cursor in (b"0", 0, "0"):
                    finished = not cut
                    break
        except redis.exceptions.ResponseError as exc:  # MEMORY or SCAN renamed away, or denied by ACL
            return str(exc).split("\n")[0][:120]
        except (TypeError, ValueError) as exc:
            raise PollError(E.PROTOCOL, f"unexpected reply while sampling prefixes: {exc}") from None
        complete = finished  # SCAN came back to cursor 0: every key was seen once
        measured = tally.counted
        scale = 1.0 if complete or measured == 0 else max(1.0, dbsize / measured)
        out: list[tuple[str, float | int | None, tuple]] = []
        for prefix, size, items in tally.top(view.top):
            labels = (("prefix", prefix),)
            out.append((PREFIX_BYTES, size * scale, labels))
            out.append((PREFIX_KEYS, round(items * scale), labels))
        out += [(PREFIX_SAMPLED, measured, ()), (PREFIX_SCAN_COMPLETE, int(complete), ()),
                (PREFIX_SCAN_TIME, time.time(), ())]
        self.prefix_samples = out
        return None

    def _fork_risk(self, info: Info, reading: Reading, now: float) -> None:
        """The largest fork copy-on-write seen in the window, against the hard limit."""
        cow = max((plausible_bytes(info.fields.get(k)) or 0.0 for k in _COW_FIELDS), default=0.0)
        # One entry per run of equal values (stamped when last seen): COW sizes change only
        # after a fork, so this stays a handful of entries at any poll rate.
        if self.cow_history and self.cow_history[-1][1] == cow:
            self.cow_history.pop()
        self.cow_history.append((now, cow))
        while self.cow_history and self.cow_history[0][0] < now - self.target.forecast_window:
            self.cow_history.popleft()
        peak = max(c for _, c in self.cow_history)
        reading.samples.add(COW_PEAK, peak)
        m = reading.memory
        if m.resident is not None and m.resident_limit:
            ratio = (m.resident + peak) / m.resident_limit
            reading.samples.add(FORK_RISK, ratio)
            reading.details["fork_memory_risk_ratio"] = ratio

    def _note_capability(self, name: str, reply: object, now: float) -> bool:
        cap = self.caps[name]
        ok = not isinstance(reply, redis.exceptions.ResponseError)
        if not ok and cap.available is not False:
            # Once per target: a disabled command is a fact about the server, not an error.
            log.info("target %s: %s is unavailable (%s); skipping it, re-checking hourly",
                     self.target.name, name.upper(), str(reply).split("\n")[0][:120])
        cap.available = ok
        if not ok:
            cap.reprobe_at = now + CAPABILITY_REPROBE_SECONDS
        return ok

    def _classify(self, exc: BaseException) -> PollError:
        if isinstance(exc, (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)):
            return PollError(E.AUTH, E.describe(exc))
        if isinstance(exc, redis.exceptions.ResponseError):
            word = str(exc).split(" ", 1)[0].upper()
            if word in ("NOAUTH", "WRONGPASS", "NOPERM", "INVALIDUSERNAME"):
                return PollError(E.AUTH, E.describe(exc))
            return PollError(E.ERROR, E.describe(exc))
        reason = E.classify_os_error(exc)
        if reason:
            return PollError(reason, E.describe(exc))
        if isinstance(exc, redis.exceptions.TimeoutError):
            return PollError(E.TIMEOUT, E.describe(exc))
        if isinstance(exc, (redis.exceptions.InvalidResponse, redis.exceptions.DataError, UnicodeError)):
            return PollError(E.PROTOCOL, E.describe(exc))
        if isinstance(exc, redis.exceptions.ConnectionError):
            text = str(exc).lower()
            if "closed by server" in text or "connection reset" in text:
                return PollError(E.RESET, E.describe(exc))
            if "protocol" in text:
                return PollError(E.PROTOCOL, E.describe(exc))
            return PollError(E.RESET, E.describe(exc))
        return PollError(E.ERROR, E.describe(exc))


TLS_PROBE_TIMEOUT = 2.0


def _speaks_tls(host: str, port: int, deadline: float) -> bool:
    """Whether ``host:port`` takes part in a TLS handshake: it completes one, or answers the
    ClientHello with a TLS alert (e.g. it wants a client certificate). Nothing is verified: this
    only tells a TLS port from a plain one, and nothing is sent after the handshake."""
    timeout = min(TLS_PROBE_TIMEOUT, deadline - time.monotonic())
    if timeout <= 0:
        return False
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.settimeout(max(0.001, min(timeout, deadline - time.monotonic())))  # connect + handshake within it
            with ctx.wrap_socket(raw, server_hostname=host or None):
                return True
    except ssl.SSLError as exc:
        return "ALERT" in str(exc.reason or "").upper()
    except (OSError, ValueError):
        return False


def _config_dict(reply: object) -> dict[str, str]:
    """CONFIG GET reply (flat list in RESP2, map in RESP3) -> {name: value}."""
    def text(v: object) -> str:
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    if isinstance(reply, dict):
        pairs = list(reply.items())
    elif isinstance(reply, list):
        pairs = [(reply[i], reply[i + 1]) for i in range(0, len(reply) - 1, 2)]
    else:
        return {}
    return {key: text(v)[:1024] for k, v in pairs if (key := text(k)) in CONFIG_KEYS}
