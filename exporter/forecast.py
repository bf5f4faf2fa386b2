"""Forecast when a target's memory runs out, from a bounded history of its recent peaks.

Estimator: the Theil-Sen slope of the rolling peak envelope.

* **History, bounded**: the forecast window (default 1 h) is cut into ``BUCKETS`` time buckets
  and each keeps only its peak. Memory per series is constant whatever the poll interval or the
  uptime, and the peak is what runs into a limit.
* **Rolling peak envelope**: each bucket's value becomes the maximum over the last
  ``ENVELOPE_BUCKETS`` buckets (~5 min at 1 h). Sawtooth patterns — TTL expiry cycles, cron
  cleanups, GC — become flat: a cache that fills to 80 % and drops back every few minutes is
  not growing, and a rule on raw samples (or ``deriv``) sees it grow on every rising edge.
  Cycles up to a third of the window stay silent (tested); a cycle as long as the window is
  indistinguishable from growth within it, so slow cycles need a longer ``forecast_window``.
  A longer envelope silences slower cycles but turns noise into apparent slow growth (measured:
  3 of 20 noise series got a countdown with a 15 min envelope, none with 5 min).
* **Theil-Sen slope** (median of all pairwise slopes) of that envelope: unlike least squares,
  one bulk load (a step) early in the window does not tilt it, and noise averages out because
  the median of pairwise slopes of a stationary series is ~0. Its breakdown point is ~29 %:
  a step in the first quarter of the window is ignored; a step in the last quarter counts as
  growth, which is the cautious reading of a fresh jump.
* **Deadband**: growth counts only when the fitted rise over the observed span exceeds three
  times the envelope's median absolute deviation from the fitted line; below that the slope is
  noise and the time until full is +Inf.

The slope is recomputed only when a bucket closes (a few dozen points, under a millisecond),
so most polls cost a deque append. The module knows nothing about stores: it takes
``(time, value)`` and a limit, so app heaps (``store="app"``) use it unchanged.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

from exporter import catalog
from exporter.snapshot import MemoryView, Samples

BUCKETS = 48
ENVELOPE_BUCKETS = 4  # ~5 min of envelope at the default 1 h window
MIN_HISTORY_FRACTION = 0.25  # the window must be this full before a forecast is given
MIN_POINTS = 6
NOISE_FACTOR = 3.0

GROWTH = catalog.CACHE_MEMORY_GROWTH
UNTIL_FULL = catalog.CACHE_MEMORY_UNTIL_FULL
RESIDENT_UNTIL_FULL = catalog.CACHE_RESIDENT_UNTIL_FULL


@dataclass(frozen=True)
class Estimate:
    growth: float  # units per second
    seconds_until_full: float | None  # None: no limit known


class PeakHistory:
    """The peaks of one quantity over the last ``window`` seconds, in ``BUCKETS`` buckets."""

    def __init__(self, window: float, buckets: int = BUCKETS) -> None:
        self.window = window
        self.width = window / buckets
        self.buckets = buckets
        self._peaks: deque[tuple[int, float, float]] = deque()  # (bucket index, time of peak, peak)
        self._slope_key: tuple[int, int] | None = None
        self._slope: tuple[float, bool] | None = None

    def __len__(self) -> int:
        return len(self._peaks)

    def points(self) -> list[tuple[float, float]]:
        """The kept peaks as (time, value), oldest first: what a state file saves."""
        return [(t, v) for _, t, v in self._peaks]

    def restore(self, points: list[tuple[float, float]], now: float) -> int:
        """Take back saved peaks (times on this process's clock); those outside the window
        before ``now``, or not before it, are dropped. Returns how many were kept."""
        self._peaks.clear()
        self._slope_key = self._slope = None
        for t, v in sorted(points):
            if now - self.window < t < now:
                self.observe(t, v)
        return len(self._peaks)

    def observe(self, t: float, value: float) -> None:
        if not math.isfinite(value):
            return
        index = int(t // self.width)
        if self._peaks and self._peaks[-1][0] == index:
            if value >= self._peaks[-1][2]:
                self._peaks[-1] = (index, t, value)
        else:
            self._peaks.append((index, t, value))
        while self._peaks and self._peaks[0][0] <= index - self.buckets:
            self._peaks.popleft()

    def estimate(self, limit: float | None = None, evicts_when_full: bool = False) -> Estimate | None:
        """The trend, and the time until ``limit``; None until there is enough history."""
        if len(self._peaks) < 2:
            return None
        span = self._peaks[-1][1] - self._peaks[0][1]
        closed = len(self._peaks) - 1  # the newest bucket is still filling
        if span < self.window * MIN_HISTORY_FRACTION or closed < MIN_POINTS:
            return None
        slope, significant = self._closed_slope(closed)
        if limit is None:
            return Estimate(slope, None)
        if evicts_when_full:
            return Estimate(slope, math.inf)
        current = max(p[2] for p in list(self._peaks)[-ENVELOPE_BUCKETS:])
        if current >= limit:
            return Estimate(slope, 0.0)
        if not significant:
            return Estimate(slope, math.inf)
        return Estimate(slope, (limit - current) / slope)

    def _closed_slope(self, closed: int) -> tuple[float, bool]:
        key = (self._peaks[closed - 1][0], closed)
        if key != self._slope_key:
            self._slope = _envelope_trend([(t, v) for _, t, v in list(self._peaks)[:closed]])
            self._slope_key = key
        return self._slope  # type: ignore[return-value]


def _envelope_trend(points: list[tuple[float, float]]) -> tuple[float, bool]:
    """(Theil-Sen slope of the rolling peak envelope, whether the rise exceeds the noise)."""
    envelope = [(points[i][0], max(v for _, v in points[max(0, i - ENVELOPE_BUCKETS + 1):i + 1]))
                for i in range(len(points))]
    if len(envelope) >= 2 * ENVELOPE_BUCKETS + MIN_POINTS:
        envelope = envelope[ENVELOPE_BUCKETS - 1:]  # drop the partial envelopes at the start
    slopes = [(v2 - v1) / (t2 - t1)
              for i, (t1, v1) in enumerate(envelope) for t2, v2 in envelope[i + 1:] if t2 > t1]
    if not slopes:
        return 0.0, False
    slope = statistics.median(slopes)
    intercept = statistics.median(v - slope * t for t, v in envelope)
    noise = statistics.median(abs(v - (intercept + slope * t)) for t, v in envelope)
    span = envelope[-1][0] - envelope[0][0]
    level = max(abs(v) for _, v in envelope)
    significant = slope > 0 and slope * span > max(NOISE_FACTOR * noise, 1e-6 * level)
    return slope, significant


class Forecaster:
    """The forecasts of one target: used memory against its limit, resident against the hard limit."""

    def __init__(self, window: float) -> None:
        self.used = PeakHistory(window)
        self.resident = PeakHistory(window)

    def history(self) -> dict[str, list[tuple[float, float]]]:
        """Both histories as (time, peak) points, for the state file."""
        return {"used": self.used.points(), "resident": self.resident.points()}

    def restore(self, history: dict[str, list[tuple[float, float]]], now: float) -> int:
        """Take back a saved history (times already on this process's clock); returns the
        number of points kept. With a quarter of the window restored, the first poll after a
        restart has its countdown again."""
        return (self.used.restore(history.get("used", []), now)
                + self.resident.restore(history.get("resident", []), now))

    def update(self, now: float, memory: MemoryView, store: str, out: Samples) -> dict[str, float | None]:
        """Record this poll's values and add the forecast samples; returns them for /targets."""
        labels = (("store", store),)
        if memory.used is not None:
            self.used.observe(now, memory.used)
        if memory.resident is not None:
            self.resident.observe(now, memory.resident)
        result: dict[str, float | None] = {}
        used = self.used.estimate(memory.limit, bool(memory.evicts_when_full))
        if used is not None:
            out.add(GROWTH, used.growth, labels)
            out.add(UNTIL_FULL, used.seconds_until_full, labels, allow_inf=True)
            result.update(growth_bytes_per_second=used.growth, seconds_until_full=used.seconds_until_full)
        resident = self.resident.estimate(memory.resident_limit)
        if resident is not None and resident.seconds_until_full is not None:
            out.add(RESIDENT_UNTIL_FULL, resident.seconds_until_full, labels, allow_inf=True)
            result["resident_seconds_until_full"] = resident.seconds_until_full
        return result
