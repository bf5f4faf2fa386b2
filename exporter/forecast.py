"""Forecast when a target's memory runs out: a ladder of windows, each trusted only as far as it has seen.

The questions an SRE asks of a countdown are "how fast is it growing?" and "how sure are you?".
This module answers both from a bounded history, and gives a countdown only when it is sure.

* **History, bounded**: three ring buffers of bucket peaks (the peak is what runs into a
  limit): 120 buckets over the forecast window ``W`` (30 s at the default 1 h), 72 over 6 W
  (5 min) and 168 over 7 days at ``W`` (1 h). 360 (time, peak) pairs per series whatever the
  poll interval or uptime; an observation costs three array writes.
* **A ladder of windows** ``W/12 .. 168 W``, each twice the last (5 min, 10 min, ... 3.6 d, and
  7 d by default), each read from the finest ring that covers it, each usable once half of it
  has been seen. A window is cut into ``SUBWINDOWS`` equal parts and the peak of each part taken.
* **Growth is a staircase of new peaks**: a window says "growing" only when every part's peak
  is above the previous part's by more than the noise (the median absolute second difference
  of its bucket peaks). The rate is the median of those rises, or the newest if smaller (a
  slowing rise is extrapolated at its current pace). So a one-off bulk load (a step)
  raises one part, not all of them, and is never growth, wherever it falls in the window; a
  sawtooth shorter than a part is flat; noise rarely climbs five times in a row.
* **A rise to a level seen before is a cycle, not growth**: when the history before a window
  (up to ``CYCLE_LOOKBACK`` W, a day and then some) already reached the middle of the window's
  rise, the rise is a TTL sawtooth, a daily cycle or a regrowth after a flush, and that window
  is not used. A leak under a sawtooth is still seen by the longer windows, whose parts each
  hold a tooth: their peaks climb with the leak.
* **Extrapolate only as far as you have seen**: a window's countdown is used only when it is at
  most ``EVIDENCE_FACTOR`` times the span of growth behind it. Ten minutes of steady growth
  may announce a fill 20 minutes away, never one 6 hours away; six hours of it may announce
  one 12 hours away. This replaces the utilization guards and long ``for`` durations rules
  otherwise need: a fast fill is told within minutes, a slow leak hours or days ahead, and the
  first rising edge of a slow cycle stays silent unless it would fill the store within twice
  its age.
* The countdown is the shortest of the usable windows' (the earliest warning), from the peak of
  that window's newest part; +Inf when none is usable (not growing, or not sure), 0 at the limit.
  Once given, it lasts while the growth does and only counts down (``HOLD``), so a noisy
  estimate does not swing it across an alert's threshold. ``cache_memory_forecast_basis_seconds``
  exports the span of growth behind it, for rules that want more evidence than twice.

The module knows nothing about stores: it takes ``(time, value)`` and a limit, so app heaps
(``store="app"``) and resident memory use it unchanged.
"""

from __future__ import annotations

import bisect
import functools
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from exporter import catalog
from exporter.snapshot import MemoryView, Samples

# (bucket width, buckets) of each ring, widths as a fraction of the forecast window.
RINGS = ((1 / 120, 120), (1 / 12, 72), (1.0, 168))
# The ladder of windows, as multiples of the forecast window (5 min .. 7 d at the default 1 h).
# Each twice the last, so a growth of any duration fills most of one of them.
WINDOWS = tuple(2.0 ** k / 12 for k in range(11)) + (168.0,)
SUBWINDOWS = 5
MIN_SPAN_FRACTION = 0.5  # a window is used once this share of it has been seen
EVIDENCE_FACTOR = 2.0  # a countdown may reach this many times the span of growth behind it
NOISE_FACTOR = 1.0  # each part's peak must rise by this many noise units (median |2nd difference|)
RELATIVE_FLOOR = 1e-4  # ... and by at least this share of the level (a flat store's rounding is not growth)
HOLD = 0.8  # a countdown given is raised only by a newer estimate more than 1/HOLD higher
CYCLE_LOOKBACK = 26.0  # how far back (in forecast windows) a previous peak marks a rise as a cycle

GROWTH = catalog.CACHE_MEMORY_GROWTH
UNTIL_FULL = catalog.CACHE_MEMORY_UNTIL_FULL
BASIS = catalog.CACHE_MEMORY_FORECAST_BASIS
RESIDENT_UNTIL_FULL = catalog.CACHE_RESIDENT_UNTIL_FULL

NAN = float("nan")


@dataclass(frozen=True)
class Estimate:
    growth: float  # units per second
    seconds_until_full: float | None  # None: no limit known
    basis: float = 0.0  # seconds of growth seen: the longest window that rose all along; 0 when none



def median(values: Iterable[float]) -> float:
    """``statistics.median``, the same result (the mean of the middle two of an even count);
    not imported for it: ``statistics`` brings ``decimal``, ``fractions`` and ``random`` along."""
    data = sorted(values)
    n = len(data)
    if not n:
        raise ValueError("median of no values")
    mid = n // 2
    return data[mid] if n % 2 else (data[mid - 1] + data[mid]) / 2

@dataclass(frozen=True)
class _Trend:
    rate: float  # median rise per second of the parts' peaks (may be negative)
    growing: bool  # every part's peak above the previous one by more than the noise
    current: float  # the newest part's peak
    span: float


class _Ring:
    """The peak (and its time) of each of ``n`` buckets of ``width`` seconds, the newest last."""

    __slots__ = ("width", "n", "times", "peaks", "last", "_closed")

    def __init__(self, width: float, n: int) -> None:
        self.width = width
        self.n = n
        self.times = array("d", [NAN]) * n
        self.peaks = array("d", [NAN]) * n
        self.last: int | None = None  # the newest bucket index
        self._closed: tuple[int, array[float], array[float], float] | None = None  # see view()

    def observe(self, t: float, value: float) -> None:
        index = int(t // self.width)
        last = self.last
        if last is None or index > last:
            if last is not None:
                for i in range(max(last + 1, index - self.n + 1), index + 1):  # buckets with no poll, and the new one
                    self.peaks[i % self.n] = NAN
            self.last = index
        elif index <= last - self.n:
            return  # older than the ring
        slot = index % self.n
        if not value <= self.peaks[slot]:  # also true when the slot is empty (NaN)
            self.peaks[slot] = value
            self.times[slot] = t
            if index != self.last:
                self._closed = None

    def points(self, since: float = -math.inf) -> list[tuple[float, float]]:
        """The kept (time, peak) pairs at or after ``since``, oldest first."""
        if self.last is None:
            return []
        out = []
        for i in range(self.last - self.n + 1, self.last + 1):
            slot = i % self.n
            v = self.peaks[slot]
            if v == v and self.times[slot] >= since:
                out.append((self.times[slot], v))
        return out

    def view(self) -> _RingView:
        """The ring as sorted lists. The closed buckets (and their noise) are read once per
        bucket, so a poll costs the newest bucket only."""
        last = self.last
        if last is None:
            return _RingView([], [], 0.0)
        if self._closed is None or self._closed[0] != last:
            closed = [p for p in self.points() if p[0] < last * self.width]
            values = [v for _, v in closed]
            noise = median(abs(values[i + 1] - 2 * values[i] + values[i - 1])
                                      for i in range(1, len(values) - 1)) if len(values) > 2 else 0.0
            self._closed = (last, array("d", [t for t, _ in closed]), array("d", values), noise)
        # Kept as arrays (8 bytes a value), scanned as lists (faster to slice and compare).
        _, closed_times, closed_values, noise = self._closed
        times_list, values_list = closed_times.tolist(), closed_values.tolist()
        slot = last % self.n
        if self.peaks[slot] == self.peaks[slot]:
            times_list.append(self.times[slot])
            values_list.append(self.peaks[slot])
        return _RingView(times_list, values_list, noise)


@functools.lru_cache(maxsize=64)
def _ladder(window: float) -> tuple[tuple[float, int], ...]:
    """Each window of the ladder with the index of the finest ring that covers it; one tuple shared
    by every history of the same window (at a thousand targets, ~2 MiB of floats and tuples)."""
    return tuple((window * w, next((i for i, (width, n) in enumerate(RINGS) if window * width * n >= window * w),
                                   len(RINGS) - 1)) for w in WINDOWS)


class PeakHistory:
    """The peaks of one quantity, and its trend over the ladder of windows."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._reset()

    def _reset(self) -> None:
        """An empty history for ``self.window``."""
        window = self.window
        self.rings = [_Ring(window * w, n) for w, n in RINGS]
        self.windows = _ladder(window)
        self.first: float | None = None  # time of the oldest observation kept
        self.first_value = NAN
        self.latest: tuple[float, float] | None = None
        self._held: tuple[float, float] | None = None  # (time, countdown) of the last finite countdown
        self._growth: float | None = None  # the last growth given: once given, an estimate stays
        self._last_estimate: tuple[float, float | None, bool, Estimate | None] | None = None

    def __len__(self) -> int:
        return len(self.points())

    def points(self) -> list[tuple[float, float]]:
        """Every kept (time, peak) observation, oldest first, each once: what a state file saves.
        Fed back through ``observe`` in this order they rebuild every ring exactly."""
        points = {p for ring in self.rings for p in ring.points()}
        if self.first is not None and math.isfinite(self.first_value):  # when the history began
            points.add((self.first, self.first_value))
        return sorted(points)

    def restore(self, points: list[tuple[float, float]], now: float) -> int:
        """Take back saved peaks (times on this process's clock); those older than the longest
        ring, or not before ``now``, are dropped. Returns how many were kept."""
        self._reset()
        horizon = now - self.rings[-1].width * self.rings[-1].n
        kept = 0
        for t, v in sorted(points):
            if horizon < t < now and math.isfinite(v):
                self.observe(t, v)
                kept += 1
        return kept

    def observe(self, t: float, value: float) -> None:
        if not math.isfinite(value):
            return
        for ring in self.rings:
            ring.observe(t, value)
        if self.first is None or t < self.first:
            self.first, self.first_value = t, value
        if self.latest is None or t >= self.latest[0]:
            self.latest = (t, value)
        oldest = self.rings[-1]
        if oldest.last is not None:  # forget the start of a history the rings no longer hold
            reach = (oldest.last - oldest.n + 1) * oldest.width
            if self.first < reach:
                self.first, self.first_value = reach, NAN

    def estimate(self, limit: float | None = None, evicts_when_full: bool = False) -> Estimate | None:
        """The trend, and the time until ``limit``; None until half the shortest window is seen.
        Recomputed at most once per half of the finest bucket (15 s at the default window, every
        poll at the default interval): between, the last estimate counts down, so polls every
        second cost what polls every 15 s do."""
        latest, first = self.latest, self.first
        if latest is None or first is None:
            return None
        now, current = latest
        cached = self._last_estimate
        if (cached is not None and cached[1:3] == (limit, evicts_when_full)
                and 0 <= now - cached[0] < self.rings[0].width / 2 and current < (limit or math.inf)):
            est = cached[3]
            if est is None or est.seconds_until_full in (None, 0.0, math.inf):
                return est
            return Estimate(est.growth, max(0.0, est.seconds_until_full - (now - cached[0])), est.basis)
        est = self._estimate(now, current, first, limit, evicts_when_full)
        self._last_estimate = (now, limit, evicts_when_full, est)
        return est

    def _estimate(self, now: float, current: float, first: float, limit: float | None,
                  evicts_when_full: bool) -> Estimate | None:
        """The estimate at ``now``, the time of the latest observation (``current`` its value);
        ``first`` is when the kept history begins."""
        seen = now - first
        rings = [ring.view() for ring in self.rings]
        trends = []
        for w, ring in self.windows:
            span = min(w, seen)
            if span < w * MIN_SPAN_FRACTION:
                break
            trend = rings[ring].trend(now, span)
            if trend is not None:
                trends.append(trend)
        if not trends:  # too little history, or (just after it) a part with no poll yet
            if self._growth is None:
                return None
            trends = [_Trend(self._growth, False, current, 0.0)]
        base = next((t for t in trends if t.span >= self.window * MIN_SPAN_FRACTION), trends[-1])
        self._growth = base.rate
        if limit is None:
            return Estimate(base.rate, None)
        if evicts_when_full:
            return Estimate(base.rate, math.inf)
        if max(trends[0].current, current) >= limit:
            return Estimate(base.rate, 0.0)
        lookback = now - CYCLE_LOOKBACK * self.window

        seen_before: dict[float, bool] = {}

        def cycle(trend: _Trend) -> bool:
            """A rise to a level seen before (in the lookback, before this window) is a cycle."""
            if trend.span not in seen_before:
                middle = trend.current - trend.rate * trend.span / 2
                start = now - trend.span
                seen_before[trend.span] = any(v.peak_between(min(lookback, start - trend.span), start) >= middle
                                              for v in rings)
            return seen_before[trend.span]

        rising = [t for t in trends if t.growing]
        # Each check of a window against the history costs a scan: only those that can matter.
        basis = next((t.span for t in reversed(rising) if not cycle(t)), 0.0)
        best: tuple[float, _Trend] | None = None  # the shortest countdown far enough ahead
        nearest: tuple[float, _Trend] | None = None  # the shortest countdown of any growth
        if basis:
            for trend in sorted(rising, key=lambda t: (limit - t.current) / t.rate):
                left = (limit - trend.current) / trend.rate
                if trend.span > basis or cycle(trend):
                    continue
                if nearest is None:
                    nearest = (left, trend)
                if left <= EVIDENCE_FACTOR * trend.span:
                    best = (left, trend)
                    break
        chosen = best or nearest
        if chosen is None or (best is None and self._held is None):
            self._held = None
            return Estimate(base.rate, math.inf, basis)
        # Once a countdown is given it lasts while the growth does (a noisy fill may fall short of
        # the evidence rule now and then), and it counts down: a newer estimate raises it only
        # when more than 1/HOLD higher, so noise does not swing it across an alert's threshold.
        left, trend = chosen
        left = max(0.0, left)
        if self._held is not None:
            then, held = self._held
            left = max(HOLD * left, min(left, held - (now - then)))
        self._held = (now, left)
        return Estimate(trend.rate, left, basis)


class _RingView:
    """One ring's bucket peaks as sorted lists, with the noise of those peaks."""

    __slots__ = ("times", "values", "noise")

    def __init__(self, times: list[float], values: list[float], noise: float) -> None:
        self.times = times
        self.values = values
        self.noise = noise

    def trend(self, now: float, span: float) -> _Trend | None:
        """The parts' peaks over the last ``span`` seconds; None when a part holds no peak."""
        start = now - span
        first = bisect.bisect_left(self.times, start)
        if len(self.times) - first < SUBWINDOWS:
            return None
        part = span / SUBWINDOWS
        times, values = self.times, self.values
        edges = [first] + [bisect.bisect_left(times, start + k * part, first) for k in range(1, SUBWINDOWS)]
        edges.append(len(times))
        peaks = []
        peak_times = []
        for a, b in pairwise(edges):
            if a >= b:
                return None  # a part with no poll
            peak = max(values[a:b])
            peaks.append(peak)
            peak_times.append(times[values.index(peak, a, b)])
        rises = [b - a for a, b in pairwise(peaks)]
        floor = max(NOISE_FACTOR * self.noise, RELATIVE_FLOOR * abs(peaks[-1]))
        # Per second between the peaks' own times (bucket peaks do not fall on the parts' edges).
        # The median, or the newest if smaller: a slowing rise (the top of a cycle, a
        # decelerating fill) is extrapolated at its current pace, not its past one.
        rates = [r / max(b - a, part / 2) for r, (a, b) in zip(rises, pairwise(peak_times), strict=True)]
        rate = min(median(rates), rates[-1])
        # Still growing now: the newest part's peak is in its second half. A sawtooth's drop ends
        # its rising edge within half a part (a tenth of the window); a leak's tooth shorter than
        # that does not, so the countdown of a leak under a TTL sawtooth holds steady.
        growing = rate > 0 and min(rises) > floor and now - peak_times[-1] <= part / 2
        return _Trend(rate, growing, peaks[-1], span)

    def peak_between(self, start: float, end: float) -> float:
        """The highest peak whose time is in [start, end); -inf when none."""
        lo = bisect.bisect_left(self.times, start)
        hi = bisect.bisect_left(self.times, end)
        return max(self.values[lo:hi], default=-math.inf)


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
        number of points kept. The first poll after a restart has its countdown again."""
        return (self.used.restore(history.get("used", []), now)
                + self.resident.restore(history.get("resident", []), now))

    def update(self, now: float, memory: MemoryView, store: str, out: Samples) -> dict[str, float | None]:
        """Record this poll's values and add the forecast samples; returns them for /targets."""
        labels = (("store", store),)
        if memory.restarted:  # a new process: the last one's rise says nothing about this one's
            self.used, self.resident = PeakHistory(self.used.window), PeakHistory(self.resident.window)
        if memory.used is not None:
            self.used.observe(now, memory.used)
        if memory.resident is not None:
            self.resident.observe(now, memory.resident)
        result: dict[str, float | None] = {}
        used = self.used.estimate(memory.limit, bool(memory.evicts_when_full))
        if used is not None:
            out.add(GROWTH, used.growth, labels)
            out.add(UNTIL_FULL, used.seconds_until_full, labels, allow_inf=True)
            if used.seconds_until_full is not None:
                out.add(BASIS, used.basis, labels)
            result.update(growth_bytes_per_second=used.growth, seconds_until_full=used.seconds_until_full,
                          forecast_basis_seconds=used.basis)
        resident = self.resident.estimate(memory.resident_limit) if memory.resident_limit is not None else None
        if resident is not None and resident.seconds_until_full is not None:
            out.add(RESIDENT_UNTIL_FULL, resident.seconds_until_full, labels, allow_inf=True)
            result["resident_seconds_until_full"] = resident.seconds_until_full
        return result
