"""SnapshotStore on its own: what a scrape is built from must follow every put and remove at once."""

from __future__ import annotations

from conftest import put_samples

from exporter.snapshot import Samples, Snapshot
from exporter.store import SnapshotStore


def put(store: SnapshotStore, target: str, values: dict[str, float], ok: bool = True) -> Snapshot:
    samples = Samples()
    for family, value in values.items():
        samples.add(family, value)
    return put_samples(store, target, samples, ok)


def grouped(store: SnapshotStore) -> tuple[int, dict[str, list[bytes]]]:
    """(generation, family -> every target's chunk of it)."""
    generation, stored = store.chunks()
    by_family: dict[str, list[bytes]] = {}
    for chunks in stored:
        for family, text in chunks.items():
            by_family.setdefault(family, []).append(text)
    return generation, by_family


def texts(store: SnapshotStore) -> dict[str, list[str]]:
    _, by_family = grouped(store)
    return {family: sorted(chunk.decode() for chunk in chunks) for family, chunks in by_family.items()}


def test_a_new_snapshot_replaces_the_old_one_family_by_family() -> None:
    store = SnapshotStore()
    put(store, "a", {"cache_up": 1, "redis_connected_clients": 5})
    put(store, "b", {"cache_up": 1, "redis_connected_clients": 7})
    # a is down now: its stale redis_* series must go, b's stay
    down = put(store, "a", {"cache_up": 0}, ok=False)
    assert texts(store) == {
        "cache_up": ['cache_up{target="a"} 0.0\n', 'cache_up{target="b"} 1.0\n'],
        "redis_connected_clients": ['redis_connected_clients{target="b"} 7.0\n'],
    }
    assert store.snapshot("a") is down
    # the last target with a family loses it: the family is gone, not left empty (no bare header)
    put(store, "b", {"cache_up": 0}, ok=False)
    assert set(texts(store)) == {"cache_up"}


def test_a_removed_target_is_gone_at_once() -> None:
    store = SnapshotStore()
    put(store, "a", {"cache_up": 1, "redis_connected_clients": 5})
    kept = put(store, "b", {"cache_up": 1})
    store.remove("a")
    assert texts(store) == {"cache_up": ['cache_up{target="b"} 1.0\n']}
    assert store.snapshot("a") is None
    assert store.snapshots() == {"b": kept}
    store.remove("never-there")  # harmless
    assert store.snapshots() == {"b": kept}


def test_every_write_changes_the_generation_and_views_are_copies() -> None:
    """Exposition caches its body per generation: a write that kept it would serve stale text."""
    store = SnapshotStore()
    generations = [store.generation]
    put(store, "a", {"cache_up": 1})
    generations.append(store.generation)
    view_generation, view = grouped(store)
    assert view_generation == store.generation
    put(store, "a", {"cache_up": 0}, ok=False)
    generations.append(store.generation)
    store.remove("a")
    generations.append(store.generation)
    assert len(set(generations)) == len(generations)
    # what was handed out before is not changed under the reader
    assert view == {"cache_up": [b'cache_up{target="a"} 1.0\n']}
    snapshots = store.snapshots()
    put(store, "c", {"cache_up": 1})
    assert snapshots == {}


def test_packed_chunks_give_back_each_family_s_text_in_order() -> None:
    from exporter.store import Chunks

    chunks = {"b_family": b'b{target="x"} 1.0\n', "a_family": b"", "c_family": "é\n".encode() * 3}
    packed = Chunks(chunks)
    assert packed.as_dict() == chunks and list(packed.as_dict()) == list(chunks)  # order kept: exposition's
    assert len(packed.families) == 3
    assert Chunks({}).as_dict() == {}
    # Targets with the same families share one tuple of names (a thousand targets, one tuple).
    assert Chunks({"b_family": b"1", "a_family": b"2", "c_family": b"3"}).families is packed.families
    store = SnapshotStore()
    store.put("x", Snapshot("x", "redis", True, 0.0, Samples()), packed)
    assert {f: c for f, cs in grouped(store)[1].items() for c in cs} == chunks
    text = packed.text()
    assert [packed.chunk(i, text) for i in range(3)] == list(chunks.values())


def test_packed_chunks_are_kept_deflated() -> None:
    """A target's text repeats its names and labels line after line: what is kept between
    scrapes is a fraction of it (a thousand Redis targets: 19 MiB of text, 3 MiB kept)."""
    from exporter.store import Chunks

    lines = {f"redis_family_{f}": b"".join(f'redis_family_{f}{{target="redis-0001",cmd="c{i}"}} {i * 7.5}\n'.encode()
                                             for i in range(10)) for f in range(30)}
    packed = Chunks(lines)
    size = sum(map(len, lines.values()))
    assert len(packed.packed) < size / 4, (len(packed.packed), size)
    assert packed.as_dict() == lines
