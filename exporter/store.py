"""The latest rendered snapshot of every target, indexed by family for fast exposition."""

from __future__ import annotations

import threading

from exporter.snapshot import Snapshot


class SnapshotStore:
    """Holds, per target, its last Snapshot and that snapshot's text chunks per family.

    ``generation`` changes on every write, so exposition can cache what it built from an
    unchanged store.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._chunks: dict[str, dict[str, bytes]] = {}  # target -> family -> text
        self._by_family: dict[str, dict[str, bytes]] = {}  # family -> target -> text
        self.generation = 0

    def put(self, target: str, snapshot: Snapshot, chunks: dict[str, bytes]) -> None:
        with self._lock:
            self._drop_chunks(target)
            self._snapshots[target] = snapshot
            self._chunks[target] = chunks
            for family, text in chunks.items():
                self._by_family.setdefault(family, {})[target] = text
            self.generation += 1

    def remove(self, target: str) -> None:
        with self._lock:
            self._drop_chunks(target)
            self._snapshots.pop(target, None)
            self._chunks.pop(target, None)
            self.generation += 1

    def _drop_chunks(self, target: str) -> None:
        for family in self._chunks.get(target, ()):
            per_target = self._by_family.get(family)
            if per_target is not None:
                per_target.pop(target, None)
                if not per_target:
                    del self._by_family[family]

    def family_chunks(self) -> tuple[int, dict[str, list[bytes]]]:
        """(generation, family -> chunks) as one consistent view."""
        with self._lock:
            return self.generation, {f: list(t.values()) for f, t in self._by_family.items()}

    def snapshot(self, target: str) -> Snapshot | None:
        with self._lock:
            return self._snapshots.get(target)

    def snapshots(self) -> dict[str, Snapshot]:
        with self._lock:
            return dict(self._snapshots)
