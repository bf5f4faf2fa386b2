"""The forecast on synthetic series with known answers (one sample every 15 s, 1 h forecast window).

What each shape must give: a countdown when growth has been seen long enough (at least half of
the time it announces), +Inf for steps, sawtooth cycles after their first one, noise, shrinking
and evicting stores, and nothing before a few minutes of history.
"""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.forecast import RINGS, Forecaster, PeakHistory, median
from exporter.snapshot import MemoryView, Samples

WINDOW = 3600.0
STEP = 15.0
MiB = 2**20
LIMIT = 1000 * MiB
START = 1_000_000.0


def feed(series, seconds: float, step: float = STEP, h: PeakHistory | None = None) -> PeakHistory:
    """Observe ``series(t)`` for t in [0, seconds] (t = 0 is the exporter's start)."""
    h = h or PeakHistory(WINDOW)
    t = 0.0
    while t <= seconds + 1e-9:
        h.observe(START + t, series(t))
        t += step
    return h


def left(h: PeakHistory, limit: float = LIMIT) -> float:
    est = h.estimate(limit)
    assert est is not None
    return est.seconds_until_full


def linear(start_fraction: float, fill_seconds: float, after: float = 0.0):
    """Flat at ``start_fraction`` of LIMIT until ``after``, then linear to LIMIT in ``fill_seconds``."""
    rate = (1 - start_fraction) * LIMIT / fill_seconds
    return lambda t: start_fraction * LIMIT + rate * max(0.0, t - after)


@pytest.mark.parametrize("fill, at", [(600, 300), (1800, 900), (2 * 3600, 3600), (6 * 3600, 3 * 3600),
                                      (80 * 3600, 60 * 3600)])
def test_a_linear_fill_is_told_exactly_once_seen_for_half_its_time_left(fill, at):
    h = feed(linear(0.4, fill), at)
    assert left(h) == pytest.approx(fill - at, rel=0.03)
    est = h.estimate(LIMIT)
    assert est.growth == pytest.approx(0.6 * LIMIT / fill, rel=0.03)
    assert est.basis >= (fill - at) / 2


@pytest.mark.parametrize("fill", [600, 1800, 6 * 3600, 80 * 3600])
def test_no_countdown_further_ahead_than_twice_the_growth_seen(fill):
    # A fifth of the way: the fill has been seen for a quarter of the time it has left.
    h = feed(linear(0.4, fill), max(fill / 5, 150))
    assert left(h) == math.inf
    assert h.estimate(LIMIT).basis > 0  # the growth is seen, only not long enough to extrapolate


def test_growth_after_a_long_flat_period_is_seen_from_its_own_start():
    # Flat at 45 % for 4 h, then full in 4 h: 1.5 h into the growth the countdown is exact.
    h = feed(linear(0.45, 4 * 3600, after=4 * 3600), 5.5 * 3600)
    assert left(h) == pytest.approx(2.5 * 3600, rel=0.03)


@pytest.mark.parametrize("at_fraction", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("level", [0.505, 0.705, 0.905])
def test_a_bulk_load_step_is_never_growth_wherever_it_falls(at_fraction, level):
    # Flat at 30 %, a 1 min load to ``level``, flat after: observed for 3 h, the step at
    # ``at_fraction`` of that; every poll from the step on is checked.
    at = at_fraction * 3 * 3600

    def shape(t):
        return LIMIT * (0.30 + (level - 0.30) * min(1.0, max(0.0, (t - at) / 60)))

    h = PeakHistory(WINDOW)
    t = 0.0
    while t <= 3 * 3600:
        h.observe(START + t, shape(t))
        if t >= at:
            assert left(h) == math.inf, t
        t += STEP


@pytest.mark.parametrize("period", [300, 1800, 2700, 7200])
@pytest.mark.parametrize("phase", [0.0, 0.25, 0.5, 0.75])
def test_a_sawtooth_is_not_running_out_after_its_first_cycle(period, phase):
    # 60 % -> 84 % then expiry drops it back; every poll soon after the first drop is checked.
    def shape(t):
        return LIMIT * (0.60 + 0.24 * (((t / period) + phase) % 1.0))

    # A countdown outlives a drop by at most half a fifth of the window it came from.
    # A window holds at most what was seen, so its tenth ends 1/0.9 of the drop's time from the start.
    quiet_from = (1 - phase) * period / 0.9 + STEP
    h = PeakHistory(WINDOW)
    t = 0.0
    while t <= max(12 * 3600, 6 * period):
        h.observe(START + t, shape(t))
        if t > quiet_from:
            est = h.estimate(LIMIT)
            assert est is None or est.seconds_until_full == math.inf, t
        t += STEP


def test_a_sawtooth_rising_edge_seen_from_its_start_is_told_only_when_it_would_fill_soon():
    # The first edge of a 2 h sawtooth, from 60 % at 12 %/h, is indistinguishable from a fill:
    # no countdown for its first hour (it would announce more than twice what it has seen).
    h = feed(lambda t: LIMIT * (0.60 + 0.12 * t / 3600), 3600 - STEP)
    assert left(h) == math.inf


def test_a_leak_under_a_ttl_sawtooth_is_still_seen():
    # Baseline 30 % -> 80 % in 10 h, plus a 10 min TTL sawtooth of 20 % of the limit.
    rate = 0.05 * LIMIT / 3600

    def shape(t):
        return 0.30 * LIMIT + rate * t + 0.20 * LIMIT * ((t % 600) / 600)

    h = feed(shape, 8 * 3600)
    est = h.estimate(LIMIT)
    assert est.growth == pytest.approx(rate, rel=0.1)
    peak_now = 0.30 * LIMIT + rate * 8 * 3600 + 0.20 * LIMIT
    assert est.seconds_until_full == pytest.approx((LIMIT - peak_now) / rate, rel=0.15)


def test_a_daily_cycle_is_not_growth_on_its_second_day():
    def shape(t):
        return LIMIT * (0.575 - 0.175 * math.cos(2 * math.pi * t / 86400))

    h = PeakHistory(WINDOW)
    t = 0.0
    while t <= 3 * 86400:
        h.observe(START + t, shape(t))
        if t > 86400 and int(t) % 600 == 0:
            assert left(h) == math.inf, t
        t += 60


@pytest.mark.parametrize("seed", range(10))
def test_noise_around_a_constant(seed):
    rng = random.Random(seed)
    h = PeakHistory(WINDOW)
    t = 0.0
    while t <= 6 * 3600:
        h.observe(START + t, 0.8 * LIMIT + rng.gauss(0, 0.01 * LIMIT))
        if t >= 300:
            assert left(h) == math.inf, t
        t += STEP


def test_growth_under_noise_is_still_seen():
    rng = random.Random(3)
    fill = 6 * 3600
    h = feed(lambda t: linear(0.3, fill)(t) + rng.gauss(0, 0.005 * LIMIT), 3 * 3600)
    est = h.estimate(LIMIT)
    assert est.seconds_until_full == pytest.approx(3 * 3600, rel=0.15)


def test_shrinking():
    h = feed(lambda t: 0.9 * LIMIT - 10_000 * t, 3600)
    est = h.estimate(LIMIT)
    assert est.growth == pytest.approx(-10_000, rel=0.10)
    assert est.seconds_until_full == math.inf
    assert est.basis == 0


def test_too_little_history_is_absent():
    h = feed(linear(0.4, 600), 120)  # 2 min: under half of the shortest window (5 min)
    assert h.estimate(LIMIT) is None
    assert PeakHistory(WINDOW).estimate(LIMIT) is None
    h = feed(linear(0.4, 600), 150)
    assert h.estimate(LIMIT) is not None


def test_at_or_over_the_limit_is_zero_and_evicting_stores_never_run_out():
    h = feed(linear(0.4, 3600), 1800)
    assert h.estimate(0.5 * LIMIT).seconds_until_full == 0.0
    assert h.estimate(LIMIT, evicts_when_full=True).seconds_until_full == math.inf
    assert h.estimate(None).seconds_until_full is None


def test_history_is_bounded_whatever_the_uptime_and_interval():
    h = feed(lambda t: t, 2 * 86400, step=0.5)  # two days of 0.5 s polls
    assert len(h) <= sum(n for _, n in RINGS)
    assert h.estimate(1e12).growth == pytest.approx(1.0, rel=0.01)


def test_non_finite_values_are_ignored():
    h = feed(lambda t: 1000 * t, 3600)
    h.observe(START + 3601, float("nan"))
    h.observe(START + 3602, float("inf"))
    assert h.estimate(1e12).growth == pytest.approx(1000, rel=0.05)


def test_a_gap_in_the_polls_is_not_growth_or_a_crash():
    # An outage of 2 h in a flat series: empty buckets, then the same level again.
    h = feed(lambda t: 0.5 * LIMIT, 3600)
    t = 3 * 3600.0
    while t <= 5 * 3600:
        h.observe(START + t, 0.5 * LIMIT)
        t += STEP
    assert left(h) == math.inf


def test_the_saved_points_rebuild_the_same_forecast():
    h = feed(linear(0.3, 10 * 3600), 6 * 3600)
    again = PeakHistory(WINDOW)
    kept = again.restore(h.points(), START + 6 * 3600 + 1)
    assert kept == len(h.points())
    assert again.estimate(LIMIT) == h.estimate(LIMIT)
    # Points outside the rings' reach, or from the future, are dropped.
    assert again.restore([(START - 30 * 86400, 1.0), (START + 10**9, 1.0)], START) == 0


def test_forecaster_samples():
    f = Forecaster(WINDOW)
    for i in range(1200):  # 5 h of a 10 h fill from 40 %
        out = Samples()
        t = i * STEP
        memory = MemoryView(used=linear(0.4, 36000)(t), limit=LIMIT, resident=0.2 * LIMIT + 10 * t,
                            resident_limit=LIMIT, evicts_when_full=False)
        view = f.update(START + t, memory, "redis", out)
    store = (("store", "redis"),)
    assert out.value("cache_memory_growth_bytes_per_second", store) == pytest.approx(0.6 * LIMIT / 36000, rel=0.05)
    assert out.value("cache_memory_seconds_until_full", store) == view["seconds_until_full"]
    assert view["seconds_until_full"] == pytest.approx(36000 - t, rel=0.05)
    assert out.value("cache_memory_forecast_basis_seconds", store) >= t / 2
    assert out.value("cache_resident_memory_seconds_until_full", store) == math.inf  # 8 days away
    # An evicting store at its limit: growth is still reported, the countdown is +Inf.
    memory = MemoryView(used=LIMIT, limit=LIMIT, evicts_when_full=True)
    out = Samples()
    f.update(START + 1200 * STEP, memory, "redis", out)
    assert out.value("cache_memory_seconds_until_full", store) == math.inf


def test_a_history_longer_than_the_rings_saves_only_finite_points():
    h = PeakHistory(WINDOW)
    for i in range(8 * 24 * 240):  # 8 days of 15 s polls: the 7-day ring has forgotten the start
        h.observe(START + i * STEP, 0.1 * LIMIT + i)
    points = h.points()
    assert len(points) <= sum(n for _, n in RINGS) + 1
    assert all(math.isfinite(t) and math.isfinite(v) for t, v in points)
    assert PeakHistory(WINDOW).restore(points, START + 8 * 86400) == len(points)


def test_a_restarted_process_is_forecast_from_its_own_first_poll():
    """A crash loop: each life of an app leaks from 10 % to its limit in 10 min, then dies and restarts.
    The second life rises to levels the first one reached, which the forecast would take for a cycle;
    marked ``restarted`` (a new process_start_time_seconds) it starts a new history and is told."""
    life = 600.0

    def second_life_countdown(mark_restart: bool) -> float | None:
        f = Forecaster(WINDOW)
        until = None
        ticks = [(i * STEP, i * STEP) for i in range(int(life / STEP))]  # (time, age in its life)
        ticks += [(life + 5 + i * STEP, i * STEP) for i in range(int(0.75 * life / STEP) + 1)]
        for t, age in ticks:
            memory = MemoryView(used=(0.1 + 0.9 * age / life) * LIMIT, limit=LIMIT,
                                restarted=mark_restart and t == life + 5)
            until = f.update(START + t, memory, "app", Samples()).get("seconds_until_full")
        return until  # 2.5 min before the second abort

    told = second_life_countdown(mark_restart=True)
    assert told is not None and told < 0.3 * life
    stale = second_life_countdown(mark_restart=False)
    assert stale is None or stale == math.inf or stale == 0.0


@given(st.lists(st.floats(-1e18, 1e18), min_size=1, max_size=50))
def test_median_is_the_statistics_modules(values: list[float]) -> None:
    """forecast.median stands in for statistics.median (not imported: decimal, fractions and
    random come with it); the same result, even count included."""
    assert median(values) == statistics.median(values)
    assert median(iter(values)) == statistics.median(values)
