"""Fork risk: the largest copy-on-write of any fork seen in the forecast window, against the
hard memory limit. A fork (BGSAVE, AOF rewrite, module) copies every page written while it
runs; resident memory plus that copy above the hard limit means a failed save or an OOM kill."""

from __future__ import annotations

from collections import deque

from exporter.sources.base import Reading
from exporter.sources.fields import plausible_bytes
from exporter.sources.redis.info import Info
from exporter.sources.redis.tables import COW_PEAK, FORK_RISK

COW_FIELDS = ("rdb_last_cow_size", "aof_last_cow_size", "module_fork_last_cow_size", "current_cow_peak",
              "current_cow_size")


class ForkRisk:
    """The copy-on-write sizes of one target over its forecast window."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.history: deque[tuple[float, float]] = deque()

    def observe(self, info: Info, reading: Reading, now: float) -> None:
        """Add the window's copy-on-write peak and, with a hard limit, the risk ratio to ``reading``."""
        cow = max((plausible_bytes(info.fields.get(k)) or 0.0 for k in COW_FIELDS), default=0.0)
        # One entry per run of equal values (stamped when last seen): COW sizes change only
        # after a fork, so this stays a handful of entries at any poll rate.
        if self.history and self.history[-1][1] == cow:
            self.history.pop()
        self.history.append((now, cow))
        while self.history and self.history[0][0] < now - self.window:
            self.history.popleft()
        peak = max(c for _, c in self.history)
        reading.samples.add(COW_PEAK, peak)
        m = reading.memory
        if m.resident is not None and m.resident_limit:
            ratio = (m.resident + peak) / m.resident_limit
            reading.samples.add(FORK_RISK, ratio)
            reading.details["fork_memory_risk_ratio"] = ratio
