"""The latest snapshot and rendered text of every target, grouped by family when a scrape asks."""

from __future__ import annotations

import threading
import zlib
from array import array
from collections.abc import Iterator, Mapping

from exporter.snapshot import Snapshot

# One tuple per distinct family list, with each family's position in it.
_FAMILIES: dict[tuple[str, ...], tuple[tuple[str, ...], dict[str, int]]] = {}
_FAMILIES_MAX = 10_000  # cleared when full: targets whose families keep changing cannot grow it


class Chunks:
    """A target's text chunks, one per family, packed in one compressed ``bytes`` with their end offsets.

    At a thousand targets a dict of ~150 small ``bytes`` per target was 131 000 long-lived
    objects (20 MiB with their headers, and the small-object allocator's pages they pinned among
    each poll's short-lived ones); packed, it is one buffer and one offset array per target, and
    the family names are one tuple shared by every target with the same families. The buffer is
    deflated (level 1): the text repeats names and labels line after line, and shrinks ~6x
    (20 KB to 3 KB for a Redis target), which at a thousand targets is 16 MiB of the resident
    size for ~0.15 ms of CPU per poll and ~30 ms per scrape (docs/benchmarks.md, "Fixes,
    measured before/after"). A scrape inflates each target once and slices each family's
    chunk out as it writes it.
    """

    __slots__ = ("families", "index", "packed", "ends")

    def __init__(self, chunks: Mapping[str, bytes]) -> None:
        families = tuple(chunks)
        shared = _FAMILIES.get(families)
        if shared is None:
            if len(_FAMILIES) >= _FAMILIES_MAX:
                _FAMILIES.clear()
            shared = _FAMILIES[families] = (families, {f: i for i, f in enumerate(families)})
        self.families, self.index = shared
        parts = list(chunks.values())
        self.packed = zlib.compress(b"".join(parts), 1)
        ends = array("L")
        end = 0
        for part in parts:
            end += len(part)
            ends.append(end)
        self.ends = ends

    def text(self) -> bytes:
        """Every chunk, in the order of ``families``, as one text (inflated on each call)."""
        return zlib.decompress(self.packed)

    def items(self) -> Iterator[tuple[str, bytes]]:
        text, start = self.text(), 0
        for family, end in zip(self.families, self.ends, strict=True):
            yield family, text[start:end]
            start = end

    def chunk(self, position: int, text: bytes) -> bytes:
        """The text of ``self.families[position]``, sliced from ``text``, what ``text()`` returned:
        a caller reading several chunks inflates once."""
        ends = self.ends
        return text[ends[position - 1] if position else 0:ends[position]]

    def as_dict(self) -> dict[str, bytes]:
        return dict(self.items())


class SnapshotStore:
    """Holds, per target, its last Snapshot and that snapshot's text chunks per family.

    ``generation`` changes on every write, so exposition can cache what it built from an
    unchanged store. Chunks are grouped by family only when a scrape asks (exposition), not on
    every write: at a thousand targets a per-family index kept up to date costs two
    dict operations per family per poll (~12 % of the process's CPU) and a dict per family
    holding every target (~8 MiB), for a grouping a scrape every 15 s or so needs once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._chunks: dict[str, Chunks] = {}  # never mutated once put
        self.generation = 0

    def put(self, target: str, snapshot: Snapshot, chunks: Chunks | Mapping[str, bytes]) -> None:
        if not isinstance(chunks, Chunks):
            chunks = Chunks(chunks)
        with self._lock:
            self._snapshots[target] = snapshot
            self._chunks[target] = chunks
            self.generation += 1

    def remove(self, target: str) -> None:
        with self._lock:
            self._snapshots.pop(target, None)
            self._chunks.pop(target, None)
            self.generation += 1

    def chunks(self) -> tuple[int, list[Chunks]]:
        """(generation, every target's chunks) as one consistent view; the chunks are never
        changed once put (a put replaces a target's), so they may be read outside the lock."""
        with self._lock:
            return self.generation, list(self._chunks.values())

    def snapshot(self, target: str) -> Snapshot | None:
        with self._lock:
            return self._snapshots.get(target)

    def snapshots(self) -> dict[str, Snapshot]:
        with self._lock:
            return dict(self._snapshots)
