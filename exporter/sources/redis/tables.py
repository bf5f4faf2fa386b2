"""Every ``redis_*`` family, and the tables that map INFO and CONFIG GET fields to them.

``INFO_FIELDS`` holds field -> metric with the Redis version that introduced the field (the
generated metrics reference shows it). Names follow oliver006/redis_exporter except where its
names break Prometheus conventions (see docs/compatibility.md). All families are declared here,
in one order: the catalog's declaration order is the exposition order.
"""

from __future__ import annotations

from exporter import catalog
from exporter.sources.fields import (
    MICROSECONDS,
    MILLISECONDS,
    Field,
    Parser,
    counter_field,
    gauge_field,
    number,
    percent,
    status,
)

REDIS = "redis"


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
    "cluster_connections": _gauge("redis_cluster_connections", "Cluster bus connections.", "6.2"),
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
