"""render_chunks' fast paths (value text without floatToGoString, the shared label cache) must
render exactly what the plain path renders."""

from __future__ import annotations

import random

from conftest import put_samples
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from exporter import exposition
from exporter.exposition import label_prefix, render_chunks
from exporter.snapshot import Sample, Samples

EDGES = [0.0, -0.0, 1.0, -1.0, 0.1, 5.5, 999999.9, 123456.0, 1000000.0, 1234567.0, 2.0**53, 1e16, 1e-5,
         1.5e-7, -1e20, 1e300, float("inf"), float("-inf"), float("nan")]


def test_value_text_is_floattogostring() -> None:
    rnd = random.Random(17)
    values = EDGES + [rnd.uniform(-1e12, 1e12) for _ in range(500)] \
        + [float(rnd.randint(0, 10**18)) for _ in range(500)] \
        + [rnd.random() * 10 ** rnd.randint(-20, 20) for _ in range(500)]
    # Straight to render_chunks (Samples would drop the non-finite and the implausible).
    text = render_chunks([Sample("x", (("i", str(i)),), v) for i, v in enumerate(values)], 'target="t"')["x"]
    lines = text.decode().splitlines()
    assert len(lines) == len(values)
    for v, line in zip(values, lines, strict=True):
        assert line.rsplit(" ", 1)[1] == floatToGoString(v), v


def test_cached_labels_render_the_same_escaped_text_and_stay_bounded(monkeypatch) -> None:
    samples = Samples()
    for i in range(40):
        samples.add("cache_fam", i, (("a", f'q"\\\n{i % 4}'), ("b", "ü")), allow_inf=True)
    prefix = label_prefix('t"1', (("env", "x\\y"),))
    first = render_chunks(samples, prefix)
    assert render_chunks(samples, prefix) == first  # the second time from the cache
    parsed = [s for f in text_string_to_metric_families(first["cache_fam"].decode()) for s in f.samples]
    assert len(parsed) == 40
    assert {s.labels["a"] for s in parsed} == {f'q"\\\n{k}' for k in range(4)}
    assert {s.labels["target"] for s in parsed} == {'t"1'}
    monkeypatch.setattr(exposition, "_LABELS_CACHE_MAX", 3)
    exposition._LABELS_CACHE.clear()
    assert render_chunks(samples, prefix) == first
    assert len(exposition._LABELS_CACHE) <= 3


def test_plain_body_after_gzip_is_rebuilt_identical() -> None:
    """The plain pieces are dropped once the gzip ones are built; a plain request rebuilds them."""
    import gzip

    from exporter.exposition import Exposition
    from exporter.store import SnapshotStore

    store = SnapshotStore()
    samples = Samples()
    samples.add("cache_up", 1, (("store", "redis"),))
    put_samples(store, "r", samples)
    exp = Exposition(store)
    plain = b"".join(exp._store_part(compress=False))
    assert b'cache_up{target="r",store="redis"} 1.0\n' in plain
    zipped = b"".join(exp._store_part(compress=True))
    assert exp._cache_parts is None
    assert gzip.decompress(zipped) == plain
    assert b"".join(exp._store_part(compress=False)) == plain
    assert exp._cache_gzip is not None  # the same generation: the gzip pieces outlive the plain rebuild
    assert b"".join(exp._store_part(compress=True)) == zipped


def test_a_large_plain_body_is_not_kept_after_it_is_served(monkeypatch) -> None:
    """At 1000 targets a plain scrape (curl, a person) built a 25 MB body that stayed in memory
    until the next gzip scrape; past TRIM_ABOVE it is served and let go, and a gzip scrape of
    the same store still gets the same series."""
    import gzip

    from exporter import exposition
    from exporter.exposition import Exposition
    from exporter.store import SnapshotStore

    store = SnapshotStore()
    samples = Samples()
    for i in range(200):
        samples.add("cache_up", 1, (("store", "redis"), ("i", str(i))))
    put_samples(store, "r", samples)
    exp = Exposition(store)
    small = b"".join(exp._store_part(compress=False))
    assert exp._cache_parts is not None  # small: kept for the next scrape (the fast path serves it)
    monkeypatch.setattr(exposition, "TRIM_ABOVE", len(small))
    put_samples(store, "r", samples)
    plain = b"".join(exp._store_part(compress=False))
    assert plain == small
    assert exp._cache_parts is None and exp._cache_gzip is None
    assert gzip.decompress(b"".join(exp._store_part(compress=True))) == plain  # same generation, rebuilt
    assert exp._cache_parts is None and exp._cache_gzip is not None


def test_the_body_is_the_same_whatever_the_piece_size(monkeypatch) -> None:
    """Targets with different families (two shapes, and one alone), each family once behind one
    header, whether the pieces hold 8192 chunks or 1."""
    from exporter import exposition
    from exporter.exposition import Exposition
    from exporter.store import SnapshotStore

    store = SnapshotStore()
    for i in range(7):
        samples = Samples()
        samples.add("cache_up", 1, (("store", "redis"),))
        if i % 2:
            samples.add("redis_connected_clients", i)
        if i == 6:
            samples.add("cache_memory_used_bytes", 1, (("store", "redis"),))
        put_samples(store, f"t{i}", samples)
    whole = b"".join(Exposition(store)._store_part(compress=False)).decode()
    monkeypatch.setattr(exposition, "BATCH_CHUNKS", 1)
    pieces = Exposition(store)._store_part(compress=False)
    assert b"".join(pieces).decode() == whole and len(pieces) > 3
    lines = whole.splitlines()
    assert lines.count("# TYPE cache_up gauge") == 1 and lines.count("# TYPE redis_connected_clients gauge") == 1
    assert sum(line.startswith("cache_up{") for line in lines) == 7
    assert sum(line.startswith("redis_connected_clients{") for line in lines) == 3
    assert sum(line.startswith("cache_memory_used_bytes{") for line in lines) == 1
    for family in ("cache_up", "redis_connected_clients", "cache_memory_used_bytes"):  # each family's lines together
        at = [n for n, line in enumerate(lines) if line.split("{")[0] == family]
        assert at == list(range(at[0], at[0] + len(at)))
