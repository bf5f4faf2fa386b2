"""The forecast against real redis-servers filled at a steady rate."""

from __future__ import annotations

import math
import time

from conftest import redis_target, wait_until
from loadgen import SteadyWriter

MiB = 2**20


def fast_forecast() -> dict:
    # The defaults scaled by 1/60 (a 15 s interval, a 1 h window), the poll deadline kept for loopback.
    return {"interval": "0.25s", "timeout": "0.2s", "forecast_window": "60s"}


def test_noeviction_countdown_matches_the_first_oom(redis_factory, exporter_factory):
    server = redis_factory(args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
    ep = exporter_factory({"global": fast_forecast(), "targets": [redis_target("r", server)]})
    writer = SteadyWriter(server.client())
    writer.start()
    try:
        # A countdown is given once the growth has been seen for half of the time it announces
        # (a third of the way into this ~40 s fill); take the prediction 2 s after that.
        wait_until(lambda: math.isfinite(ep.metrics().value("cache_memory_seconds_until_full", target="r")
                                         or math.inf), timeout=60, message="the countdown to appear")
        time.sleep(2)
        asked = time.monotonic()
        m = ep.metrics()
        until_full = m.value("cache_memory_seconds_until_full", target="r")
        growth = m.value("cache_memory_growth_bytes_per_second", target="r")
        assert writer.first_oom is None, "filled up before the prediction was taken"
        assert 0 < until_full < math.inf and growth > 0
        wait_until(lambda: writer.first_oom is not None, timeout=120, message="the first -OOM reply")
        actual = writer.first_oom - asked
        print(f"forecast: predicted {until_full:.1f} s to full, first -OOM came after {actual:.1f} s")
        assert abs(until_full - actual) <= 0.25 * actual, (until_full, actual)
        # At the limit the countdown reaches 0, and the rejections are counted.
        wait_until(lambda: ep.metrics().value("cache_memory_seconds_until_full", target="r") == 0, timeout=10)
        # The poll that sees the limit can come before the writer's first refused write is counted.
        wait_until(lambda: (ep.metrics().value("cache_write_rejections_total", target="r") or 0) > 0, timeout=10,
                   message="the rejected writes counted")
        assert ep.metrics().value("cache_evicts_when_full", target="r") == 0
    finally:
        writer.halt()


def test_evicting_store_at_its_limit_has_no_countdown(redis_factory, exporter_factory):
    server = redis_factory(args=["--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru"])
    ep = exporter_factory({"global": fast_forecast(), "targets": [redis_target("r", server)]})
    writer = SteadyWriter(server.client())
    writer.start()
    try:
        wait_until(lambda: (ep.metrics().value("cache_evictions_total", target="r") or 0) > 100, timeout=90,
                   message="evictions")
        wait_until(lambda: ep.metrics().has("cache_memory_seconds_until_full", target="r"), timeout=30)
        for _ in range(8):  # stays +Inf at the limit, poll after poll
            m = ep.metrics()
            assert m.value("cache_memory_seconds_until_full", target="r") == math.inf
            assert m.value("cache_memory_utilization_ratio", target="r") > 0.9
            time.sleep(0.5)
        assert writer.first_oom is None
        assert m.value("cache_evictions_total", target="r") == m.value("redis_evicted_keys_total", target="r")
        assert m.value("cache_evicts_when_full", target="r") == 1
        # The hard-limit forecast still runs for an evicting store.
        assert m.has("cache_resident_memory_seconds_until_full", target="r")
    finally:
        writer.halt()
