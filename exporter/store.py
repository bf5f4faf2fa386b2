"""The latest snapshot and rendered text of every target, grouped by family when a scrape asks."""

from __future__ import annotations

import threading
from collections import defaultdict

from exporter.snapshot import Snapshot


class SnapshotStore:
    """Holds, per target, its last Snapshot and that snapshot's text chunks per family.

    ``generation`` changes on every write, so exposition can cache what it built from an
    unchanged store. Chunks are grouped by family only when a scrape asks (``family_chunks``),
    not on every write: at a thousand targets a per-family index kept up to date costs two
    dict operations per family per poll (~12 % of the process's CPU) and a dict per family
    holding every target (~8 MiB), for a grouping a scrape every 15 s or so needs once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._chunks: dict[str, dict[str, bytes]] = {}  # target -> family -> text; never mutated once put
        self.generation = 0

    def put(self, target: str, snapshot: Snapshot, chunks: dict[str, bytes]) -> None:
        with self._lock:
            self._snapshots[target] = snapshot
            self._chunks[target] = chunks
            self.generation += 1

    def remove(self, target: str) -> None:
        with self._lock:
            self._snapshots.pop(target, None)
            self._chunks.pop(target, None)
            self.generation += 1

    def family_chunks(self) -> tuple[int, dict[str, list[bytes]]]:
        """(generation, family -> chunks) as one consistent view."""
        with self._lock:
            generation, per_target = self.generation, list(self._chunks.values())
        # Outside the lock: the dicts taken are never changed (a put replaces a target's dict).
        by_family: defaultdict[str, list[bytes]] = defaultdict(list)
        for chunks in per_target:
            for family, text in chunks.items():
                by_family[family].append(text)
        return generation, by_family

    def snapshot(self, target: str) -> Snapshot | None:
        with self._lock:
            return self._snapshots.get(target)

    def snapshots(self) -> dict[str, Snapshot]:
        with self._lock:
            return dict(self._snapshots)
