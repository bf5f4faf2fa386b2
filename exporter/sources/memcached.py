"""Poll a memcached server: one persistent connection, one round trip.

Each poll writes ``stats``, ``stats settings``, ``stats slabs`` and ``stats items`` at once
(preceded, on a fresh connection with credentials, by the ASCII-auth ``set`` that ``-Y``
authfiles expect) and reads the four replies. A server started with ``-S`` (SASL) speaks only
the binary protocol: a text exchange on a fresh connection that the server closes without a
byte of reply is followed by a binary ``SASL_LIST_MECHS`` probe; if that is answered, the target
is polled over the binary protocol from then on (``STAT`` with the keys ``settings``, ``slabs``
and ``items`` serves the same sections), authenticated with SASL PLAIN. The text protocol is parsed here rather than
through pymemcache's ``stats()``, which keeps undecodable values as bytes and turns
``yes``/``no`` and ``slab_automove 2`` into booleans.

``stats`` is required; the other three are optional sections: an ``ERROR`` reply (old or
odd servers, proxies) gives a partial snapshot, counted in
``cache_exporter_section_errors_total{section}`` and skipped afterwards (re-probed hourly).

Names, labels and the set/flush rules follow prometheus/memcached_exporter, with its type
mistakes fixed (evicted_time, mem_requested and extstore bytes_used are gauges; counters end
in ``_total``). Added: the stats it does not export, settings as an info series, free page
headroom and a per-slab-class calcification signal.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque
from dataclasses import dataclass

from exporter import catalog
from exporter import errors as E
from exporter.errors import PollError
from exporter.netio import GuardedSocket, open_stream, poll_tls_context
from exporter.snapshot import MemoryView, Samples, SeriesLimits
from exporter.sources.base import Capability, PersistentConnectionSource, Reading
from exporter.sources.fields import (
    MICROSECONDS,
    Field,
    Parser,
    counter_field,
    finite,
    gauge_field,
    number,
    plausible_bytes,
    status,
)
from exporter.sources.memory import add_unified_memory
from exporter.sources.prefixes import PrefixTally
from exporter.targets import MemcachedTarget

log = logging.getLogger(__name__)

MEMCACHED = "memcached"
MAX_LINE = 8192
DEFAULT_PAGE_SIZE = 1 << 20
CALCIFICATION_WINDOW = 5  # polls of history behind the calcification signal
SECTION_REPROBE_SECONDS = 3600.0
SECTIONS = ("stats", "settings", "slabs", "items")
_COMMANDS = {"stats": b"stats\r\n", "settings": b"stats settings\r\n", "slabs": b"stats slabs\r\n",
             "items": b"stats items\r\n"}


# The text probe sent before ASCII auth. Padded past 24 bytes: a binary-only (-S) server reads a
# text command as a 24-byte binary header, and a shorter one would leave it waiting (a timeout)
# instead of closing at the wrong magic byte (detected, see _binary_only).
TEXT_PROBE = b"version" + b" " * 16 + b"\r\n"

# Binary protocol: request/response magic, header layout, the opcodes and statuses used here.
BIN_REQUEST, BIN_RESPONSE = 0x80, 0x81
BIN_HEADER = struct.Struct(">BBHBBHIIQ")  # magic opcode keylen extlen datatype status/vbucket bodylen opaque cas
OP_STAT, OP_SASL_LIST_MECHS, OP_SASL_AUTH = 0x10, 0x20, 0x21
ST_OK, ST_AUTH_ERROR = 0x0000, 0x0020
MAX_BIN_BODY = 1 << 20  # one stat (name + value) or one SASL reply; far below this in practice
_STAT_KEYS = {"stats": b"", "settings": b"settings", "slabs": b"slabs", "items": b"items"}
SASL_MECHANISM = "PLAIN"


def _gauge(metric: str, help: str, since: str = "1.4", parse: Parser = number, labels: tuple[str, ...] = ()) -> Field:
    return gauge_field(MEMCACHED, metric, help, since, parse, labels)


def _counter(metric: str, help: str, since: str = "1.4", parse: Parser = number,
             labels: tuple[str, ...] = ()) -> Field:
    return counter_field(MEMCACHED, metric, help, since, parse, labels)


MEMCACHED_UP = catalog.gauge("memcached_up", "1 if the last poll of the memcached server succeeded, else 0.", (),
                             MEMCACHED)
VERSION = catalog.gauge("memcached_version", "Constant 1; label version is the server's version.", ("version",),
                        MEMCACHED)
SETTINGS_INFO = catalog.gauge(
    "memcached_settings_info", "Constant 1; labels are the server's memory-related settings (stats settings).",
    ("evictions", "slab_reassign", "slab_automove", "lru_segmented", "maxbytes", "item_size_max",
     "slab_chunk_max", "growth_factor"), MEMCACHED)
COMMANDS = catalog.counter(
    "memcached_commands_total", "Requests by command and status (set hit = cmd_set minus cas; flush hit = cmd_flush).",
    ("command", "status"), MEMCACHED)

# `stats`: field -> metric
STATS_FIELDS: dict[str, Field] = {
    "uptime": _gauge("memcached_uptime_seconds", "Seconds since the server started."),
    "time": _gauge("memcached_time_seconds", "Current Unix time according to the server."),
    "rusage_user": _counter("memcached_process_user_cpu_seconds_total", "User CPU consumed by the server."),
    "rusage_system": _counter("memcached_process_system_cpu_seconds_total", "System CPU consumed by the server."),
    "bytes_read": _counter("memcached_read_bytes_total", "Bytes read from the network."),
    "bytes_written": _counter("memcached_written_bytes_total", "Bytes written to the network."),
    "curr_connections": _gauge("memcached_current_connections", "Open connections."),
    "total_connections": _counter("memcached_connections_total", "Connections opened since start."),
    "rejected_connections": _counter(
        "memcached_connections_rejected_total", "Connections rejected at the -c limit (maxconns_fast).", "1.4.22"),
    "conn_yields": _counter("memcached_connections_yielded_total", "Connections yielded at the -R limit."),
    "listen_disabled_num": _counter(
        "memcached_connections_listener_disabled_total", "Times the listener was disabled at the -c limit."),
    "time_in_listen_disabled_us": _counter(
        "memcached_listen_disabled_seconds_total", "Time the listener spent disabled.", "1.4.17", MICROSECONDS),
    "accepting_conns": _gauge("memcached_accepting_connections", "1 if the server accepts new connections."),
    "bytes": _gauge("memcached_current_bytes", "Bytes used by stored items (not slab overhead)."),
    "limit_maxbytes": _gauge("memcached_limit_bytes", "Bytes the server may use for storage (-m)."),
    "curr_items": _gauge("memcached_current_items", "Items stored."),
    "total_items": _counter("memcached_items_total", "Items stored since start."),
    "evictions": _counter("memcached_items_evicted_total", "Valid items evicted to free memory."),
    "reclaimed": _counter("memcached_items_reclaimed_total", "Stores that reused the memory of an expired item."),
    "store_too_large": _counter(
        "memcached_item_too_large_total", "Stores refused: item larger than the max item size.", "1.5.4"),
    "store_no_memory": _counter(
        "memcached_item_no_memory_total", "Stores refused for lack of memory (-M, or nothing evictable).", "1.5.4"),
    "lru_crawler_starts": _counter("memcached_lru_crawler_starts_total", "LRU crawler runs started.", "1.4.22"),
    "direct_reclaims": _counter(
        "memcached_direct_reclaims_total", "Times a worker had to reclaim or evict directly.", "1.4.25"),
    "crawler_items_checked": _counter(
        "memcached_lru_crawler_items_checked_total", "Items examined by the LRU crawler.", "1.4.25"),
    "crawler_reclaimed": _counter(
        "memcached_lru_crawler_reclaimed_total", "Expired items freed by the LRU crawler.", "1.4.22"),
    "moves_to_cold": _counter("memcached_lru_crawler_moves_to_cold_total", "Items moved to COLD.", "1.4.25"),
    "moves_to_warm": _counter("memcached_lru_crawler_moves_to_warm_total", "Items moved to WARM.", "1.4.25"),
    "moves_within_lru": _counter(
        "memcached_lru_crawler_moves_within_lru_total", "Items bumped within HOT or WARM.", "1.4.25"),
    # Not exported by memcached_exporter:
    "get_expired": _counter("memcached_get_expired_total", "Gets that found an expired item.", "1.5.3"),
    "get_flushed": _counter(
        "memcached_get_flushed_total", "Gets that found an item invalidated by flush_all.", "1.5.3"),
    "evicted_unfetched": _counter(
        "memcached_items_evicted_unfetched_total", "Evicted items that were never fetched.", "1.4.15"),
    "expired_unfetched": _counter(
        "memcached_items_expired_unfetched_total", "Expired items that were never fetched.", "1.4.15"),
    "evicted_active": _counter(
        "memcached_items_evicted_active_total", "Evicted items that were active (bumped) recently.", "1.5.6"),
    "slab_global_page_pool": _gauge(
        "memcached_slab_global_page_pool", "Free pages in the global pool, available to any slab class.", "1.4.25"),
    "slabs_moved": _counter("memcached_slabs_moved_total", "Pages moved between slab classes.", "1.4.11"),
    "slab_reassign_evictions_nomem": _counter(
        "memcached_slab_reassign_evictions_nomem_total", "Valid items lost while moving a page (no memory).", "1.4.25"),
    "malloc_fails": _counter("memcached_malloc_fails_total", "Failed memory allocations.", "1.4.16"),
    "hash_bytes": _gauge("memcached_hash_bytes", "Memory used by the hash table.", "1.4.13"),
    "auth_cmds": _counter("memcached_auth_commands_total", "Authentication attempts.", "1.4.3"),
    "auth_errors": _counter("memcached_auth_errors_total", "Failed authentication attempts.", "1.4.3"),
}

# Present only when extstore is active (keyed on extstore_limit_maxbytes, like the peer).
EXTSTORE_FIELDS: dict[str, Field] = {
    "extstore_compact_lost": _counter("memcached_extstore_compact_lost_total", "Items lost during compaction.", "1.5"),
    "extstore_compact_rescues": _counter(
        "memcached_extstore_compact_rescued_total", "Items rescued during compaction.", "1.5"),
    "extstore_compact_skipped": _counter(
        "memcached_extstore_compact_skipped_total", "Items dropped during compaction.", "1.5"),
    "extstore_page_allocs": _counter("memcached_extstore_pages_allocated_total", "Pages allocated.", "1.5"),
    "extstore_page_evictions": _counter("memcached_extstore_pages_evicted_total", "Pages evicted.", "1.5"),
    "extstore_page_reclaims": _counter("memcached_extstore_pages_reclaimed_total", "Empty pages freed.", "1.5"),
    "extstore_pages_free": _gauge("memcached_extstore_pages_free", "Pages holding no items.", "1.5"),
    "extstore_pages_used": _gauge("memcached_extstore_pages_used", "Pages holding items.", "1.5"),
    "extstore_objects_evicted": _counter("memcached_extstore_objects_evicted_total", "Items evicted.", "1.5"),
    "extstore_objects_read": _counter("memcached_extstore_objects_read_total", "Items read.", "1.5"),
    "extstore_objects_written": _counter("memcached_extstore_objects_written_total", "Items written.", "1.5"),
    "extstore_objects_used": _gauge("memcached_extstore_objects_used", "Items stored.", "1.5"),
    "extstore_bytes_evicted": _counter("memcached_extstore_bytes_evicted_total", "Bytes evicted.", "1.5"),
    "extstore_bytes_written": _counter("memcached_extstore_bytes_written_total", "Bytes written.", "1.5"),
    "extstore_bytes_read": _counter("memcached_extstore_bytes_read_total", "Bytes read.", "1.5"),
    "extstore_bytes_used": _gauge("memcached_extstore_bytes_used", "Bytes stored (a gauge, not a counter).", "1.5"),
    "extstore_bytes_fragmented": _gauge(
        "memcached_extstore_bytes_fragmented", "Bytes allocated to pages but unused.", "1.5"),
    "extstore_limit_maxbytes": _gauge("memcached_extstore_bytes_limit", "Bytes of external storage.", "1.5"),
    "extstore_io_queue": _gauge("memcached_extstore_io_queue_depth", "Items waiting for I/O.", "1.5"),
}

# Present only in proxy mode (keyed on proxy_backend_total, like the peer).
PROXY_FIELDS: dict[str, Field] = {
    "proxy_conn_requests": _counter("memcached_proxy_conn_requests_total", "Backend connections opened.", "1.6.13"),
    "proxy_conn_errors": _counter("memcached_proxy_conn_errors_total", "Backend connection errors.", "1.6.13"),
    "proxy_conn_oom": _counter("memcached_proxy_conn_oom_total", "Out of memory allocating a connection.", "1.6.13"),
    "proxy_req_active": _gauge("memcached_proxy_req_active", "Requests in flight through the proxy.", "1.6.13"),
    "proxy_config_reloads": _counter("memcached_proxy_config_reloads_total", "Config reload attempts.", "1.6.13"),
    "proxy_config_reload_fails": _counter(
        "memcached_proxy_config_reload_fails_total", "Failed config reloads.", "1.6.13"),
    "proxy_config_cron_runs": _counter("memcached_proxy_config_cron_runs_total", "Lua cron hook runs.", "1.6.13"),
    "proxy_config_cron_fails": _counter("memcached_proxy_config_cron_fails_total", "Lua cron hook errors.", "1.6.13"),
    "proxy_backend_total": _gauge("memcached_proxy_backends", "Backends configured.", "1.6.13"),
    "proxy_backend_marked_bad": _counter(
        "memcached_proxy_backend_marked_bad_total", "Times a backend was marked bad.", "1.6.13"),
    "proxy_backend_failed": _gauge("memcached_proxy_backend_failed", "Backends currently failed.", "1.6.13"),
    "proxy_request_failed_depth": _counter(
        "memcached_proxy_request_failed_depth_total", "Requests dropped at backend depth limits.", "1.6.13"),
    "round_robin_fallback": _counter(
        "memcached_round_robin_fallback_total", "Times the proxy fell back to round robin.", "1.6.13"),
    "unexpected_napi_ids": _counter(
        "memcached_unexpected_napi_ids_total", "Unexpected event-loop (NAPI) ids seen.", "1.6.13"),
}

# `stats settings`
SETTINGS_FIELDS: dict[str, Field] = {
    "maxconns": _gauge("memcached_max_connections", "Maximum simultaneous connections (-c)."),
    "item_size_max": _gauge("memcached_item_size_max_bytes", "Largest storable item (-I).", "1.4.2"),
}
# Exported only when the crawler is on, as memcached_exporter does.
LRU_CRAWLER_FIELDS: dict[str, Field] = {
    "lru_crawler": _gauge("memcached_lru_crawler_enabled", "1 if the LRU crawler is enabled.", "1.4.22", status),
    "lru_crawler_sleep": _gauge("memcached_lru_crawler_sleep", "Microseconds between LRU crawls.", "1.4.22"),
    "lru_crawler_tocrawl": _gauge("memcached_lru_crawler_to_crawl", "Max items crawled per slab per run.", "1.4.22"),
    "lru_maintainer_thread": _gauge(
        "memcached_lru_crawler_maintainer_thread", "1 if the LRU maintainer thread runs.", "1.4.25", status),
    "hot_lru_pct": _gauge("memcached_lru_crawler_hot_percent", "Percent of slab memory for HOT.", "1.4.25"),
    "warm_lru_pct": _gauge("memcached_lru_crawler_warm_percent", "Percent of slab memory for WARM.", "1.4.25"),
    "hot_max_factor": _gauge("memcached_lru_crawler_hot_max_factor", "HOT idle age = COLD age * this.", "1.5"),
    "warm_max_factor": _gauge("memcached_lru_crawler_warm_max_factor", "WARM idle age = COLD age * this.", "1.5"),
}

SLAB = ("slab",)
# `stats items`, per slab class: field -> metric (label slab)
ITEMS_FIELDS: dict[str, Field] = {
    "number": _gauge("memcached_slab_current_items", "Items in the slab class.", labels=SLAB),
    "age": _gauge("memcached_slab_items_age_seconds", "Age of the oldest item in the class.", labels=SLAB),
    "number_hot": _gauge("memcached_slab_hot_items", "Items in the HOT LRU.", "1.4.25", labels=SLAB),
    "number_warm": _gauge("memcached_slab_warm_items", "Items in the WARM LRU.", "1.4.25", labels=SLAB),
    "number_cold": _gauge("memcached_slab_cold_items", "Items in the COLD LRU.", "1.4.25", labels=SLAB),
    "number_temp": _gauge("memcached_slab_temporary_items", "Items in the TEMP LRU.", "1.4.25", labels=SLAB),
    "age_hot": _gauge("memcached_slab_hot_age_seconds", "Age of the oldest item in HOT.", "1.4.25", labels=SLAB),
    "age_warm": _gauge("memcached_slab_warm_age_seconds", "Age of the oldest item in WARM.", "1.4.25", labels=SLAB),
    "evicted_time": _gauge(
        "memcached_slab_items_evicted_time_seconds", "Idle time of the last evicted item (a gauge).", labels=SLAB),
    "mem_requested": _gauge(
        "memcached_slab_mem_requested_bytes", "Bytes the items of the class asked for (a gauge).", labels=SLAB),
    "evicted": _counter("memcached_slab_items_evicted_total", "Items evicted before they expired.", labels=SLAB),
    "evicted_nonzero": _counter(
        "memcached_slab_items_evicted_nonzero_total", "Items with a TTL evicted before it ran out.", labels=SLAB),
    "evicted_unfetched": _counter(
        "memcached_slab_items_evicted_unfetched_total", "Evicted items never fetched.", labels=SLAB),
    "expired_unfetched": _counter(
        "memcached_slab_items_expired_unfetched_total", "Expired items never fetched.", labels=SLAB),
    "evicted_active": _counter(
        "memcached_slab_items_evicted_active_total", "Evicted items that were recently active.", "1.5.6", labels=SLAB),
    "outofmemory": _counter(
        "memcached_slab_items_outofmemory_total", "Stores in the class refused for lack of memory.", labels=SLAB),
    "reclaimed": _counter("memcached_slab_items_reclaimed_total", "Stores that reused expired items.", labels=SLAB),
    "crawler_reclaimed": _counter(
        "memcached_slab_items_crawler_reclaimed_total", "Expired items freed by the LRU crawler.", labels=SLAB),
    "tailrepairs": _counter("memcached_slab_items_tailrepairs_total", "LRU tail repairs.", labels=SLAB),
    "moves_to_cold": _counter("memcached_slab_items_moves_to_cold_total", "Items moved to COLD.", labels=SLAB),
    "moves_to_warm": _counter("memcached_slab_items_moves_to_warm_total", "Items moved to WARM.", labels=SLAB),
    "moves_within_lru": _counter(
        "memcached_slab_items_moves_within_lru_total", "Items bumped within HOT or WARM.", labels=SLAB),
}
LRU_HITS = catalog.counter("memcached_slab_lru_hits_total", "Get hits per LRU of the class.", ("slab", "lru"),
                           MEMCACHED)
LRU_HITS_FIELDS = {"hits_to_hot": "hot", "hits_to_warm": "warm", "hits_to_cold": "cold", "hits_to_temp": "temporary"}

# `stats slabs`, per slab class
SLABS_FIELDS: dict[str, Field] = {
    "chunk_size": _gauge("memcached_slab_chunk_size_bytes", "Bytes per chunk in the class.", labels=SLAB),
    "chunks_per_page": _gauge("memcached_slab_chunks_per_page", "Chunks per page in the class.", labels=SLAB),
    "total_pages": _gauge("memcached_slab_current_pages", "Pages assigned to the class.", labels=SLAB),
    "total_chunks": _gauge("memcached_slab_current_chunks", "Chunks in the class.", labels=SLAB),
    "used_chunks": _gauge("memcached_slab_chunks_used", "Chunks holding an item.", labels=SLAB),
    "free_chunks": _gauge("memcached_slab_chunks_free", "Chunks free for reuse.", labels=SLAB),
    "free_chunks_end": _gauge("memcached_slab_chunks_free_end", "Free chunks at the end of the last page.",
                              labels=SLAB),
}
SLAB_COMMANDS = catalog.counter(
    "memcached_slab_commands_total", "Requests per slab class by command and status.", ("slab", "command", "status"),
    MEMCACHED)
MALLOCED = catalog.gauge(
    "memcached_malloced_bytes", "Bytes of slab pages handed out (what runs out at limit_maxbytes).", (), MEMCACHED)
ACTIVE_SLABS = catalog.gauge("memcached_active_slabs", "Slab classes with pages.", (), MEMCACHED)
FREE_PAGES = catalog.gauge(
    "memcached_free_pages",
    "Pages any class can still get: the global page pool plus unallocated pages under limit_maxbytes.", (), MEMCACHED)
CALCIFIED = catalog.gauge(
    "memcached_slab_calcified",
    "1 while the class evicts (or refuses stores) although other classes hold free chunks, no page is free "
    "and no page has moved between classes.", SLAB, MEMCACHED)
CALCIFIED_CLASSES = catalog.gauge(
    "memcached_calcified_slab_classes", "Slab classes currently calcified (see memcached_slab_calcified).", (),
    MEMCACHED)

# Opt-in per-key-prefix view (lru_crawler metadump), refreshed every prefixes.interval.
PREFIX_BYTES = catalog.gauge(
    "memcached_prefix_bytes",
    "Bytes of the items whose keys start with the prefix (lru_crawler metadump item sizes; the top prefixes, "
    "the rest summed as prefix=\"__other__\", keys without the delimiter as \"__none__\").", ("prefix",), MEMCACHED)
PREFIX_ITEMS = catalog.gauge("memcached_prefix_items", "Items whose keys start with the prefix (same dump).",
                             ("prefix",), MEMCACHED)
PREFIX_SCAN_COMPLETE = catalog.gauge(
    "memcached_prefix_scan_complete",
    "1 if the last metadump ran to its end; 0 if it stopped at max_time or max_bytes (the figures cover the "
    "keys read until then).", (), MEMCACHED)
PREFIX_SCAN_TIME = catalog.gauge("memcached_prefix_scan_timestamp_seconds", "Unix time the last metadump ended.",
                                 (), MEMCACHED)
PREFIX_SCAN_DURATION = catalog.gauge("memcached_prefix_scan_duration_seconds", "How long the last metadump took.",
                                     (), MEMCACHED)
METADUMP = b"lru_crawler metadump all\r\n"

_HIT_MISS_OPS = ("get", "delete", "incr", "decr", "cas", "touch")


# --- parsing ----------------------------------------------------------------------------

_ITEMS_FAMILIES = tuple(f.metric for f in ITEMS_FIELDS.values()) + (LRU_HITS,)
_SLABS_FAMILIES = tuple(f.metric for f in SLABS_FIELDS.values()) + (SLAB_COMMANDS,)


def parse_stats(lines: list[str], section: str) -> dict[str, str]:
    """``STAT name value`` lines -> {name: value}. Anything else is a protocol error."""
    out: dict[str, str] = {}
    for line in lines:
        parts = line.split(" ", 2)
        if len(parts) < 2 or parts[0] != "STAT":
            raise PollError(E.PROTOCOL, f"unexpected line in stats {section} reply: {line[:80]!r}")
        out[parts[1]] = parts[2] if len(parts) == 3 else ""
    return out


def split_classes(stats: dict[str, str], prefix: str = "") -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """``items:4:number`` / ``4:chunk_size`` -> ({"4": {"number": ...}}, {global fields})."""
    per_class: dict[str, dict[str, str]] = {}
    flat: dict[str, str] = {}
    for key, value in stats.items():
        parts = key.removeprefix(prefix).split(":", 1) if key.startswith(prefix) else [key]
        if len(parts) == 2 and parts[0].isdigit():
            per_class.setdefault(parts[0], {})[parts[1]] = value
        else:
            flat[key] = value
    return per_class, flat


StatsReply = dict[str, str] | str  # one section's fields, or the error line the server sent instead


@dataclass
class Sections:
    """The parsed replies of one poll; None for an optional section that failed or was skipped."""

    stats: dict[str, str]
    settings: dict[str, str] | None = None
    slabs: dict[str, str] | None = None
    items: dict[str, str] | None = None


class _Tally:
    """Adds table-mapped fields to Samples and counts the unparseable ones."""

    def __init__(self, out: Samples) -> None:
        self.out = out
        self.malformed = 0

    def table(self, table: dict[str, Field], values: dict[str, str], labels: tuple = ()) -> None:
        for key, field in table.items():
            raw = values.get(key)
            if raw is None:
                continue
            try:
                self.out.add(field.metric, field.parse(raw), labels)
            except ValueError:
                self.malformed += 1

    def value(self, family: str, raw: str | None, labels: tuple = ()) -> None:
        if raw is None:
            return
        value = finite(raw)
        if value is None:
            self.malformed += 1
        else:
            self.out.add(family, value, labels)


def _commands(t: _Tally, values: dict[str, str], family: str, labels: tuple, set_cas: tuple[str, ...],
              global_stats: bool) -> None:
    """memcached_exporter's command rules: op hits (and, globally, misses), cas badval, flush
    (global only), and set hit = cmd_set minus the cas commands that cmd_set also counts."""
    for op in _HIT_MISS_OPS:
        t.value(family, values.get(f"{op}_hits"), labels + (("command", op), ("status", "hit")))
        if global_stats:
            t.value(family, values.get(f"{op}_misses"), labels + (("command", op), ("status", "miss")))
    t.value(family, values.get("cas_badval"), labels + (("command", "cas"), ("status", "badval")))
    if global_stats:
        t.value(family, values.get("cmd_flush"), labels + (("command", "flush"), ("status", "hit")))
    cmd_set = finite(values.get("cmd_set"))
    cas = [v for k in set_cas if (v := finite(values.get(k))) is not None]
    if cmd_set is not None and len(cas) == len(set_cas):
        t.out.add(family, cmd_set - sum(cas), labels + (("command", "set"), ("status", "hit")))


@dataclass
class _PrefixScan:
    """The last metadump's result, exported on every poll until the next one."""

    top: list[tuple[str, float, int]]
    complete: bool
    ended: float  # unix time
    duration: float

    def add_to(self, out: Samples) -> None:
        for prefix, size, items in self.top:
            out.add(PREFIX_BYTES, size, (("prefix", prefix),))
            out.add(PREFIX_ITEMS, items, (("prefix", prefix),))
        out.add(PREFIX_SCAN_COMPLETE, int(self.complete))
        out.add(PREFIX_SCAN_TIME, self.ended)
        out.add(PREFIX_SCAN_DURATION, self.duration)


@dataclass
class _History:
    """A few polls of per-class eviction counters and slabs_moved, for the calcification signal."""

    evicting: deque  # of dict[class, evicted + outofmemory]
    moved: deque  # of slabs_moved

    @classmethod
    def new(cls) -> _History:
        return cls(deque(maxlen=CALCIFICATION_WINDOW), deque(maxlen=CALCIFICATION_WINDOW))


def map_sections(s: Sections, target: MemcachedTarget, history: _History) -> Reading:
    """Turn parsed replies into samples, the unified memory view and the pressure signals."""
    out = Samples(SeriesLimits.of(target))
    t = _Tally(out)
    stats = s.stats
    store = (("store", MEMCACHED),)
    version = stats.get("version", "")
    out.add(VERSION, 1, (("version", version),))
    t.table(STATS_FIELDS, stats)
    if "extstore_limit_maxbytes" in stats:
        t.table(EXTSTORE_FIELDS, stats)
    if "proxy_backend_total" in stats:
        t.table(PROXY_FIELDS, stats)
    _commands(t, stats, COMMANDS, (), ("cas_misses", "cas_hits", "cas_badval"), global_stats=True)

    settings = s.settings or {}
    if s.settings is not None:
        t.table(SETTINGS_FIELDS, settings)
        if settings.get("lru_crawler") == "yes":
            t.table(LRU_CRAWLER_FIELDS, settings)
        out.add(SETTINGS_INFO, 1, tuple((k, settings.get(k, "")) for k in catalog.get(SETTINGS_INFO).labels))

    slab_classes, slab_flat = split_classes(s.slabs or {})
    item_classes, _ = split_classes(s.items or {}, prefix="items:")
    if s.slabs is not None:
        t.value(MALLOCED, slab_flat.get("total_malloced"))
        t.value(ACTIVE_SLABS, slab_flat.get("active_slabs"))
    if target.slabs:
        for cls, values in sorted(item_classes.items(), key=lambda kv: int(kv[0])):
            if out.full:  # past the series cap: count the class, do not map it
                out.skipped(_ITEMS_FAMILIES)
                continue
            labels = (("slab", cls),)
            t.table(ITEMS_FIELDS, values, labels)
            for key, lru in LRU_HITS_FIELDS.items():
                t.value(LRU_HITS, values.get(key), labels + (("lru", lru),))
        for cls, values in sorted(slab_classes.items(), key=lambda kv: int(kv[0])):
            if out.full:
                out.skipped(_SLABS_FAMILIES)
                continue
            labels = (("slab", cls),)
            t.table(SLABS_FIELDS, values, labels)
            _commands(t, values, SLAB_COMMANDS, labels, ("cas_hits", "cas_badval"), global_stats=False)

    # Memory: what runs out is slab pages (total_malloced) against limit_maxbytes.
    limit_maxbytes = plausible_bytes(stats.get("limit_maxbytes")) or 0.0
    used = plausible_bytes(slab_flat.get("total_malloced")) if s.slabs is not None else None
    if limit_maxbytes > 0:
        limit, limit_source = limit_maxbytes, "limit_maxbytes"
    elif target.memory_limit:
        limit, limit_source = float(target.memory_limit), "config"
    else:
        limit, limit_source = None, None
    evictions_setting = settings.get("evictions")
    evicts = {"on": True, "off": False}.get(evictions_setting or "")
    memory = MemoryView(used=used, limit=limit, limit_source=limit_source, resident=None,
                        resident_limit=float(target.memory_limit) if target.memory_limit else None,
                        evicts_when_full=evicts,
                        eviction_policy=None if evicts is None else "lru" if evicts else "noeviction")
    add_unified_memory(out, MEMCACHED, memory, version, "standalone")
    out.add(catalog.CACHE_HITS, finite(stats.get("get_hits")), store)
    out.add(catalog.CACHE_MISSES, finite(stats.get("get_misses")), store)
    out.add(catalog.CACHE_EVICTIONS, finite(stats.get("evictions")), store)
    # Each expired item leaves exactly one way: found by a get, reused at the LRU tail, or crawled.
    ways = ("get_expired", "reclaimed", "crawler_reclaimed")
    expired = [v for k in ways if (v := finite(stats.get(k))) is not None]
    if len(expired) == len(ways):
        out.add(catalog.CACHE_EXPIRATIONS, sum(expired), store)
    # store_no_memory (1.5.4+) counts only text-protocol stores: a binary (SASL) client's refused
    # sets show only in the per-class outofmemory, which older servers have too. Both count up:
    # the larger is a counter as well.
    rejections = finite(stats.get("store_no_memory"))
    if s.items is not None:
        per_class = sum(finite(v.get("outofmemory")) or 0.0 for v in item_classes.values())
        rejections = per_class if rejections is None else max(rejections, per_class)
    out.add(catalog.CACHE_WRITE_REJECTIONS, rejections, store)
    out.add(catalog.CACHE_ITEMS, finite(stats.get("curr_items")), store)

    _pressure(out, stats, slab_classes, slab_flat, item_classes, limit_maxbytes, target, history,
              have_slabs=s.slabs is not None, have_items=s.items is not None)
    details: dict[str, object] = {"server": "memcached", "version": version,
                                  "evictions": evictions_setting, "slab_automove": settings.get("slab_automove")}
    return Reading(out, memory, details, t.malformed)


def _pressure(out: Samples, stats: dict[str, str], slab_classes: dict[str, dict[str, str]],
              slab_flat: dict[str, str], item_classes: dict[str, dict[str, str]], limit: float,
              target: MemcachedTarget, history: _History, have_slabs: bool, have_items: bool) -> None:
    """Free page headroom and the per-class calcification signal."""
    if not have_slabs:
        return
    malloced = plausible_bytes(slab_flat.get("total_malloced")) or 0.0
    pages = sum(finite(v.get("total_pages")) or 0.0 for v in slab_classes.values())
    page_size = malloced / pages if pages > 0 and malloced > 0 else DEFAULT_PAGE_SIZE
    pool = finite(stats.get("slab_global_page_pool")) or 0.0
    free_pages = pool + max(0.0, (limit - malloced) // page_size) if limit > 0 else None
    out.add(FREE_PAGES, free_pages)
    if not have_items or free_pages is None:
        return

    evicting_now = {cls: (finite(v.get("evicted")) or 0.0) + (finite(v.get("outofmemory")) or 0.0)
                    for cls, v in item_classes.items()}
    moved_now = finite(stats.get("slabs_moved")) or 0.0
    history.evicting.append(evicting_now)
    history.moved.append(moved_now)
    if len(history.evicting) < 2:
        return  # no window yet: say nothing rather than 0
    oldest_evicting, oldest_moved = history.evicting[0], history.moved[0]
    free_bytes = {cls: (finite(v.get("free_chunks")) or 0.0) * (finite(v.get("chunk_size")) or 0.0)
                  for cls, v in slab_classes.items()}
    total_free = sum(free_bytes.values())
    # "Many" free chunks elsewhere: at least two pages' worth, and at least 5 % of the limit.
    plenty = max(2 * page_size, 0.05 * limit)
    calcified = 0
    for cls, count in sorted(evicting_now.items(), key=lambda kv: int(kv[0])):
        # A class absent from the oldest poll had no pages then: its counters started at 0.
        evicting = count - oldest_evicting.get(cls, 0.0) > 0
        hit = (evicting and free_pages == 0 and moved_now == oldest_moved
               and total_free - free_bytes.get(cls, 0.0) >= plenty)
        calcified += hit
        if target.slabs:
            out.add(CALCIFIED, int(hit), (("slab", cls),))
    out.add(CALCIFIED_CLASSES, calcified)


# --- connection -------------------------------------------------------------------------

class _Conn:
    """A guarded socket plus a line reader for the text protocol."""

    binary = False

    def __init__(self, sock: GuardedSocket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0  # read offset: consumed bytes are dropped in bulk, not line by line
        self.received_any = False  # False until the server sent a byte: see _binary_only

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self, sep: bytes = b"\r\n") -> str:
        """The next line; ``sep=b"\n"`` for metadump, whose lines end in LF (only END has CRLF)."""
        while True:
            end = self.buf.find(sep, self.pos)
            if end - self.pos > MAX_LINE:
                raise PollError(E.PROTOCOL, f"a reply line is longer than {MAX_LINE} bytes")
            if end >= 0:
                raw = self.buf[self.pos:end]
                self.pos = end + len(sep)
                return raw.decode("utf-8", "replace").removesuffix("\r")
            if len(self.buf) - self.pos > MAX_LINE:
                raise PollError(E.PROTOCOL, f"a reply line is longer than {MAX_LINE} bytes")
            del self.buf[:self.pos]
            self.pos = 0
            chunk = self.sock.recv(65536)
            if not chunk:
                raise PollError(E.RESET, "connection closed by the server mid-reply")
            self.received_any = True
            self.buf += chunk

    def replies(self, names: list[str]) -> dict[str, StatsReply]:
        """Send ``stats <section>`` for every name at once; {name: fields or error line}."""
        self.send(b"".join(_COMMANDS[name] for name in names))
        out: dict[str, StatsReply] = {}
        for name in names:
            reply = self.reply()
            out[name] = reply if isinstance(reply, str) else parse_stats(reply, name)
            if name == "stats" and isinstance(reply, str):
                break  # the poll fails; a -Y server answers nothing more before auth
        return out

    def reply(self) -> list[str] | str:
        """One stats reply: the STAT lines up to END, or the error line."""
        lines: list[str] = []
        while True:
            line = self.line()
            if line == "END":
                return lines
            if not lines and (line == "ERROR" or line.startswith(("CLIENT_ERROR", "SERVER_ERROR"))):
                return line
            if not line.startswith("STAT "):
                # Fail now: waiting for an END that a non-memcached peer never sends costs a timeout.
                raise PollError(E.PROTOCOL, f"unexpected line in a stats reply: {line[:80]!r}")
            lines.append(line)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _BinConn:
    """A guarded socket speaking the binary protocol (servers started with -S)."""

    binary = True

    def __init__(self, sock: GuardedSocket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.received_any = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    @staticmethod
    def request(opcode: int, key: bytes = b"", value: bytes = b"", opaque: int = 0) -> bytes:
        return BIN_HEADER.pack(BIN_REQUEST, opcode, len(key), 0, 0, 0, len(key) + len(value), opaque, 0) + key + value

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise PollError(E.RESET, "connection closed by the server mid-reply")
            self.received_any = True
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def response(self, opcode: int, opaque: int = 0) -> tuple[int, bytes, bytes]:
        """The next response, which must answer ``opcode``/``opaque``: (status, key, value)."""
        magic, got_op, keylen, extlen, _, status, bodylen, got_opaque, _ = BIN_HEADER.unpack(
            self._exact(BIN_HEADER.size))
        if magic != BIN_RESPONSE:
            raise PollError(E.PROTOCOL, f"not a memcached binary response (magic byte 0x{magic:02x})")
        if bodylen > MAX_BIN_BODY or keylen + extlen > bodylen:
            raise PollError(E.PROTOCOL, f"implausible binary response lengths (key {keylen}, extras {extlen}, "
                                        f"body {bodylen})")
        body = self._exact(bodylen)
        if got_op != opcode or got_opaque != opaque:
            raise PollError(E.PROTOCOL, f"binary response to opcode 0x{got_op:02x} (opaque {got_opaque}) where "
                                        f"0x{opcode:02x} ({opaque}) was due")
        return status, body[extlen:extlen + keylen], body[extlen + keylen:]

    def replies(self, names: list[str]) -> dict[str, StatsReply]:
        """One STAT request per section, all at once; the same shape as ``_Conn.replies``."""
        self.send(b"".join(self.request(OP_STAT, _STAT_KEYS[name], opaque=i) for i, name in enumerate(names)))
        out: dict[str, StatsReply] = {}
        for i, name in enumerate(names):
            fields: dict[str, str] = {}
            while True:
                status, key, value = self.response(OP_STAT, i)
                if status != ST_OK:
                    out[name] = _status_text(status, value)
                    if name == "stats":
                        return out  # the poll fails; an unauthenticated -S server has closed already
                    break
                if not key:  # the empty STAT response ends the section
                    out[name] = fields
                    break
                fields[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _status_text(status: int, value: bytes) -> str:
    """A binary error status for logs: 0x0020 reads "unauthenticated", like the text protocol's."""
    text = "".join(ch if ch.isprintable() else "?" for ch in value[:60].decode("utf-8", "replace"))
    if status == ST_AUTH_ERROR:
        return f"unauthenticated (binary status 0x{status:04x})"
    return f"binary status 0x{status:04x} {text}".strip()


class MemcachedSource(PersistentConnectionSource):
    """Polls one memcached target over a persistent connection."""

    store = MEMCACHED
    up_family = MEMCACHED_UP

    def __init__(self, target: MemcachedTarget) -> None:
        super().__init__(target)
        self.target: MemcachedTarget = target
        self.conn: _Conn | _BinConn | None = None
        self.sections = {name: Capability() for name in SECTIONS[1:]}
        self.history = _History.new()
        # What the last connection's probe found (for logging once); never trusted for the
        # next connection.
        self.auth_required: bool | None = None
        # The server answered only the binary protocol on an earlier connection: start there
        # (and fall back to detection when that fails, e.g. after a restart without -S).
        self.binary = False
        self.sasl_mechanisms: str | None = None
        self.prefix_scan: _PrefixScan | None = None
        self.prefix_due = 0.0  # monotonic time of the next metadump

    def _connect(self, password: str | None) -> None:
        t = self.target
        if self.binary:
            self.conn = self._open_binary(password)
            return
        self.conn = self._open()
        if t.credentials.username is None:
            return
        # Probe on every new connection before sending the secret: the server may have been
        # restarted with or without -Y since the last one, and on a server without -Y the
        # auth `set` would store the password as an ordinary key.
        self.conn.send(TEXT_PROBE)
        try:
            answer = self.conn.line()
        except PollError as exc:
            if not self._binary_only(exc):
                raise
            self.conn = self._open_binary(password)
            return
        if answer.startswith("VERSION"):
            if self.auth_required is not False:
                log.info("target %s: the server does not require authentication; credentials are not sent",
                         t.name)
            self.auth_required = False
            return
        if "unauthenticated" not in answer:
            raise PollError(E.PROTOCOL, f"unexpected reply to version: {answer[:60]!r}")
        self.auth_required = True
        self.close()  # the server drops unauthenticated connections
        self.conn = self._open()
        token = f"{t.credentials.username} {password or ''}".encode()
        self.conn.send(b"set auth 0 0 %d\r\n%s\r\n" % (len(token), token))
        answer = self.conn.line()
        if answer != "STORED":
            raise PollError(E.AUTH, f"authentication refused ({answer.split(' ', 1)[0][:40]})")

    def _binary_only(self, exc: PollError) -> bool:
        """After a text exchange failed: True if the server speaks only the binary protocol.

        Only a fresh connection that the server closed without a byte of reply qualifies: that
        is what a -S server does with a text command. A SASL_LIST_MECHS request on a new
        connection then tells a binary server (answered) from a broken one (the original
        failure stands). Sends no secret.
        """
        conn = self.conn
        if exc.reason != E.RESET or conn is None or conn.binary or conn.received_any:
            return False
        self.close()
        try:
            self.conn = _BinConn(self._socket_open())
            self.sasl_mechanisms = self._list_mechanisms(self.conn)
        except (PollError, OSError):
            return False
        finally:
            self.close()
        if not self.binary:
            log.info("target %s: the server speaks only the binary protocol (SASL mechanisms: %s); polling over it",
                     self.target.name, self.sasl_mechanisms or "none")
        self.binary = True
        return True

    @staticmethod
    def _list_mechanisms(conn: _BinConn) -> str | None:
        """The server's SASL mechanisms, or None if it does not do SASL (e.g. -B binary without -S)."""
        conn.send(conn.request(OP_SASL_LIST_MECHS))
        status, _, value = conn.response(OP_SASL_LIST_MECHS)
        if status != ST_OK:
            return None
        text = value[:200].decode("ascii", "replace")
        return " ".join(m for m in text.split() if m.isprintable()) or None

    def _open_binary(self, password: str | None) -> _BinConn:
        """A binary-protocol connection, authenticated with SASL PLAIN when the server asks."""
        t = self.target
        conn = _BinConn(self._socket_open())
        try:
            mechanisms = self.sasl_mechanisms = self._list_mechanisms(conn)
            if mechanisms is None:
                if t.credentials.username is not None and self.auth_required is not False:
                    log.info("target %s: the server does not require authentication; credentials are not sent",
                             t.name)
                self.auth_required = False
                return conn
            self.auth_required = True
            if t.credentials.username is None:
                raise PollError(E.SASL_REQUIRED, "this server requires SASL over the binary protocol "
                                                 f"(mechanisms: {mechanisms[:60]}); set username and "
                                                 "password_env or password_file")
            if SASL_MECHANISM not in mechanisms.split():
                raise PollError(E.SASL_REQUIRED, f"the server offers SASL mechanisms {mechanisms[:60]}; "
                                                 f"only {SASL_MECHANISM} is supported")
            # PLAIN (RFC 4616): authzid NUL authcid NUL password; the authzid is left empty.
            token = b"\0" + t.credentials.username.encode() + b"\0" + (password or "").encode()
            conn.send(conn.request(OP_SASL_AUTH, SASL_MECHANISM.encode(), token))
            status, _, _ = conn.response(OP_SASL_AUTH)
            if status != ST_OK:
                raise PollError(E.AUTH, f"SASL {SASL_MECHANISM} authentication refused (status 0x{status:04x})")
            return conn
        except BaseException as exc:
            conn.close()
            if not isinstance(exc, PollError) or exc.reason not in (E.AUTH, E.SASL_REQUIRED):
                self.binary = False  # not what it was (restarted without -S?): detect again next time
            raise

    def _scan_prefixes(self, conn: _Conn | _BinConn) -> str | None:
        """Run ``lru_crawler metadump all`` on the poll's connection, within the view's own time
        and byte budget; returns why not, or None. A dump cut by its budget still counts (what
        was read is a sample of the keys) and costs the connection: the rest of the dump is
        unread, so it is closed and the next poll reconnects."""
        view = self.target.prefixes
        assert view is not None
        if isinstance(conn, _BinConn):
            return "lru_crawler metadump exists only in the text protocol, which this (-S) server refuses"
        start = time.monotonic()
        guard = self.guard
        saved = guard.deadline, guard.max_bytes
        # Leave the poll a little time to map and return, whatever max_time says.
        guard.deadline = min(saved[0] - 0.05 * self.target.timeout, start + view.max_time)
        guard.max_bytes = guard.received + view.max_bytes
        tally = PrefixTally(view.delimiter)
        complete = False
        try:
            conn.send(METADUMP)
            while True:
                line = conn.line(b"\n")
                if line == "END":
                    complete = True
                    break
                if not line.startswith("key="):
                    if not tally.bytes and not tally.malformed:  # the first line: an error reply
                        return f"metadump refused: {line[:80]!r}"
                    tally.malformed += 1
                    continue
                tally.add_line(line)
        except (OSError, PollError) as exc:
            tripped = guard.tripped
            guard.tripped = None  # the dump's budget, not the poll's: the poll still succeeds
            self.close()
            if tripped is None and not isinstance(exc, TimeoutError):
                return f"metadump failed: {exc}"
        finally:
            guard.deadline, guard.max_bytes = saved
        if not complete and not tally.counted:
            return "no time left for the dump in this poll"  # keep the last view rather than an empty one
        self.prefix_scan = _PrefixScan(tally.top(view.top), complete, time.time(), time.monotonic() - start)
        if not complete:
            log.info("target %s: metadump stopped at its budget after %.1f s (%d items); the prefix view is partial",
                     self.target.name, time.monotonic() - start, tally.counted)
        return None

    def _socket_open(self) -> GuardedSocket:
        t = self.target
        context = poll_tls_context(t.tls) if t.tls is not None else None
        sock = open_stream(self.guard, t.path or (t.host, t.port), context, t.tls.server_name if t.tls else None)
        self.connections_opened += 1
        return sock

    def _open(self) -> _Conn:
        return _Conn(self._socket_open())

    def _poll_once(self) -> Reading:
        conn = self.conn
        assert conn is not None
        now = time.monotonic()
        wanted = ["stats"] + [name for name, cap in self.sections.items()
                              if cap.available is not False or now >= cap.reprobe_at]
        try:
            replies = conn.replies(wanted)
        except PollError as exc:
            if not self._binary_only(exc):
                raise
            # No credentials configured (those are probed in _connect): poll over binary, or say
            # why not (sasl_required).
            conn = self.conn = self._open_binary(None)
            replies = conn.replies(wanted)

        parsed: dict[str, dict[str, str]] = {}
        failed: list[str] = []
        for name in wanted:
            if name not in replies:
                break  # not read: stats failed (below)
            reply = replies[name]
            if not isinstance(reply, str):
                parsed[name] = reply
                if name != "stats":
                    self.sections[name].available = True
                continue
            if name == "stats":
                reason = E.AUTH if "unauthenticated" in reply.lower() else E.PROTOCOL
                raise PollError(reason, f"stats refused: {reply[:80]}")
            failed.append(name)
            cap = self.sections[name]
            if cap.available is not False:
                log.info("target %s: 'stats %s' is unavailable (%s); skipping it, re-checking hourly",
                         self.target.name, name, reply[:80])
            cap.available, cap.reprobe_at = False, now + SECTION_REPROBE_SECONDS
        if "version" not in parsed["stats"] or "curr_items" not in parsed["stats"]:
            raise PollError(E.PROTOCOL, "stats reply lacks version/curr_items")
        self.guard.remaining()  # past the deadline (a huge reply on a busy CPU): stop, do not map it too
        sections = Sections(parsed["stats"], parsed.get("settings"), parsed.get("slabs"), parsed.get("items"))
        reading = map_sections(sections, self.target, self.history)
        if self.target.prefixes is not None:
            if now >= self.prefix_due:
                self.prefix_due = now + self.target.prefixes.interval
                error = self._scan_prefixes(conn)
                if error is not None:
                    failed.append("prefixes")
                    log.info("target %s: per-prefix view unavailable this time (%s); next try in %s s",
                             self.target.name, error, self.target.prefixes.interval)
            if self.prefix_scan is not None:
                self.prefix_scan.add_to(reading.samples)
        reading.section_errors = failed
        reading.details["capabilities"] = {k: v.available for k, v in self.sections.items()}
        reading.details["connections_opened"] = self.connections_opened
        reading.details["protocol"] = "binary" if conn.binary else "text"
        if conn.binary:
            reading.details["sasl_mechanisms"] = self.sasl_mechanisms
        return reading
