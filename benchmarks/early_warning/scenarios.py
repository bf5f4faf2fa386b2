"""The scenario library of the early-warning benchmark: memory over time, from the exporter's start.

Each scenario is a function of time (seconds since the exporter started, t = 0 is its first poll)
giving the used memory as a fraction of the limit, plus the limit, whether the store evicts when
full, optional seeded noise and an optional exporter restart. Used memory is clamped to
[0, limit]: a store that rejects writes (noeviction) stays at its limit once full, and a store that
evicts never goes over it.

* ``fill`` scenarios must warn: the store reaches its limit at ``full_at`` (the first second at
  which the noise-free function reaches the limit, found by scanning), and the replay goes on for
  an hour after that so late alerts are measured too (as a negative lead).
* ``lookalike`` scenarios must stay silent: every minute any memory alert fires is a false alarm.

Every scenario starts with the exporter's start: the forecast's warm-up is part of every figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
LIMIT = 1_000_000_000  # maxmemory 1g (10^9 bytes: 70 % and 90 % of it are whole bytes, exactly at the thresholds)
AFTER_FULL = HOUR  # how long a fill is replayed after it is full

FILL = "fill"
LOOKALIKE = "lookalike"
TWIN = "twin"  # a look-alike built from a fill: identical to it until a peer rule fired, then flat
TWIN_AFTER = 12 * HOUR  # how long a twin is replayed after its growth stops: every rule's window has moved past it

Shape = Callable[[float], float]


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # FILL or LOOKALIKE
    description: str
    duration: float  # seconds replayed, from the exporter's start
    shape: Shape  # used memory as a fraction of the limit at t (before noise and clamping)
    limit: float = LIMIT
    evicts: bool = False
    policy: str = "noeviction"
    growth_start: float = 0.0  # fills: when the growth that fills the store starts ("the way to full")
    noise: float = 0.0  # standard deviation of the per-poll noise, as a fraction of the limit
    noise_phi: float = 0.0  # AR(1) coefficient of the noise (0: white; near 1: a slow wander)
    seed: int = 0
    restart_at: float | None = None  # the exporter restarts: no polls for restart_gap polls, then a fresh Forecaster
    restart_gap: int = 0
    restart_keeps_history: bool = False  # the restarted exporter gets its forecast history back (--state.dir)
    step: float | None = None  # sample step of the promtool input (None: every poll)
    full_at: float | None = field(default=None)

    def __post_init__(self) -> None:
        if self.kind == FILL and self.full_at is None:
            object.__setattr__(self, "full_at", first_full(self.shape, self.duration))
            if self.full_at is None:
                raise ValueError(f"fill scenario {self.name} never reaches its limit")

    def used_fraction(self, t: float) -> float:
        """The noise-free used memory at t, as a fraction of the limit, clamped to [0, 1]."""
        return min(1.0, max(0.0, self.shape(t)))


def first_full(shape: Shape, duration: float) -> float | None:
    """The first whole second at which ``shape`` reaches 1 (the limit); None if it never does.
    Scanned every 10 s, then second by second before the first hit (a tooth tip under 10 s may be missed)."""
    full = lambda t: shape(t) >= 1.0 - 1e-12  # noqa: E731
    t = 0
    while t <= duration:
        if full(t):
            return float(next(u for u in range(max(0, t - 9), t + 1) if full(u)))
        t += 10
    return None


# --- shapes ---------------------------------------------------------------------------------

def flat(level: float) -> Shape:
    return lambda t: level


def ramp(t: float, start: float, end: float, lo: float, hi: float) -> float:
    """lo before ``start``, hi after ``end``, linear in between."""
    if t <= start:
        return lo
    if t >= end:
        return hi
    return lo + (hi - lo) * (t - start) / (end - start)


def linear_fill(lo: float, fill_time: float, start: float = 0.0) -> Shape:
    """Flat at ``lo`` until ``start``, then linear to the limit in ``fill_time``."""
    return lambda t: ramp(t, start, start + fill_time, lo, 1.0)


def saw01(t: float, period: float, phase: float = 0.0) -> float:
    """A rising sawtooth from 0 to 1 with an instant drop; ``phase`` (0..1) is where it is at t = 0."""
    return (t / period + phase) % 1.0


def sawtooth(lo: float, hi: float, period: float, phase: float) -> Shape:
    return lambda t: lo + (hi - lo) * saw01(t, period, phase)


def step(lo: float, hi: float, at: float, ramp_time: float = MINUTE) -> Shape:
    """A one-off bulk load: flat at ``lo``, ``hi`` after a ``ramp_time`` load at ``at``, flat after."""
    return lambda t: ramp(t, at, at + ramp_time, lo, hi)


# --- the library ---------------------------------------------------------------------------

def _fill(name: str, description: str, shape: Shape, growth_start: float = 0.0, **kw: object) -> Scenario:
    full = first_full(shape, 40 * DAY)
    assert full is not None, name
    return Scenario(name, FILL, description, full + AFTER_FULL, shape, growth_start=growth_start,
                    full_at=full, **kw)  # type: ignore[arg-type]


def _fills() -> list[Scenario]:
    out = []
    for label, fill_time, lo in (("10m", 10 * MINUTE, 0.40), ("30m", 30 * MINUTE, 0.40), ("2h", 2 * HOUR, 0.40),
                                 ("6h", 6 * HOUR, 0.30), ("10h", 10 * HOUR, 0.50), ("80h", 80 * HOUR, 0.40),
                                 ("25d", 25 * DAY, 0.30)):
        out.append(_fill(f"linear-{label}", f"linear {lo:.0%} -> 100 % in {label}, growing from the exporter's start",
                         linear_fill(lo, fill_time)))

    def accelerating(t: float) -> float:  # 30 % -> 100 % in 8 h, quadratic: the slope grows from 0
        return 0.30 + 0.70 * (t / (8 * HOUR)) ** 2

    def decelerating(t: float) -> float:  # 30 % -> 100 % in 8 h, logarithmic: the slope falls tenfold
        return 0.30 + 0.70 * math.log1p(9 * t / (8 * HOUR)) / math.log(10)

    out += [
        _fill("accelerating-8h", "quadratic 30 % -> 100 % in 8 h (the slope grows from 0)", accelerating),
        _fill("decelerating-8h", "logarithmic 30 % -> 100 % in 8 h (the slope falls tenfold on the way)", decelerating),
        _fill("flat-4h-then-4h", "flat at 45 % for 4 h, then linear to 100 % in 4 h",
              linear_fill(0.45, 4 * HOUR, start=4 * HOUR), growth_start=4 * HOUR),
        _fill("two-phase-plateau", "30 % -> 60 % in 2 h, a 3 h plateau at 60 %, then 60 % -> 100 % in 2 h",
              lambda t: ramp(t, 0, 2 * HOUR, 0.30, 0.60) if t < 5 * HOUR else ramp(t, 5 * HOUR, 7 * HOUR, 0.60, 1.0),
              growth_start=5 * HOUR),
        _fill("flush-regrow", "40 % -> 80 % in 2 h, FLUSHALL to 10 %, then 10 % -> 100 % in 3 h",
              lambda t: ramp(t, 0, 2 * HOUR, 0.40, 0.80) if t < 2 * HOUR else ramp(t, 2 * HOUR, 5 * HOUR, 0.10, 1.0),
              growth_start=2 * HOUR),
        _fill("leak-ttl-saw-10m", "a leak (baseline 30 % -> 80 % in 10 h) under a 10 min TTL sawtooth of +20 %",
              lambda t: 0.30 + 0.50 * t / (10 * HOUR) + 0.20 * saw01(t, 10 * MINUTE)),
        _fill("leak-ttl-saw-1h", "a leak (baseline 30 % -> 80 % in 10 h) under a 1 h TTL sawtooth of +20 %",
              lambda t: 0.30 + 0.50 * t / (10 * HOUR) + 0.20 * saw01(t, HOUR, 0.5)),
        _fill("import-10m-after-3h", "flat at 35 % for 3 h, then a bulk import gone wrong: 100 % in 10 min",
              linear_fill(0.35, 10 * MINUTE, start=3 * HOUR), growth_start=3 * HOUR),
        _fill("fill-30m-after-2h", "flat at 50 % for 2 h, then linear to 100 % in 30 min",
              linear_fill(0.50, 30 * MINUTE, start=2 * HOUR), growth_start=2 * HOUR),
        _fill("linear-6h-noisy", "linear 30 % -> 100 % in 6 h with white noise (sd 0.5 % of the limit)",
              linear_fill(0.30, 6 * HOUR), noise=0.005, seed=6),
        _fill("restart-mid-fill", "linear 40 % -> 100 % in 6 h; the exporter restarts at 3 h (4 polls missed, "
              "a fresh Forecaster)", linear_fill(0.40, 6 * HOUR), restart_at=3 * HOUR, restart_gap=4),
        _fill("restart-state-mid-fill", "restart-mid-fill, but the restarted exporter restores its forecast history "
              "(--state.dir; a fresh Forecaster if the Forecaster cannot)", linear_fill(0.40, 6 * HOUR),
              restart_at=3 * HOUR, restart_gap=4, restart_keeps_history=True),
    ]
    return out


def _lookalikes() -> list[Scenario]:
    out = []

    def look(name: str, description: str, duration: float, shape: Shape, **kw: object) -> None:
        out.append(Scenario(name, LOOKALIKE, description, duration, shape, **kw))  # type: ignore[arg-type]

    for lo, hi, at, label in ((0.30, 0.70, 2 * HOUR, "step-30-70"), (0.30, 0.75, 2 * HOUR, "step-30-75"),
                              (0.30, 0.505, 2 * HOUR, "step-to-50.5"), (0.40, 0.705, 2 * HOUR, "step-to-70.5"),
                              (0.60, 0.905, 2 * HOUR, "step-to-90.5"), (0.30, 0.70, 20 * MINUTE, "step-30-70-warmup")):
        look(label, f"flat {lo:.0%}, a one-off bulk load to {hi:.1%} (1 min) at {at / 60:.0f} min, flat after",
             at + 8 * HOUR, step(lo, hi, at))
    for period, phase, label in ((5 * MINUTE, 0.0, "5m"), (30 * MINUTE, 0.25, "30m"), (45 * MINUTE, 0.5, "45m"),
                                 (2 * HOUR, 0.75, "2h"), (2 * HOUR, 0.0, "2h-p0")):
        look(f"saw-{label}", f"sawtooth 60 % -> 84 %, period {period / 60:.0f} min, starting at "
             f"{60 + 24 * phase:.0f} %", max(12 * HOUR, 6 * period), sawtooth(0.60, 0.84, period, phase))
    look("evicting-at-limit", "allkeys-lru sitting at its limit (99.8 %, sd 0.1 %)", 12 * HOUR, flat(0.998),
         evicts=True, policy="allkeys-lru", noise=0.001, seed=11)
    look("evicting-fill", "allkeys-lru filling 60 % -> 100 % in 2 h, then evicting at its limit", 10 * HOUR,
         linear_fill(0.60, 2 * HOUR), evicts=True, policy="allkeys-lru")
    look("daily-cycle", "daily cycle 40 % <-> 75 % (sine, 24 h), 3 days, starting at the bottom", 3 * DAY,
         lambda t: 0.575 - 0.175 * math.cos(2 * math.pi * t / DAY))
    look("daily-batch", "50 %, a daily 2 h batch to 80 % (15 min up, 90 min held, 15 min down) at 02:00, 3 days",
         3 * DAY, lambda t: 0.50 + 0.30 * _batch((t - 2 * HOUR) % DAY))
    look("noise-70", "flat 70 % with white noise (sd 1 % of the limit)", 12 * HOUR, flat(0.70), noise=0.01, seed=70)
    look("noise-80-wander", "flat 80 % with a slow wander (AR(1), phi 0.98, sd 2 %)", 12 * HOUR, flat(0.80),
         noise=0.02, noise_phi=0.98, seed=80)
    return out


def _batch(x: float) -> float:
    """0..1: the shape of a 2 h batch starting at x = 0 (ramp 15 min, hold 90 min, ramp down 15 min)."""
    if x < 15 * MINUTE:
        return x / (15 * MINUTE)
    if x < 105 * MINUTE:
        return 1.0
    if x < 2 * HOUR:
        return (2 * HOUR - x) / (15 * MINUTE)
    return 0.0


def twin(fill: Scenario, stop: float) -> Scenario:
    """The fill's look-alike twin: the same memory, noise and restarts poll for poll until ``stop``,
    then flat at the level reached (the growth stops short of full). Every causal rule -- one whose
    state at ``stop`` depends only on the samples up to ``stop`` -- that fires at ``stop`` on the fill
    fires at ``stop`` on the twin too: a false alarm there."""
    if fill.kind != FILL:
        raise ValueError(f"{fill.name} is not a fill")
    shape = fill.shape
    level = shape(stop)
    return replace(fill, name=f"{fill.name}~stops@{stop / 60:.0f}m", kind=TWIN,
                   description=f"{fill.name} until {stop / 60:.0f} min, then flat at {level:.1%}",
                   duration=stop + TWIN_AFTER, shape=lambda t: shape(min(t, stop)), full_at=None)


def library() -> list[Scenario]:
    """Every scenario, fills first."""
    scenarios = _fills() + _lookalikes()
    names = [s.name for s in scenarios]
    assert len(names) == len(set(names)), "duplicate scenario names"
    return scenarios
