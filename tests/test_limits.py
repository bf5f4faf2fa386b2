"""What one poll may produce: the per-target series cap, the label-value length cap, and values
no real store reports (negative counters, byte counts above 1 EiB), for every source.

The replies here are valid but absurd (100k command names, 20,000 slab classes, 50,000 cache
names): parsed by the real mapping code, never mocked. The hostile *servers* that send them
over a socket, with a healthy target next to them, are in the fault labs (test_faults.py,
test_memcached_faults.py, test_app_faults.py).
"""

from __future__ import annotations

from pathlib import Path

from exporter import catalog
from exporter.snapshot import LABEL_TOO_LONG, MAX_SERIES, Samples, SeriesLimits
from exporter.sources.app import map_body
from exporter.sources.memcached import Sections, _History, map_sections
from exporter.sources.redis import map_info, parse_info
from exporter.targets import DEFAULT_MAX_SERIES, AppTarget, MemcachedTarget, RedisTarget

FIXTURES = Path(__file__).parent / "fixtures"
REDIS_INFO = (FIXTURES / "info_redis_7.0.txt").read_text()
UNIFIED_REDIS = ("cache_up", "cache_info", "cache_memory_used_bytes", "cache_memory_limit_bytes",
                 "cache_hits_total", "cache_items")


def redis_target(**kw: object) -> RedisTarget:
    return RedisTarget(name="r", type="redis", interval=15, timeout=5, **kw)  # type: ignore[arg-type]


def families(samples: Samples) -> set[str]:
    return {s.family for s in samples}


# --- Samples -------------------------------------------------------------------------------

def test_cap_keeps_essential_families_and_counts_the_rest():
    out = Samples(SeriesLimits(max_series=3, max_label_value_length=10))
    for i in range(5):
        out.add("redis_commands_total", 1, (("cmd", f"c{i}"),))
    out.add("cache_memory_used_bytes", 10, (("store", "redis"),))
    out.add("redis_up", 1)
    out.add("cache_hits_total", 1, (("store", "app"), ("cache", "users")))  # names data: not essential
    assert len(out) == 5
    assert families(out) == {"redis_commands_total", "cache_memory_used_bytes", "redis_up"}
    assert out.dropped == {("redis_commands_total", MAX_SERIES): 2, ("cache_hits_total", MAX_SERIES): 1}


def test_long_label_values_drop_the_series_not_truncate_it():
    """Truncating could make two series identical (an invalid /metrics); dropping cannot."""
    out = Samples(SeriesLimits(max_series=100, max_label_value_length=8))
    out.add("redis_commands_total", 1, (("cmd", "x" * 9),))
    out.add("redis_commands_total", 1, (("cmd", "x" * 8),))
    assert [s.labels for s in out] == [(("cmd", "x" * 8),)]
    assert out.dropped == {("redis_commands_total", LABEL_TOO_LONG): 1}


def test_implausible_values_are_refused_and_counted():
    out = Samples()
    out.add("cache_hits_total", -1, (("store", "redis"),))  # a counter below zero
    out.add("redis_memory_used_bytes", 1e308)  # no host has that
    out.add("cache_memory_headroom_bytes", -5e6, (("store", "redis"),))  # a negative gauge is fine
    out.add("redis_mem_fragmentation_bytes", -1e6)
    out.add("redis_memory_used_bytes", 2.0**59)
    assert out.implausible == 2
    assert [s.family for s in out] == ["cache_memory_headroom_bytes", "redis_mem_fragmentation_bytes",
                                       "redis_memory_used_bytes"]


# --- Redis -----------------------------------------------------------------------------------

def with_fields(info: str, **values: str) -> str:
    """``info`` with the named fields' values replaced (each must be there)."""
    lines = info.splitlines()
    for name, value in values.items():
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
        lines[index] = f"{name}:{value}"
    return "\n".join(lines)


def huge_info(commands: int = 100_000, dbs: int = 10_000, name_length: int = 0) -> str:
    lines = [REDIS_INFO, "# Commandstats"]
    lines += [f"cmdstat_c{i}{'x' * name_length}:calls=1,usec=2,usec_per_call=2.0,rejected_calls=0,failed_calls=0"
              for i in range(commands)]
    lines += ["# Keyspace"] + [f"db{i}:keys=1,expires=0,avg_ttl=0" for i in range(dbs)]
    return "\r\n".join(lines)


def test_redis_huge_info_is_capped_and_the_unified_families_survive():
    """One valid INFO with 100k command names and 10k databases: 330,050 series before."""
    r = map_info(parse_info(huge_info()), redis_target(), {}, 2e9)
    assert DEFAULT_MAX_SERIES <= len(r.samples) < DEFAULT_MAX_SERIES + 100
    names = families(r.samples)
    for family in UNIFIED_REDIS[1:]:
        assert family in names, family
    dropped = r.samples.dropped
    assert dropped[("redis_commands_total", MAX_SERIES)] > 90_000
    assert dropped[("redis_db_keys", MAX_SERIES)] == 10_000  # the keyspace comes after the commands
    assert {reason for _, reason in dropped} == {MAX_SERIES}


def test_redis_series_cap_is_per_target():
    r = map_info(parse_info(huge_info(commands=500, dbs=0)), redis_target(max_series=300), {}, 2e9)
    assert 300 <= len(r.samples) < 400
    r = map_info(parse_info(huge_info(commands=500, dbs=0)), redis_target(), {}, 2e9)
    assert sum(1 for s in r.samples if s.family == "redis_commands_total") >= 500
    assert not r.samples.dropped


def test_redis_command_name_too_long_is_dropped():
    """The 833 KB line came from one command name; now it costs its series, counted."""
    info = huge_info(commands=2, dbs=0, name_length=5000)
    r = map_info(parse_info(info), redis_target(), {}, 2e9)
    assert not any(s.family == "redis_commands_total" and s.labels[0][1].startswith("c0x") for s in r.samples)
    assert r.samples.dropped[("redis_commands_total", LABEL_TOO_LONG)] == 2


def test_redis_negative_counters_and_absurd_memory_are_malformed_not_exported():
    info = with_fields(REDIS_INFO, keyspace_hits="-1", used_memory="1e308", maxmemory="1e308")
    r = map_info(parse_info(info), redis_target(), {}, 2e9)
    assert r.samples.value("cache_hits_total", (("store", "redis"),)) is None
    assert r.samples.value("redis_keyspace_hits_total") is None
    # 1e308 - 1e308 used to give "0 bytes used" against a 1e308 limit: now absent, not zero.
    assert r.samples.value("cache_memory_used_bytes", (("store", "redis"),)) is None
    assert r.samples.value("cache_memory_utilization_ratio", (("store", "redis"),)) is None
    assert r.memory.used is None
    assert r.memory.limit_source == "system"  # the absurd maxmemory is not a limit
    assert r.samples.implausible >= 4  # keyspace_hits twice, used_memory, maxmemory


# --- memcached --------------------------------------------------------------------------------

def huge_memcached(classes: int = 20_000) -> Sections:
    stats = {"version": "1.6.21", "curr_items": "5", "limit_maxbytes": str(64 << 20), "get_hits": "1",
             "evictions": "0", "total_items": "5"}
    slabs = {"active_slabs": str(classes), "total_malloced": str(4 << 20)}
    items: dict[str, str] = {}
    for c in range(1, classes + 1):
        for k in ("chunk_size", "chunks_per_page", "total_pages", "total_chunks", "used_chunks", "free_chunks",
                  "get_hits", "cmd_set", "delete_hits", "cas_hits", "cas_badval"):
            slabs[f"{c}:{k}"] = "1"
        for k in ("number", "age", "evicted", "outofmemory", "reclaimed", "hits_to_hot"):
            items[f"items:{c}:{k}"] = "1"
    return Sections(stats, {"evictions": "on"}, slabs, items)


def test_memcached_twenty_thousand_slab_classes_are_capped():
    """60,034 series from 20,000 slab classes before."""
    t = MemcachedTarget(name="m", type="memcached", interval=15, timeout=5)
    r = map_sections(huge_memcached(), t, _History.new())
    assert DEFAULT_MAX_SERIES <= len(r.samples) < DEFAULT_MAX_SERIES + 100
    names = families(r.samples)
    for family in ("cache_memory_used_bytes", "cache_memory_limit_bytes", "cache_items", "cache_evicts_when_full"):
        assert family in names, family
    assert sum(n for (family, _), n in r.samples.dropped.items() if family.startswith("memcached_slab")) > 10_000


def test_memcached_absurd_malloced_is_not_used():
    s = huge_memcached(classes=2)
    s.slabs["total_malloced"] = "1e300"  # type: ignore[index]
    r = map_sections(s, MemcachedTarget(name="m", type="memcached", interval=15, timeout=5), _History.new())
    assert r.memory.used is None
    assert r.samples.value("cache_memory_used_bytes", (("store", "memcached"),)) is None
    assert r.samples.implausible >= 1


# --- app ----------------------------------------------------------------------------------------

def app_target(**kw: object) -> AppTarget:
    return AppTarget(name="a", type="app", interval=15, timeout=5, runtime="process",
                     memory_limit=2**30, **kw)  # type: ignore[arg-type]


def test_app_cache_names_are_capped():
    lines = ["# TYPE process_resident_memory_bytes gauge", "process_resident_memory_bytes 1e8",
             "# TYPE cache_size gauge"]
    lines += [f'cache_size{{cache="c{i}"}} 1' for i in range(15_000)]
    doc = map_body("\n".join(lines) + "\n", app_target(max_series=1000))
    items = [s for s in doc.samples if s.family == catalog.CACHE_ITEMS]
    assert len(items) <= 1000
    assert doc.samples.dropped[(catalog.CACHE_ITEMS, MAX_SERIES)] > 0


def test_app_absurd_heap_is_malformed():
    body = "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 1e300\n"
    from exporter.errors import PollError

    try:
        map_body(body, app_target())
    except PollError as err:
        assert err.reason == "protocol"
    else:
        raise AssertionError("an absurd heap figure must not be taken as the heap")
