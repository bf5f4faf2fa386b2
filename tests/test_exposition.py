"""Exposition on its own, over a SnapshotStore filled by hand: no poll, no server, no HTTP."""

from __future__ import annotations

import gzip

from prometheus_client.parser import text_string_to_metric_families

import exporter.sources.redis  # noqa: F401  (declares the redis_* families in the catalog)
from exporter import catalog
from exporter.exposition import Exposition, label_prefix, render_chunks
from exporter.scheduler import PollStats, published_chunks
from exporter.snapshot import Samples, Snapshot
from exporter.store import SnapshotStore


def put(store: SnapshotStore, target: str, values: dict[str, float], polls: int = 1) -> None:
    samples = Samples()
    # added out of exposition order: the order of a body is the catalog's, never a poll's
    for family, value in values.items():
        samples.add(family, value)
    prefix = label_prefix(target, (("env", "prod"),))
    stats = PollStats(polls=polls)
    chunks = published_chunks(render_chunks(samples, prefix), stats, prefix)
    store.put(target, Snapshot(target, "redis", True, 0.0, samples), chunks)


def families(body: bytes) -> list[str]:
    """Family names in the order their TYPE lines come."""
    return [line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE ")]


def test_the_stores_families_come_first_then_the_exporters_then_the_process() -> None:
    store = SnapshotStore()
    put(store, "a", {"redis_connected_clients": 3, "cache_memory_used_bytes": 10, "cache_up": 1})
    put(store, "b", {"cache_up": 1, "redis_connected_clients": 4})
    order = families(Exposition(store).body())
    assert len(order) == len(set(order)), "a family's HELP/TYPE header is written once, for every target"
    stores = ["cache_up", "cache_memory_used_bytes", "redis_connected_clients"]
    assert order[:3] == stores  # unified before the store's own, in the catalog's order
    own = [f for f in order[3:] if f.startswith("cache_exporter_")]
    rest = order[3 + len(own):]
    assert order[3:3 + len(own)] == own, "the exporter's own families follow the stores' without a gap"
    assert own[0] == "cache_exporter_polls_total"  # per target (from the store), then process-wide (registry)
    assert "cache_exporter_build_info" in own and "cache_exporter_render_duration_seconds" in own
    assert own.index("cache_exporter_poll_duration_seconds") < own.index("cache_exporter_build_info")
    assert rest and all(f.startswith(("process_", "python_")) for f in rest), rest
    # a family no target has gets no header
    assert "redis_blocked_clients" not in order and catalog.find("redis_blocked_clients") is not None


def test_the_body_parses_with_every_targets_series_under_one_family() -> None:
    store = SnapshotStore()
    put(store, "a", {"cache_up": 1}, polls=7)
    put(store, "b", {"cache_up": 0}, polls=2)
    parsed = {f.name: f for f in text_string_to_metric_families(Exposition(store).body().decode())}
    assert {(s.labels["target"], s.labels["env"], s.value) for s in parsed["cache_up"].samples} == {
        ("a", "prod", 1.0), ("b", "prod", 0.0)}
    polls = {s.labels["target"]: s.value for s in parsed["cache_exporter_polls"].samples}
    assert polls == {"a": 7.0, "b": 2.0}


def test_a_removed_target_is_gone_from_the_next_body() -> None:
    store = SnapshotStore()
    put(store, "a", {"cache_up": 1, "redis_connected_clients": 3})
    put(store, "b", {"cache_up": 1})
    exp = Exposition(store)
    assert b'target="a"' in exp.body() and exp.cached_body_parts() is not None
    store.remove("a")
    assert exp.cached_body_parts() is None, "the cached body is of an older store"
    body = exp.body()
    assert b'target="a"' not in body and b'cache_up{target="b",env="prod"} 1.0\n' in body
    assert "redis_connected_clients" not in families(body)


def test_gzip_and_plain_bodies_hold_the_same_series() -> None:
    store = SnapshotStore()
    put(store, "a", {"cache_up": 1, "redis_connected_clients": 3})
    exp = Exposition(store)
    plain = exp.body()
    zipped = gzip.decompress(exp.body(compress=True))  # two gzip members: the store part, then the tail
    store_part = plain[:plain.index(b"# HELP cache_exporter_build_info")]
    assert zipped.startswith(store_part) and b'redis_connected_clients{target="a",env="prod"} 3.0\n' in store_part
    assert families(zipped) == families(plain)


def test_a_new_store_generation_drops_the_gzip_body() -> None:
    """Prometheus always asks for gzip: a cached gzip body of an older store would be served forever."""
    store = SnapshotStore()
    put(store, "a", {"cache_up": 1})
    exp = Exposition(store)
    assert b'cache_up{target="a",env="prod"} 1.0\n' in gzip.decompress(exp.body(compress=True))
    put(store, "a", {"cache_up": 0})
    assert exp.cached_body_parts(compress=True) is None
    assert b'cache_up{target="a",env="prod"} 0.0\n' in gzip.decompress(exp.body(compress=True))
