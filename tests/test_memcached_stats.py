"""Memcached reply parsing and mapping, against replies captured from memcached 1.6.18."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import catalog
from exporter.errors import PollError
from exporter.sources.memcached import Sections, _History, map_sections, parse_stats, split_classes
from exporter.targets import MemcachedTarget

FIXTURES = Path(__file__).parent / "fixtures" / "memcached_1.6.18"


def load(name: str) -> dict[str, str]:
    lines = [ln for ln in (FIXTURES / f"{name}.txt").read_text().splitlines() if ln and ln != "END"]
    return parse_stats(lines, name)


def target(**kw) -> MemcachedTarget:
    return MemcachedTarget(name="m", type="memcached", interval=15, timeout=5, **kw)


def sections(**override) -> Sections:
    base = dict(stats=load("stats"), settings=load("stats_settings"), slabs=load("stats_slabs"),
                items=load("stats_items"))
    base.update(override)
    return Sections(**base)


def test_captured_replies_map_to_expected_values():
    s = sections()
    r = map_sections(s, target(), _History.new())
    st_ = s.stats
    v = r.samples.value
    assert v("memcached_current_items") == 220 == v("cache_items", (("store", "memcached"),))
    assert v("memcached_limit_bytes") == 8 * 2**20
    assert v("memcached_malloced_bytes") == 2 * 2**20 == r.memory.used
    assert v("memcached_free_pages") == 6  # 8 pages allowed, 2 handed out, empty global pool
    assert v("memcached_commands_total", (("command", "get"), ("status", "hit"))) == float(st_["get_hits"])
    cas = sum(float(st_[k]) for k in ("cas_misses", "cas_hits", "cas_badval"))
    assert v("memcached_commands_total", (("command", "set"), ("status", "hit"))) == float(st_["cmd_set"]) - cas
    assert v("memcached_slab_current_items", (("slab", "4"),)) == 200
    assert v("memcached_slab_lru_hits_total", (("slab", "4"), ("lru", "cold"))) == 30
    assert v("memcached_slab_chunk_size_bytes", (("slab", "19"),)) == 5680
    assert v("memcached_process_user_cpu_seconds_total") == float(st_["rusage_user"])
    assert r.memory.evicts_when_full is True and r.memory.limit_source == "limit_maxbytes"
    assert r.malformed_fields == 0
    for sample in r.samples:
        assert math.isfinite(sample.value)
        spec = catalog.get(sample.family)
        assert {k for k, _ in sample.labels} == set(spec.labels), sample


def test_types_memcached_exporter_got_wrong_are_gauges():
    for name in ("memcached_slab_items_evicted_time_seconds", "memcached_slab_mem_requested_bytes",
                 "memcached_extstore_bytes_used", "memcached_uptime_seconds"):
        assert catalog.get(name).type == "gauge"
    for name in ("memcached_slab_items_moves_to_cold_total", "memcached_items_evicted_total"):
        assert catalog.get(name).type == "counter"


def test_slabs_false_drops_per_class_series_only():
    r = map_sections(sections(), target(slabs=False), _History.new())
    assert not [s for s in r.samples if "slab" in dict(s.labels)]
    families = {s.family for s in r.samples}
    assert "memcached_malloced_bytes" in families and "memcached_commands_total" in families
    assert "memcached_calcified_slab_classes" not in families  # needs two polls of history


def test_optional_sections_missing():
    r = map_sections(sections(slabs=None, items=None, settings=None), target(), _History.new())
    assert r.memory.used is None  # total_malloced comes from stats slabs
    assert r.samples.value("cache_memory_used_bytes") is None
    assert r.samples.value("cache_memory_limit_bytes", (("store", "memcached"),)) == 8 * 2**20
    assert r.samples.value("cache_evicts_when_full") is None  # unknown without stats settings
    assert r.samples.value("memcached_current_items") == 220


def test_old_server_without_store_no_memory_sums_outofmemory():
    stats = {k: v for k, v in load("stats").items() if k != "store_no_memory"}
    items = dict(load("stats_items"), **{"items:4:outofmemory": "3", "items:19:outofmemory": "2"})
    r = map_sections(sections(stats=stats, items=items), target(), _History.new())
    assert r.samples.value("cache_write_rejections_total", (("store", "memcached"),)) == 5


def test_binary_protocol_refusals_counted_from_outofmemory():
    """memcached counts store_no_memory for text-protocol sets only: the refused sets of a binary
    (SASL) client show only per class, and must still reach cache_write_rejections_total."""
    stats = dict(load("stats"), store_no_memory="1")
    items = dict(load("stats_items"), **{"items:4:outofmemory": "3", "items:19:outofmemory": "2"})
    r = map_sections(sections(stats=stats, items=items), target(), _History.new())
    assert r.samples.value("cache_write_rejections_total", (("store", "memcached"),)) == 5
    assert r.samples.value("memcached_item_no_memory_total") == 1


def test_extstore_only_when_present():
    r = map_sections(sections(), target(), _History.new())
    assert r.samples.value("memcached_extstore_bytes_used") is None
    stats = dict(load("stats"), extstore_limit_maxbytes="1073741824", extstore_bytes_used="12345")
    r = map_sections(sections(stats=stats), target(), _History.new())
    assert r.samples.value("memcached_extstore_bytes_used") == 12345
    assert r.samples.value("memcached_extstore_bytes_limit") == 2**30


def test_evictions_off_means_writes_fail():
    settings_ = dict(load("stats_settings"), evictions="off")
    r = map_sections(sections(settings=settings_), target(), _History.new())
    assert r.memory.evicts_when_full is False and r.memory.eviction_policy == "noeviction"
    assert r.samples.value("cache_evicts_when_full", (("store", "memcached"),)) == 0


def test_zero_limit_falls_back_to_memory_limit():
    stats = dict(load("stats"), limit_maxbytes="0")
    r = map_sections(sections(stats=stats), target(memory_limit=2**30), _History.new())
    assert r.memory.limit == 2**30 and r.memory.limit_source == "config"


def _calcification_round(history, evicted_small, evicted_large, free_small_chunks, moved="0", pool="0"):
    stats = dict(load("stats"), slabs_moved=moved, slab_global_page_pool=pool, limit_maxbytes=str(8 * 2**20))
    slabs = {"4:chunk_size": "192", "4:total_pages": "8", "4:free_chunks": str(free_small_chunks),
             "25:chunk_size": "21696", "25:total_pages": "1", "25:free_chunks": "0",
             "active_slabs": "2", "total_malloced": str(9 * 2**20)}
    items = {"items:4:number": "10", "items:4:evicted": str(evicted_small), "items:4:outofmemory": "0",
             "items:25:number": "48", "items:25:evicted": str(evicted_large), "items:25:outofmemory": "0"}
    r = map_sections(sections(stats=stats, slabs=slabs, items=items), target(), history)
    return r.samples.value("memcached_calcified_slab_classes"), r.samples.value(
        "memcached_slab_calcified", (("slab", "25"),))


def test_calcification_needs_a_window_then_fires_and_clears():
    h = _History.new()
    assert _calcification_round(h, 100, 0, 40000) == (None, None)  # first poll: no window yet
    assert _calcification_round(h, 100, 50, 40000) == (1, 1)  # large class evicts, small has free chunks
    for _ in range(5):
        _calcification_round(h, 100, 50, 40000)  # evictions stop
    assert _calcification_round(h, 100, 50, 40000) == (0, 0)


@pytest.mark.parametrize("free_small,moved,pool", [
    (10, "0", "0"),  # others hold almost nothing free: plain memory pressure, not calcification
    (40000, "1", "0"),  # pages are moving: the rebalancer is working
    (40000, "0", "2"),  # free pages exist in the global pool
])
def test_calcification_look_alikes_stay_quiet(free_small, moved, pool):
    h = _History.new()
    _calcification_round(h, 100, 0, free_small)
    assert _calcification_round(h, 100, 50, free_small, moved=moved, pool=pool)[0] == 0


@pytest.mark.parametrize("line", ["hello", "STAT", "VALUE x 0 1", "ERROR"])
def test_non_stat_lines_are_protocol_errors(line):
    with pytest.raises(PollError) as err:
        parse_stats(["STAT version 1.6.18", line], "stats")
    assert err.value.reason == "protocol"


def test_split_classes():
    per, flat = split_classes({"items:4:number": "1", "4:chunk_size": "96", "total_malloced": "7"}, "items:")
    assert per == {"4": {"number": "1"}} and flat == {"4:chunk_size": "96", "total_malloced": "7"}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["curr_items", "get_hits", "cmd_set", "cas_hits", "evictions",
                                        "limit_maxbytes", "items:3:number", "3:free_chunks", "3:chunk_size",
                                        "total_malloced", "evictions", "slabs_moved", "rusage_user"]),
                       st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=20)))
def test_arbitrary_values_never_crash(values):
    stats = dict(load("stats"), **values)
    r = map_sections(sections(stats=stats, slabs=dict(load("stats_slabs"), **values),
                              items=dict(load("stats_items"), **values)), target(), _History.new())
    assert all(math.isfinite(s.value) for s in r.samples)


@pytest.mark.parametrize("payload", [
    b"STAT huge " + b"x" * 9000 + b"\r\nEND\r\n",  # an over-long line that arrives with its CRLF
    b"STAT huge " + b"x" * 9000,  # ... or without one
])
def test_over_long_lines_are_refused(payload):
    import socket
    import time

    from exporter.netio import Guard, GuardedSocket
    from exporter.sources.memcached import _Conn

    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(payload)
        guard = Guard(1 << 20)
        guard.arm(time.monotonic() + 2)
        conn = _Conn(GuardedSocket(ours, guard))
        with pytest.raises(PollError) as err:
            conn.reply()
        assert err.value.reason == "protocol" and "longer than" in str(err.value)


def test_prefix_tally_bounds_cardinality_and_folds_the_rest():
    from exporter.sources import prefixes as P

    tally = P.PrefixTally(":")
    tally.add_line("key=techdocs%3Apage%3A1 exp=-1 la=1 cas=1 fetch=no cls=1 size=1000")
    tally.add_line("key=catalog%3Ax exp=-1 la=1 cas=2 fetch=no cls=1 size=500")
    tally.add_line("key=nodelimiter exp=-1 la=1 cas=3 fetch=no cls=1 size=10")
    tally.add_line("key=bad%0Aname%3Ax size=7")  # a control character in the prefix: made label-safe
    tally.add_line("key=x:y size=lots")  # malformed: counted, not summed
    tally.add_line("no key here")
    for i in range(P.MAX_TRACKED_PREFIXES + 50):  # an unbounded keyspace of prefixes
        tally.add(f"user{i}:session", 1)
    assert tally.malformed == 2
    assert len(tally.bytes) == P.MAX_TRACKED_PREFIXES + 1  # the rest went to __other__ while summing
    top = tally.top(2)
    assert [p for p, _, _ in top] == ["techdocs", "catalog", "__other__"]
    assert top[-1][1] == sum(tally.bytes.values()) - 1500 and top[-1][2] == tally.counted - 2
    assert "bad?name" in tally.bytes and P.NO_PREFIX in tally.bytes
