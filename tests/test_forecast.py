"""The forecast on synthetic series with known answers (one sample every 15 s, 1 h window)."""

from __future__ import annotations

import math
import random

import pytest

from exporter.forecast import BUCKETS, Forecaster, PeakHistory
from exporter.snapshot import MemoryView, Samples

WINDOW = 3600.0
STEP = 15.0
MiB = 2**20


def feed(series, seconds: float = WINDOW, step: float = STEP, start: float = 1_000_000.0) -> PeakHistory:
    h = PeakHistory(WINDOW)
    t = 0.0
    while t <= seconds:
        h.observe(start + t, series(t))
        t += step
    return h


def test_linear_growth_within_ten_percent():
    rate = 2048.0  # bytes per second
    h = feed(lambda t: 100 * MiB + rate * t)
    limit = 200 * MiB
    est = h.estimate(limit)
    assert est.growth == pytest.approx(rate, rel=0.10)
    truth = (limit - (100 * MiB + rate * WINDOW)) / rate
    assert est.seconds_until_full == pytest.approx(truth, rel=0.10)


@pytest.mark.parametrize("period", [120, 600, 900, 1200])  # up to a third of the window
@pytest.mark.parametrize("phase", [0.0, 0.25, 0.5, 0.75])
def test_sawtooth_under_the_limit_is_not_running_out(period, phase):
    # Fills from 60 % to 84 % of the limit, then expiry or a cron cleanup drops it back.
    limit = 100 * MiB
    h = feed(lambda t: limit * (0.60 + 0.24 * (((t + phase * period) % period) / period)))
    est = h.estimate(limit)
    assert est.seconds_until_full == math.inf or est.seconds_until_full > 10 * WINDOW


def test_sawtooth_riding_on_real_growth_still_warns():
    limit = 150 * MiB
    rate = 4096.0
    h = feed(lambda t: 100 * MiB + rate * t + 20 * MiB * ((t % 300) / 300))
    est = h.estimate(limit)
    assert est.growth == pytest.approx(rate, rel=0.15)
    # The envelope follows the sawtooth's peaks: ~134 MiB now, 16 MiB left at 4 KiB/s.
    peak_now = 100 * MiB + rate * WINDOW + 20 * MiB
    assert est.seconds_until_full == pytest.approx((limit - peak_now) / rate, rel=0.15)


def test_step_then_flat():
    # A bulk load at 10 minutes, flat for the remaining 50.
    h = feed(lambda t: 50 * MiB if t < 600 else 90 * MiB)
    est = h.estimate(100 * MiB)
    assert est.seconds_until_full == math.inf
    assert abs(est.growth) < 1.0


@pytest.mark.parametrize("seed", range(10))
def test_noise_around_a_constant(seed):
    rng = random.Random(seed)
    h = feed(lambda t: 80 * MiB + rng.gauss(0, 2 * MiB))
    est = h.estimate(100 * MiB)
    assert est.seconds_until_full == math.inf or est.seconds_until_full > 10 * WINDOW
    assert abs(est.growth) * WINDOW < 4 * MiB  # the trend is a small part of the noise


def test_growth_under_noise_is_still_seen():
    rng = random.Random(3)
    rate = 1500.0  # ~5 MiB/h under 1 MiB of noise
    h = feed(lambda t: 50 * MiB + rate * t + rng.gauss(0, MiB))
    est = h.estimate(100 * MiB)
    assert est.growth == pytest.approx(rate, rel=0.2)
    assert est.seconds_until_full < 10 * WINDOW


def test_shrinking():
    h = feed(lambda t: 90 * MiB - 1000 * t)
    est = h.estimate(100 * MiB)
    assert est.growth == pytest.approx(-1000, rel=0.10)
    assert est.seconds_until_full == math.inf


def test_too_little_history_is_absent():
    h = feed(lambda t: MiB + 1000 * t, seconds=WINDOW * 0.2)
    assert h.estimate(100 * MiB) is None
    assert PeakHistory(WINDOW).estimate(100 * MiB) is None
    one = PeakHistory(WINDOW)
    one.observe(0, 5)
    assert one.estimate(10) is None


def test_at_or_over_the_limit_is_zero_and_evicting_stores_never_run_out():
    h = feed(lambda t: 50 * MiB + 1000 * t)
    assert h.estimate(10 * MiB).seconds_until_full == 0.0
    assert h.estimate(200 * MiB, evicts_when_full=True).seconds_until_full == math.inf
    assert h.estimate(None).seconds_until_full is None


def test_history_is_bounded_whatever_the_uptime_and_interval():
    h = feed(lambda t: t, seconds=24 * 3600, step=0.5)  # a day of 0.5 s polls
    assert len(h) <= BUCKETS + 1
    assert h.estimate(1e9).growth == pytest.approx(1.0, rel=0.01)


def test_non_finite_values_are_ignored():
    h = feed(lambda t: 1000 * t)
    h.observe(2_000_000, float("nan"))
    h.observe(2_000_001, float("inf"))
    assert h.estimate(1e12).growth == pytest.approx(1000, rel=0.05)


def test_forecaster_samples():
    f = Forecaster(WINDOW)
    out = Samples()
    for i in range(300):
        out = Samples()
        memory = MemoryView(used=MiB + 100 * i * STEP, limit=1000 * MiB, resident=4 * MiB + 10 * i * STEP,
                            resident_limit=8 * MiB, evicts_when_full=False)
        view = f.update(1000.0 + i * STEP, memory, "redis", out)
    store = (("store", "redis"),)
    assert out.value("cache_memory_growth_bytes_per_second", store) == pytest.approx(100, rel=0.05)
    assert out.value("cache_memory_seconds_until_full", store) == view["seconds_until_full"] > 0
    assert out.value("cache_resident_memory_seconds_until_full", store) == pytest.approx(
        (8 * MiB - (4 * MiB + 10 * 299 * STEP)) / 10, rel=0.1)
    # An evicting store at its limit: growth is still reported, the countdown is +Inf.
    memory = MemoryView(used=MiB, limit=MiB, evicts_when_full=True)
    out = Samples()
    f.update(1000.0 + 300 * STEP, memory, "redis", out)
    assert out.value("cache_memory_seconds_until_full", store) == math.inf
