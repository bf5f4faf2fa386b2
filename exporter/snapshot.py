"""The typed result of one poll: what a source saw, ready for forecast, store and exposition."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from exporter import catalog

if TYPE_CHECKING:
    from exporter.targets import Target

LabelPairs = tuple[tuple[str, str], ...]

# No host has 1 EiB; a store that reports more (1e308 from a broken or hostile server) is
# reporting nonsense, and nonsense would turn into alerts (1e308 - 1e308 = 0 bytes used).
MAX_PLAUSIBLE_BYTES = float(2**60)
MAX_SERIES = "max_series"
LABEL_TOO_LONG = "label_too_long"


@dataclass(frozen=True, slots=True)
class SeriesLimits:
    """A target's caps on what one poll may produce (``max_series``, ``max_label_value_length``)."""

    max_series: int
    max_label_value_length: int

    @classmethod
    def of(cls, target: Target) -> SeriesLimits:
        return cls(target.max_series, target.max_label_value_length)


class Sample(NamedTuple):
    """One sample of a family. ``suffix`` is ``_sum``/``_count`` for summaries, else empty.

    A named tuple, not a frozen dataclass: a poll makes hundreds, and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) cost twice as much."""

    family: str
    labels: LabelPairs
    value: float
    suffix: str = ""


_new_tuple = tuple.__new__


class Samples:
    """An append-only sample list that drops non-finite and implausible values at the door,
    and, with ``limits``, holds a poll to its target's series caps.

    NaN/Inf from a store (``mem_fragmentation_ratio:nan`` on a fresh replica, a division
    by a zero limit) would propagate into alerts as silent nonsense; absent is honest. So is
    a negative counter or a byte count no host has: those are counted in ``implausible``.
    Past ``max_series`` only essential families (unified, exporter, ``*_up``) still get in,
    so one server answering 100k command names cannot crowd out ``cache_up`` or the memory
    series; what was left out is counted per (family, reason) in ``dropped``.
    """

    __slots__ = ("_items", "limits", "implausible", "dropped")

    def __init__(self, limits: SeriesLimits | None = None) -> None:
        self._items: list[Sample] = []
        self.limits = limits
        self.implausible = 0
        self.dropped: dict[tuple[str, str], int] = {}

    def add(self, family: str, value: float | int | None, labels: LabelPairs = (), suffix: str = "",
            allow_inf: bool = False) -> None:
        """Add a sample; NaN never, +/-Inf only where a family defines it (``allow_inf``)."""
        if value is None:
            return
        value = float(value)
        # This runs ~300 times a poll, so the common case (a finite value in range) costs two
        # comparisons: x - x is 0.0 for a finite x, NaN for inf and NaN.
        if value - value != 0.0 and not (allow_inf and math.isinf(value)):
            return
        # The catalog is consulted only for the rare values that need it.
        if (value < 0 or value > MAX_PLAUSIBLE_BYTES) and value - value == 0.0:
            spec = catalog.find(family)
            if spec is not None and ((value < 0 and spec.type == catalog.COUNTER)
                                     or (abs(value) > MAX_PLAUSIBLE_BYTES and family.endswith("_bytes"))):
                self.implausible += 1
                return
        limits = self.limits
        if limits is not None:
            longest = limits.max_label_value_length
            for _, v in labels:  # a loop, not any(): this runs for most of a poll's series
                if len(v) > longest:
                    self._drop(family, LABEL_TOO_LONG)
                    return
            if len(self._items) >= limits.max_series:
                spec = catalog.find(family)
                if not (spec is not None and spec.essential
                        and not any(k in spec.optional_labels for k, _ in labels)):
                    self._drop(family, MAX_SERIES)
                    return
        self._items.append(_new_tuple(Sample, (family, labels, value, suffix)))  # Sample(...), minus a frame

    @property
    def full(self) -> bool:
        """True once the series cap is reached: a source may skip computing what would be dropped."""
        return self.limits is not None and len(self._items) >= self.limits.max_series

    def skipped(self, families: Iterable[str]) -> None:
        """Count one series of each family as dropped without computing it (see ``full``)."""
        for family in families:
            self._drop(family, MAX_SERIES)

    def _drop(self, family: str, reason: str) -> None:
        key = (family, reason)
        self.dropped[key] = self.dropped.get(key, 0) + 1

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def families(self) -> set[str]:
        return {s[0] for s in self._items}

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
    # The process behind the target is a new one since the last poll (an app restarted after a
    # crash): its memory history no longer applies.
    restarted: bool = False


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
