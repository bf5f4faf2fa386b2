"""A real Node.js app caching in its own heap until V8 aborts, watched as an app target.

tests/apps/node_heap_app grows an unbounded Map at a steady rate, with per-request garbage
(what makes V8 thrash in GC as the heap fills), under --max-old-space-size=64. The exporter's
heap forecast and its GC-thrash signal must cross the alert rules' warning thresholds before
the process dies with exit 134 ("JavaScript heap out of memory"), which container OOM-kill
alerts never see.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from conftest import REPO, free_port, need, wait_until

APP = REPO / "tests" / "apps" / "node_heap_app"
MiB = 2**20
# The alert rules' warning conditions (alerts/build_rules.py), without their `for`.
FORECAST_HORIZON = 4 * 3600
FORECAST_MIN_UTILIZATION = 0.5
THRASH_MIN_UTILIZATION = 0.75
THRASH_MIN_GC_RATIO = 0.25


@pytest.fixture(scope="module")
def node_app_ready():
    need(shutil.which("node") is not None, "node not installed")
    need((APP / "node_modules" / "prom-client").exists(), "run `npm install` in tests/apps/node_heap_app")


def start_app(port: int, export_limit: bool, grow: int, churn: int) -> subprocess.Popen:
    env = {"PORT": str(port), "EXPORT_HEAP_LIMIT": "1" if export_limit else "0",
           "GROW_BYTES_PER_SEC": str(grow), "CHURN_BYTES_PER_SEC": str(churn), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([shutil.which("node"), "--max-old-space-size=64", str(APP / "app.js")], env=env,
                            cwd=APP, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import socket

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until(listening, timeout=10, message="the node app to listen")
    return proc


def app_config(port: int, **extra: object) -> dict:
    target = {"name": "node", "type": "app", "url": f"http://127.0.0.1:{port}/metrics"}
    target.update(extra)
    return {"global": {"interval": "0.25s", "timeout": "0.2s", "forecast_window": "60s"}, "targets": [target]}


def test_heap_forecast_and_thrash_warn_before_the_v8_abort(node_app_ready, exporter_factory):
    port = free_port()
    app = start_app(port, export_limit=True, grow=512 * 1024, churn=8 * MiB)
    try:
        ep = exporter_factory(app_config(port))
        m = ep.metrics()
        # Like with like: the old-generation limit (heap_size_limit minus the 48 MiB young reserve).
        assert m.value("cache_memory_limit_bytes", target="node", store="app") == 64 * MiB
        assert m.has("cache_memory_limit_info", target="node", source="runtime")
        assert m.has("app_runtime_info", target="node", runtime="nodejs")
        started = time.monotonic()
        first_forecast = first_thrash = None
        previous_hot = False
        last_util = None
        while app.poll() is None and time.monotonic() - started < 240:
            m = ep.metrics()
            now = time.monotonic() - started
            util = m.value("cache_memory_utilization_ratio", target="node")
            until = m.value("cache_memory_seconds_until_full", target="node")
            gc = m.value("app_gc_time_ratio", target="node")
            if util is not None:
                last_util = util
            if first_forecast is None and until is not None and until < FORECAST_HORIZON \
                    and util is not None and util > FORECAST_MIN_UTILIZATION:
                first_forecast = now
            hot = util is not None and gc is not None and util > THRASH_MIN_UTILIZATION and gc > THRASH_MIN_GC_RATIO
            if first_thrash is None and hot and previous_hot:  # two consecutive scrapes
                first_thrash = now
            previous_hot = hot
            time.sleep(0.25)
        died = time.monotonic() - started
        code = app.wait(10)
        stderr = app.stderr.read().decode(errors="replace")
        # SIGABRT: a shell or a container runtime reports it as exit code 134 (128 + 6).
        assert code in (134, -6), (code, stderr[-500:])
        assert "heap out of memory" in stderr.lower() or "heap limit" in stderr.lower()
        assert first_forecast is not None and first_forecast < died
        assert first_thrash is not None and first_thrash < died, f"GC thrash not seen; utilization {last_util}"
        print(f"node: died (exit {code}) after {died:.1f} s at {last_util:.0%} of the old-generation limit; "
              f"forecast warning {died - first_forecast:.1f} s before, GC-thrash warning "
              f"{died - first_thrash:.1f} s before")
        wait_until(lambda: ep.metrics().value("cache_up", target="node") == 0, timeout=10)
        failed = {s[1]["reason"] for s in ep.metrics().find("cache_exporter_poll_errors_total", target="node")
                  if s[2] > 0}
        # The app is gone, the exporter is not. In its last seconds V8 pauses for GC longer than the
        # 0.2 s timeout, more so on a busy machine: a timeout then is the truth, not a fault.
        assert failed and failed <= {"refused", "reset", "timeout"}, failed
        assert ep.proc.poll() is None
    finally:
        if app.poll() is None:
            app.kill()


def test_without_the_limit_metric_the_configured_heap_limit_is_used(node_app_ready, exporter_factory):
    port = free_port()
    app = start_app(port, export_limit=False, grow=64 * 1024, churn=0)
    try:
        ep = exporter_factory(app_config(port, heap_limit="64MiB"))
        m = ep.metrics()
        assert m.value("cache_memory_limit_bytes", target="node") == 64 * MiB
        assert m.has("cache_memory_limit_info", target="node", source="config")
        used = m.value("cache_memory_used_bytes", target="node")
        total = m.value("app_heap_total_used_bytes", target="node")
        assert 0 < used < total  # old generation only: the young generation is not what runs out
        assert m.value("cache_items", target="node", store="app", cache="sessions") > 0
        hits = m.value("cache_hits_total", target="node", cache="sessions")
        misses = m.value("cache_misses_total", target="node", cache="sessions")
        # The app looks up 100 keys/s, ~5 in 6 of them present: both outcomes show by the first poll.
        assert hits is not None and hits > 0 and misses > 0
        # Without heap_limit and without the metric there is no limit to speak of: absent, not NaN.
        ep2 = exporter_factory(app_config(port))
        m2 = ep2.metrics()
        assert not m2.has("cache_memory_limit_bytes", target="node")
        assert m2.has("cache_memory_used_bytes", target="node")
    finally:
        app.kill()
