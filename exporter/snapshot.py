"""The typed result of one poll: what a source saw, ready for forecast, store and exposition."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

LabelPairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a family. ``suffix`` is ``_sum``/``_count`` for summaries, else empty."""

    family: str
    labels: LabelPairs
    value: float
    suffix: str = ""


class Samples:
    """An append-only sample list that drops non-finite values at the door.

    NaN/Inf from a store (``mem_fragmentation_ratio:nan`` on a fresh replica, a division
    by a zero limit) would propagate into alerts as silent nonsense; absent is honest.
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[Sample] = []

    def add(self, family: str, value: float | int | None, labels: LabelPairs = (), suffix: str = "",
            allow_inf: bool = False) -> None:
        """Add a sample; NaN never, +/-Inf only where a family defines it (``allow_inf``)."""
        if value is None:
            return
        value = float(value)
        if math.isfinite(value) or (allow_inf and math.isinf(value)):
            self._items.append(Sample(family, labels, value, suffix))

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def value(self, family: str, labels: LabelPairs | None = None) -> float | None:
        """First value of ``family`` (optionally with exactly ``labels``); for tests and derivations."""
        for s in self._items:
            if s.family == family and (labels is None or s.labels == labels):
                return s.value
        return None


@dataclass(frozen=True, slots=True)
class MemoryView:
    """The unified memory facts of a target, in bytes; what forecast and the audit read."""

    used: float | None = None
    limit: float | None = None
    limit_source: str | None = None
    resident: float | None = None
    resident_limit: float | None = None
    evicts_when_full: bool | None = None
    eviction_policy: str | None = None


@dataclass(slots=True)
class Snapshot:
    """Everything one poll of one target produced.

    ``details`` carries source-specific facts for /targets and later stages (server version,
    capabilities, the CONFIG values the audit reads); it never holds secrets.
    """

    target: str
    store: str
    ok: bool
    time: float
    samples: Samples = field(default_factory=Samples)
    memory: MemoryView = field(default_factory=MemoryView)
    details: dict[str, object] = field(default_factory=dict)
