"""Sharding across replicas (exporter/sharding.py): the owner hash, the flags, and three real
exporter processes that split one config between them."""

from __future__ import annotations

import signal
from collections import Counter

import pytest
from conftest import fast_global, memcached_target, redis_target, wait_until

from exporter.sharding import Shard, from_flags, jump_hash, ordinal_from_pod_name, owner

NAMES = [f"redis-{i}.cache.svc:6379" for i in range(10_000)]


def test_owner_spreads_names_evenly():
    for total in (3, 4, 7):
        counts = Counter(owner(name, total) for name in NAMES)
        assert set(counts) == set(range(total))
        even = len(NAMES) / total
        worst = max(abs(n - even) / even for n in counts.values())
        assert worst < 0.05, (total, counts)


def test_growing_from_3_to_4_shards_moves_a_quarter_all_to_the_new_one():
    moved = [name for name in NAMES if owner(name, 3) != owner(name, 4)]
    assert 0.22 < len(moved) / len(NAMES) < 0.28, len(moved)
    assert {owner(name, 4) for name in moved} == {3}  # nothing shuffles between the old replicas


def test_owner_is_pinned():
    """The owner must not change between versions: a rolling upgrade would poll some targets
    twice and others not at all. These values are the hash's, written down once."""
    assert [owner(f"t{i}", 3) for i in range(12)] == PINNED
    assert jump_hash(0, 1) == 0 and jump_hash(2**64 - 1, 1) == 0
    assert owner("café \udcff", 5) == owner("café \udcff", 5)  # undecodable bytes from a file still hash


PINNED = [2, 2, 2, 1, 0, 1, 0, 1, 0, 1, 1, 1]


def test_shard_owns_exactly_its_targets():
    shards = [Shard(i, 3) for i in range(3)]
    for name in NAMES[:300]:
        assert sum(s.owns(name) for s in shards) == 1
    assert all(Shard().owns(name) for name in NAMES[:50])


@pytest.mark.parametrize("shard, total, env, expected", [
    (None, None, {}, Shard(0, 1)),
    ("2", 3, {}, Shard(2, 3)),
    ("0", 1, {}, Shard(0, 1)),
    (None, 3, {"POD_NAME": "cache-exporter-2"}, Shard(2, 3)),
    ("auto", 4, {"POD_NAME": "my-release-cache-exporter-0"}, Shard(0, 4)),
    (None, 1, {}, Shard(0, 1)),  # --total-shards 1: not sharded, no pod name needed
])
def test_flags(shard, total, env, expected):
    assert from_flags(shard, total, env, hostname="not-a-pod") == expected


def test_auto_falls_back_to_the_hostname():
    assert from_flags("auto", 3, {}, hostname="cache-exporter-1") == Shard(1, 3)
    assert from_flags("auto", 3, {"POD_NAME": ""}, hostname="cache-exporter-1") == Shard(1, 3)


@pytest.mark.parametrize("shard, total, env, message", [
    ("1", None, {}, "--shard needs --total-shards"),
    ("auto", None, {}, "--shard needs --total-shards"),
    ("3", 3, {}, "--shard must be in 0..2 for --total-shards 3, not 3"),
    ("-1", 3, {}, "not -1"),
    ("one", 3, {}, "--shard must be a number (0..M-1) or 'auto', not 'one'"),
    ("0", 0, {}, "--total-shards must be at least 1, not 0"),
    (None, 3, {"POD_NAME": "cache-exporter"}, "'cache-exporter' does not end in -<ordinal>"),
    (None, 3, {"POD_NAME": "cache-exporter-3"}, "gives ordinal 3, not below --total-shards 3"),
])
def test_flag_errors(shard, total, env, message):
    with pytest.raises(ValueError) as err:
        from_flags(shard, total, env, hostname="host")
    assert message in str(err.value)


def test_ordinal_is_the_trailing_number_only():
    assert ordinal_from_pod_name("redis-7-exporter-12") == 12
    with pytest.raises(ValueError):
        ordinal_from_pod_name("exporter-1a")


# --- three real replicas -------------------------------------------------------------------------

def _config(redis, memcached, n_redis: int, n_memcached: int) -> dict:
    targets = [redis_target(f"redis-{i}", redis) for i in range(n_redis)]
    targets += [memcached_target(f"memcached-{i}", memcached) for i in range(n_memcached)]
    return {"global": fast_global(), "targets": targets}


def _target_labels(ep) -> set[str]:
    return {labels["target"] for _, labels, _ in ep.metrics().samples if "target" in labels}


def test_three_replicas_cover_every_target_exactly_once(redis_server, memcached_factory, exporter_factory):
    config = _config(redis_server, memcached_factory(), 9, 3)
    everything = {t["name"] for t in config["targets"]}
    whole = exporter_factory(config)
    shards = [exporter_factory(config, args=["--shard", str(i), "--total-shards", "3"]) for i in range(3)]

    assert {t["name"] for t in whole.targets()} == everything == _target_labels(whole)
    owned = [{t["name"] for t in ep.targets()} for ep in shards]
    assert sorted(n for names in owned for n in names) == sorted(everything)  # each exactly once
    for i, (ep, names) in enumerate(zip(shards, owned, strict=True)):
        assert names == {n for n in everything if owner(n, 3) == i}
        assert _target_labels(ep) == names  # /metrics carries no other shard's target
        m = ep.metrics()
        assert m.value("cache_exporter_shard_info", index=str(i), total="3") == 1
        assert m.value("cache_exporter_total_shards") == 3
        assert m.value("cache_exporter_targets_owned") == len(names)
        assert m.value("cache_exporter_targets", type="redis") == 9  # the config's, before the shard
        status = ep.get("/")[1].decode()
        shown = {n for n in everything if f'class="name">{n}<br>' in status}
        assert shown == names  # the status page too
    assert set().union(*(_target_labels(ep) for ep in shards)) == _target_labels(whole)
    assert whole.metrics().value("cache_exporter_shard_info", index="0", total="1") == 1

    # A reload goes through the same filter: the new targets land on their owners only.
    bigger = _config(redis_server, memcached_factory(), 12, 4)
    for ep in shards:
        ep.write_config(bigger)
        ep.signal(signal.SIGHUP)
    everything = {t["name"] for t in bigger["targets"]}

    def covered() -> bool:
        owned = [_target_labels(ep) for ep in shards]
        return sum(map(len, owned)) == len(everything) and set().union(*owned) == everything
    wait_until(covered, timeout=20, message="the reloaded targets spread over the three replicas")
    for i, ep in enumerate(shards):
        assert {t["name"] for t in ep.targets()} == {n for n in everything if owner(n, 3) == i}


def test_three_replicas_split_discovered_targets_before_and_after_the_file_changes(
        redis_factory, memcached_factory, exporter_factory, tmp_path):
    """file_sd templates on three sharded replicas: each discovered target is polled by exactly one,
    and after the files change (4 added, 2 removed) the union is exactly the new list. One
    redis-server and one memcached listen on several loopback addresses, so every discovered
    address (and so every target name) is distinct and real."""
    import json

    redis = redis_factory(args=["--bind", *(f"127.0.0.{i}" for i in range(1, 11))])
    memcached = memcached_factory(args=["-l", ",".join(f"127.0.0.{i}" for i in range(2, 7))])
    sd = tmp_path / "sd"
    sd.mkdir()

    def write(redis_hosts: range, memcached_hosts: range) -> set[str]:
        for name, hosts, port in (("redis", redis_hosts, redis.port), ("memcached", memcached_hosts, memcached.port)):
            (sd / f"{name}.json").write_text(json.dumps([{"targets": [f"127.0.0.{h}:{port}" for h in hosts],
                                                          "labels": {"fleet": name}}]))
        return ({f"r/127.0.0.{h}:{redis.port}" for h in redis_hosts}
                | {f"m/127.0.0.{h}:{memcached.port}" for h in memcached_hosts})

    everything = write(range(1, 9), range(1, 5))  # 8 + 4 = 12
    config = {"global": fast_global(), "targets": [
        {"name": "r", "type": "redis", "discover": "file_sd", "files": [str(sd / "redis.json")],
         "refresh_interval": "0.2s"},
        {"name": "m", "type": "memcached", "discover": "file_sd", "files": [str(sd / "memcached.json")],
         "refresh_interval": "0.2s"}]}
    shards = [exporter_factory(config, args=["--shard", str(i), "--total-shards", "3"]) for i in range(3)]

    def split_exactly(expected: set[str]) -> bool:
        for i, ep in enumerate(shards):
            mine = {n for n in expected if owner(n, 3) == i}
            if {t["name"] for t in ep.targets()} != mine or _target_labels(ep) != mine:
                return False
            m = ep.metrics()  # polled, and up: the discovered address is a real server
            if any(m.value("cache_up", target=n) != 1 for n in mine):
                return False
        return True

    wait_until(lambda: split_exactly(everything), timeout=15, message="the discovered targets split over three")
    owned = [_target_labels(ep) for ep in shards]
    assert sorted(n for names in owned for n in names) == sorted(everything)  # each exactly once
    assert all(ep.metrics().value("cache_exporter_discovery_targets", template="r", kind="file_sd") == 8
               for ep in shards)  # every replica discovers the whole list, and keeps its share

    changed = write(range(2, 11), range(2, 7))  # redis .1 gone, .9/.10 new; memcached .1 gone, .5/.6 new
    assert len(changed - everything) == 4 and len(everything - changed) == 2  # the 4 added, 2 removed
    wait_until(lambda: split_exactly(changed), timeout=15, message="the changed list split over three")
    owned = [_target_labels(ep) for ep in shards]
    assert sorted(n for names in owned for n in names) == sorted(changed)


# --- dashboards across shards --------------------------------------------------------------------

def _dashboard_exprs() -> list[str]:
    import json
    from pathlib import Path

    def walk(node: object) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "expr" and isinstance(v, str)] + \
                [e for v in node.values() for e in walk(v)]
        return [e for v in node for e in walk(v)] if isinstance(node, list) else []
    root = Path(__file__).resolve().parent.parent / "dashboards"
    return [e for path in sorted(root.glob("*.json")) for e in walk(json.loads(path.read_text()))]


def test_dashboards_never_tell_replicas_apart():
    """Every per-target series comes from exactly one shard, and which one (its `instance`) changes
    when the shard count does: a query that groups by, matches on or selects `instance` would split
    a target's graph in two, or lose it."""
    import re

    exprs = _dashboard_exprs()
    assert len(exprs) > 50
    grouping = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
    for expr in exprs:
        for labels in grouping.findall(expr):
            assert "instance" not in {label.strip() for label in labels.split(",")}, expr
        assert not re.search(r"[{,]\s*instance\s*=", expr), expr


@pytest.mark.parametrize("argv, message", [
    (["--shard", "1"], "--shard needs --total-shards M"),
    (["--shard", "5", "--total-shards", "3"], "--shard must be in 0..2 for --total-shards 3, not 5"),
    (["--total-shards", "3"], "'not-a-pod' does not end in -<ordinal>"),
])
def test_cli_refuses_bad_shard_flags_with_exit_2(argv, message, monkeypatch, capsys):
    from exporter import cli, memory

    monkeypatch.setenv("POD_NAME", "not-a-pod")
    monkeypatch.setattr(memory, "limit_arenas", lambda: None)  # process-wide side effects: not here
    monkeypatch.setattr(cli, "setup_logging", lambda *a: None)
    assert cli.main(["run", "--listen", "127.0.0.1:0", *argv]) == cli.EXIT_CONFIG
    assert message in capsys.readouterr().err
