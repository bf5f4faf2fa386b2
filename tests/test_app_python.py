"""Real Python apps watched as ``type: app`` targets.

tests/apps/django_app/app.py is a one-module Django app caching in a real redis-server through
django-prometheus' django-redis backend with ``IGNORE_EXCEPTIONS: True``; its /metrics is
django-prometheus' view. tests/apps/django_app/plain_app.py is a bare prometheus_client
``start_http_server`` process. The exporter must report the app's resident memory against the
configured limit, the app's cache hits/misses exactly as django-prometheus counted them, and —
when Redis goes away and the app keeps answering 200 from a silently disabled cache — the
swallowed backend errors while ``cache_up`` stays 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REPO, Metrics, fast_global, free_port, stop_process, wait_until
from fakeserver import rss_bytes

APPS = REPO / "tests" / "apps" / "django_app"
MiB = 2**20
HITS, MISSES, ERRORS = "cache_hits_total", "cache_misses_total", "app_cache_backend_errors_total"


class App:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def metrics(self) -> Metrics:
        status, body = self.get("/metrics")
        assert status == 200, status
        return Metrics(body)

    def own(self, name: str) -> float:
        """One of django-prometheus' cache counters for backend="redis" (0 while it has no sample)."""
        return self.metrics().value(name, backend="redis") or 0.0

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """``start_app("app.py", REDIS_URL=...)``: a script of tests/apps/django_app on a free port."""
    apps: list[App] = []

    def start(script: str, **env: str) -> App:
        port = free_port()
        log = tmp_path / f"{script}-{len(apps)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, str(APPS / script)], cwd=APPS, stdout=out,
                                    stderr=subprocess.STDOUT,
                                    env={**os.environ, "APP_PORT": str(port), "PYTHONUNBUFFERED": "1", **env})
        app = App(proc, port, log)
        apps.append(app)

        def serving() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{script} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            return app.get("/metrics")[0] == 200
        wait_until(serving, timeout=20, message=f"{script} to serve /metrics")
        return app

    yield start
    for app in apps:
        stop_process(app.proc, grace=5)


def app_target(name: str, app: App, **extra: object) -> dict:
    target: dict[str, object] = {"name": name, "type": "app", "url": f"http://127.0.0.1:{app.port}/metrics"}
    target.update(extra)
    return target


@pytest.fixture
def django(redis_server, start_app, exporter_factory):
    """(redis, app, exporter) with the Django app polled as target "django", memory_limit 512MiB."""
    app = start_app("app.py", REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0")
    ep = exporter_factory({"global": fast_global(), "targets": [
        app_target("django", app, runtime="python", memory_limit="512MiB")]})
    ep.wait_polls("django", 1)
    return redis_server, app, ep


def request_items(app: App, keys: range) -> list[str]:
    """GET /item/<n> for each key; every request must answer 200. Returns "hit"/"miss" per request."""
    outcomes = []
    for n in keys:
        status, body = app.get(f"/item/{n}")
        assert status == 200, (n, status, body)
        outcomes.append(body.split()[0])
    return outcomes


def exporter_matches_app(ep, app: App) -> Metrics:
    """Wait until the exporter's hits/misses/errors for cache="redis" equal what the app counted now."""
    want = {HITS: app.own("django_cache_get_hits_total"), MISSES: app.own("django_cache_get_misses_total"),
            ERRORS: app.own("django_cache_get_fail_total")}

    last: dict[str, object] = {}

    def seen() -> bool:
        m = ep.metrics()
        last.update({HITS: m.value(HITS, target="django", store="app", cache="redis") or 0.0,
                     MISSES: m.value(MISSES, target="django", store="app", cache="redis") or 0.0,
                     ERRORS: m.value(ERRORS, target="django", cache="redis") or 0.0})
        return last == want
    try:
        wait_until(seen, timeout=10, message=f"exporter to report {want}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; exporter last said {last}, "
                             f"last poll error: {ep.target('django')['last_error']}") from None
    return ep.metrics()


def assert_up(ep, name: str, m: Metrics) -> None:
    assert m.value("cache_up", target=name, store="app") == 1, f"last poll error: {ep.target(name)['last_error']}"


def test_django_app_memory_against_configured_limit(django):
    _, app, ep = django
    m = ep.metrics()
    assert_up(ep, "django", m)
    assert m.value("app_up", target="django") == 1
    assert m.value("app_runtime_info", target="django", runtime="python") == 1
    used = m.value("cache_memory_used_bytes", target="django", store="app")
    rss = app.rss()
    assert used == pytest.approx(rss, rel=0.2), (used, rss)
    assert used == pytest.approx(app.metrics().value("process_resident_memory_bytes"), rel=0.2)
    assert m.value("cache_memory_limit_bytes", target="django", store="app") == 512 * MiB
    assert m.value("cache_memory_limit_info", target="django", store="app", source="config") == 1
    assert m.value("cache_memory_utilization_ratio", target="django", store="app") == pytest.approx(used / (512 * MiB))
    assert m.value("cache_resident_memory_bytes", target="django", store="app") == used  # Python: RSS is the heap
    assert m.value("cache_resident_memory_limit_bytes", target="django", store="app") == 512 * MiB


def test_django_cache_hits_and_misses_match_django_prometheus(django):
    _, app, ep = django
    keys = range(30)
    assert request_items(app, keys) == ["miss"] * 30
    assert request_items(app, keys) == ["hit"] * 30
    assert app.own("django_cache_get_hits_total") == 30
    assert app.own("django_cache_get_misses_total") == 30
    assert app.own("django_cache_get_total") == 60
    m = exporter_matches_app(ep, app)
    assert m.value(HITS, target="django", store="app", cache="redis") == 30
    assert m.value(MISSES, target="django", store="app", cache="redis") == 30
    assert (m.value(ERRORS, target="django", cache="redis") or 0) == 0  # absent: no failure yet
    assert_up(ep, "django", m)


def test_redis_down_is_silent_degradation_the_exporter_shows(django):
    redis_server, app, ep = django
    request_items(app, range(10))
    request_items(app, range(10))
    m = exporter_matches_app(ep, app)
    assert (m.value(ERRORS, target="django", cache="redis") or 0) == 0
    hits_before = m.value(HITS, target="django", store="app", cache="redis")
    assert hits_before == 10

    redis_server.kill()
    after_stop = 25
    # Every request still answers 200: the get fails, is swallowed, reads as a miss.
    assert request_items(app, range(after_stop)) == ["miss"] * after_stop
    assert app.own("django_cache_get_fail_total") == after_stop
    m = exporter_matches_app(ep, app)
    assert m.value(ERRORS, target="django", cache="redis") >= after_stop
    assert m.value(HITS, target="django", store="app", cache="redis") == hits_before  # no hit while down
    # The app's metrics endpoint is fine, so the target is up: only the errors counter tells.
    assert_up(ep, "django", m)
    assert m.value("app_up", target="django") == 1
    for _ in range(2):  # ... and stays up over further polls
        assert ep.wait_polls("django", 1).value("cache_up", target="django", store="app") == 1

    redis_server.restart()  # same port, empty (no persistence)
    errors_down = m.value(ERRORS, target="django", cache="redis")
    assert request_items(app, range(10)) == ["miss"] * 10  # refilled ...
    assert request_items(app, range(10)) == ["hit"] * 10  # ... and served from Redis again
    m = exporter_matches_app(ep, app)
    assert m.value(ERRORS, target="django", cache="redis") == errors_down  # stopped rising
    assert m.value(HITS, target="django", store="app", cache="redis") == hits_before + 10
    assert_up(ep, "django", m)


def test_plain_prometheus_client_app_auto_detected_without_a_limit(start_app, exporter_factory):
    app = start_app("plain_app.py")
    ep = exporter_factory({"global": fast_global(), "targets": [app_target("plain", app)]})  # runtime: auto
    m = ep.wait_polls("plain", 1)
    assert_up(ep, "plain", m)
    assert m.value("app_runtime_info", target="plain", runtime="python") == 1
    used = m.value("cache_memory_used_bytes", target="plain", store="app")
    assert used == pytest.approx(app.rss(), rel=0.2)
    assert m.value("cache_resident_memory_bytes", target="plain", store="app") == used
    # No memory_limit, no heap_limit, and Python has no heap limit of its own: no limit series at
    # all (not NaN, not 0), and nothing derived from one.
    for family in ("cache_memory_limit_bytes", "cache_memory_limit_info", "cache_memory_utilization_ratio",
                   "cache_memory_headroom_bytes", "cache_resident_memory_limit_bytes"):
        assert not m.has(family, target="plain"), (family, m.find(family, target="plain"))
    plain_lines = [line for line in m.text.splitlines() if 'target="plain"' in line]
    assert plain_lines and not [line for line in plain_lines if line.split()[-1] in ("NaN", "+Inf", "-Inf")]
    assert not m.has(HITS, target="plain") and not m.has(ERRORS, target="plain")  # no cache metrics
