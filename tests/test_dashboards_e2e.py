"""Every dashboard panel and every alert rule against a real Prometheus scraping the exporter.

One environment for the module, all real components:

* redis-server "sessions": maxmemory 3mb, allkeys-lru, keys with and without TTL, a steady load of
  hits, misses and writes (so it evicts and expires), one WRONGTYPE error (errorstats);
* redis-server "nolimit": maxmemory 0 (the audit finding, the "no limit" case), growing steadily;
* redis-server "overfull": maxmemory 0 and a memory_limit of 2 MiB under its data and its RSS: at
  both limits already, a countdown of 0 to each (the forecast gives a countdown only when the growth
  has been seen for at least half of it, which a slow fill never is within this test);
* memcached "fragments": -m 8, automove off, small items that took every page and were deleted,
  then large ones evicting within their one page: slab calcification; hits and misses;
* memcached "objects": -m 16 -M (no evictions), filling steadily: a finite time until full; its
  per-prefix view (metadump) on, as is the sampled one (SCAN + MEMORY USAGE) of "sessions";
* the Node.js prom-client app (tests/apps/node_heap_app, growing gently) as ``type: app``;
* the Django app (tests/apps/django_app) caching in "sessions" through django-redis as an ACL user
  allowed only some keys: hits, misses and swallowed backend errors (``app_cache_backend_errors_total``);
* a Python app in this process with a bounded LRU cache and Micrometer's cache metric names
  (``cache_evictions_total{cache}``: in-process evictions, which neither app above exports), and
  a second one ("overgrown") whose memory_limit is under this process's resident memory: a heap and
  a hard limit already reached, so the app dashboard's countdowns have data;
* nginx with ``proxy_cache_valid any 3m`` in front of an origin with one path down for good, one
  that fails, then recovers (an error served from the cache, then a stale error after recovery),
  one served by an inner cache tier (``Age``, ``Cache-Control``) and a redirect loop, probed as
  ``type: http_cache`` with ``bypass: {query_param: cb}``;
* the exporter polling all of them every second (forecast window 1m), scraped every second by a
  real Prometheus that loads our alert rules at 1/100 time scale (so ``ALERTS`` has data).

``test_every_panel_query_returns_data``: each query of each panel (and annotation) of
dashboards/*.json, with its variables set as Grafana would set them here, must parse and return
data (a number; NaN shows nothing), and every alert rule must parse.
``test_every_metric_name_used_exists``: every metric name a dashboard or an alert rule uses must
exist in this environment (on the exporter's /metrics, or in Prometheus: ``up``, ``ALERTS``).
Without dashboards/*.json both tests cover the alert rules alone.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from conftest import (
    BINARIES,
    BINARIES_MEMCACHED,
    REPO,
    ExporterProcess,
    MemcachedServer,
    Metrics,
    RedisServer,
    free_port,
    load_script,
    memcached_target,
    need,
    redis_target,
    start_exporter,
    stop_process,
    wait_until,
)
from nginx import Nginx, nginx_binary
from promlab import (
    DASHBOARDS,
    PROMETHEUS,
    Choice,
    LruApp,
    PathUpstream,
    Prometheus,
    PromQLSyntaxError,
    dashboard_files,
    load_build_rules,
    metric_names,
    panel_queries,
    poll_until,
    raw_panel_queries,
    rule_exprs,
    substitute,
    variables_of,
    variables_used,
)

# Setting up takes ~20-30 s (forecasts need a few seconds of their 1m window; the scaled alerts 18 s);
# the whole file ~30 s when every panel has data, up to RETRY_EMPTY_FOR more when some have none.
pytestmark = pytest.mark.timeout(240)

# The alert rules' time constants at 1/100, so the `for`s (30m -> 18 s) stay within the test. Prometheus
# scrapes every second, not every 0.15 s the scale implies, so the range windows are floored at four
# scrapes: a 3m window scaled to 1.8 s held the two samples increase() needs only when no scrape was
# late, and CacheHTTPStaleErrorAfterRecovery or AppCacheBackendFailing then never fired on a busy machine.
SCALE = 1 / 100
SCRAPE_INTERVAL = 1.0
MIN_WINDOW = 4 * SCRAPE_INTERVAL
NODE_APP = REPO / "tests" / "apps" / "node_heap_app"
DJANGO_APP = REPO / "tests" / "apps" / "django_app" / "app.py"
KiB, MiB = 2**10, 2**20
RETRY_EMPTY_FOR = 30.0  # rates need two samples in their window; give empty panels this long
SETTLE_TIMEOUT = 120.0  # how long the fixture waits for the conditions below (~15-30 s when all is well)


@dataclass
class Env:
    prom: Prometheus
    exporter: ExporterProcess
    timings: dict[str, float]
    stale_until: float  # monotonic time when nginx's cached 503 (valid 3m) expires: no stale error after


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def _start(stack: ExitStack, cmd: list[str], log: Path, **kw: object) -> subprocess.Popen:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kw)  # type: ignore[call-overload]
    stack.callback(stop_process, proc)
    return proc


def _alive(proc: subprocess.Popen, log: Path, what: str) -> None:
    if proc.poll() is not None:
        raise AssertionError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")


def start_lab_exporter(stack: ExitStack, tmp: Path, config: dict) -> ExporterProcess:
    """``cache-exporter run`` as conftest starts it, stopped with the rest of the environment."""
    ep = start_exporter(tmp, config)
    stack.callback(stop_process, ep.proc)
    return ep


class Load(threading.Thread):
    """Steady traffic, ten rounds a second: writes past the limits, TTLs, growth, hits and misses,
    and app requests that hit, miss and fail."""

    def __init__(self, sessions: RedisServer, nolimit: RedisServer, fragments: MemcachedServer,
                 objects: MemcachedServer, lru: LruApp, django_port: int) -> None:
        super().__init__(daemon=True)
        self.sessions, self.nolimit = sessions.client(), nolimit.client()
        self.mc, self.objects, self.lru = fragments.client(), objects.client(), lru
        self.django = f"http://127.0.0.1:{django_port}"
        self.halt = threading.Event()
        self.errors: list[str] = []
        self.i = 0

    def run(self) -> None:
        rng = random.Random(7)
        value, small, big = "v" * KiB, b"s" * 100, b"b" * 20 * KiB
        while not self.halt.is_set():
            started = time.monotonic()
            try:
                self.i += 1
                i = self.i
                pipe = self.sessions.pipeline(transaction=False)
                for k in range(5):
                    pipe.set(f"s:{i}:{k}", value)  # past maxmemory: evictions
                pipe.set(f"t:{i}", "x" * 100, px=1500)  # expirations
                pipe.get(f"s:{max(1, i - rng.randint(0, 20))}:0")  # hits (mostly)
                pipe.get(f"missing:{i}")  # misses
                pipe.execute()
                self.nolimit.set(f"n:{i}", value)  # no maxmemory, growing ~10 KB/s (toward the host's memory)
                self.nolimit.get(f"n:{rng.randint(0, i + 100)}")
                self.mc.set(f"small:{i}", small)  # into the class with free chunks
                if i % 2 == 0:
                    self.mc.set(f"big:{i}", big)  # evicting within its single page: calcified
                self.mc.get(f"small:{max(1, i - rng.randint(0, 50))}")
                self.mc.get(f"nothing:{i}")
                self.objects.set_many({f"obj:{i}:{k}": value.encode() * 4 for k in range(5)})  # ~200 KB/s
                self.objects.get(f"obj:{max(1, i - 3)}:0")
                self.lru.get(f"product:{rng.randint(0, 150)}")  # 100 entries: hits, misses, evictions
                if i % 3 != 2:
                    # 0-9 are allowed to the app's ACL user (hits and misses), 10-19 are not (errors):
                    # one of each, so a slow round still leaves errors in AppCacheBackendFailing's window.
                    key = rng.randint(0, 9) if i % 3 == 0 else rng.randint(10, 19)
                    with urllib.request.urlopen(f"{self.django}/item/{key}", timeout=5) as resp:
                        resp.read()
            except Exception as exc:  # keep loading; the tests report missing data, not this thread
                if len(self.errors) < 20:
                    self.errors.append(repr(exc))
            self.halt.wait(max(0.0, 0.1 - (time.monotonic() - started)))

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


def _seed(sessions: RedisServer, nolimit: RedisServer, overfull: RedisServer, fragments: MemcachedServer) -> None:
    client = sessions.client()
    pipe = client.pipeline(transaction=False)
    for n in range(4000):  # ~4 MiB into a 3 MiB store: it evicts from the start
        pipe.set(f"seed:{n}", "v" * KiB, ex=3600 if n % 2 else None)
    pipe.execute()
    client.lpush("a-list", "x")
    try:
        client.get("a-list")
    except redis.exceptions.ResponseError:  # WRONGTYPE: redis_errors_total{err="WRONGTYPE"} exists
        pass
    nolimit.client().mset({f"n:{n}": "v" * 100 for n in range(500)})
    overfull.client().mset({f"o:{n}": "v" * KiB for n in range(3000)})  # ~4 MiB used, over its 2 MiB memory_limit
    # Slab calcification (as in test_memcached_real): small items take every page and are deleted;
    # large items then evict within the one page of their class while the small class sits on free
    # chunks, and automove is off.
    mc = fragments.client()
    small = [f"s{n}" for n in range(60000)]
    for start in range(0, len(small), 2000):
        mc.set_many({k: b"x" * 100 for k in small[start:start + 2000]}, noreply=True)
    for start in range(0, len(small), 2000):
        mc.delete_many(small[start:start + 2000], noreply=True)
    for n in range(400):
        mc.set(f"L{n}", b"y" * 20000, noreply=True)
    mc.version()  # memcached answers in order: every noreply command above is done


def wanted_names() -> dict[str, set[str]]:
    """Metric name -> where it is used ("rule X", "uid / panel")."""
    used: dict[str, set[str]] = {}
    for name, expr in rule_exprs():
        for metric in metric_names(expr):
            used.setdefault(metric, set()).add(f"rule {name}")
    for path in dashboard_files():
        dashboard = json.loads(path.read_text())
        uid = dashboard.get("uid") or path.stem
        for title, expr in raw_panel_queries(dashboard):
            for metric in metric_names(_any_values(expr)):
                used.setdefault(metric, set()).add(f"{uid} / {title}")
    return used


def _any_values(expr: str) -> str:
    """``expr`` with every variable set to something that parses (names do not depend on it)."""
    return substitute(expr, {name: Choice([".*"], ".*") for name in variables_used(expr)})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    need(PROMETHEUS is not None, "prometheus not installed")
    need(BINARIES["redis7"] is not None, "redis-server not installed")
    need(BINARIES_MEMCACHED is not None, "memcached not installed")
    need(nginx_binary() is not None, "nginx not installed")
    need(shutil.which("node") is not None, "node not installed")
    need((NODE_APP / "node_modules" / "prom-client").exists(), "run `npm install` in tests/apps/node_heap_app")
    tmp = tmp_path_factory.mktemp("dashboards-e2e")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with ExitStack() as stack:
        # Stores and apps, started side by side.
        sessions = RedisServer(BINARIES["redis7"], tmp / "sessions",  # type: ignore[arg-type]
                               args=["--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru"])
        nolimit = RedisServer(BINARIES["redis7"], tmp / "nolimit", args=["--maxmemory", "0"])  # type: ignore[arg-type]
        overfull = RedisServer(BINARIES["redis7"], tmp / "overfull", args=["--maxmemory", "0"])  # type: ignore[arg-type]
        fragments = MemcachedServer(tmp / "fragments", args=["-m", "8", "-o", "slab_automove=0"])
        objects = MemcachedServer(tmp / "objects", args=["-m", "16", "-M"])
        for server in (sessions, nolimit, overfull, fragments, objects):
            stack.callback(server.kill)
            server.start()
        node_port, django_port = free_port(), free_port()
        node = _start(stack, [shutil.which("node") or "node", "--max-old-space-size=64", str(NODE_APP / "app.js")],
                      tmp / "node.log", cwd=NODE_APP,
                      env={"PORT": str(node_port), "EXPORT_HEAP_LIMIT": "1", "GROW_BYTES_PER_SEC": str(128 * KiB),
                           "CHURN_BYTES_PER_SEC": str(2 * MiB), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        sessions.client().acl_setuser("app", enabled=True, passwords=["+app-secret"], keys=[":1:item:?"],
                                      commands=["+@all"])
        django = _start(stack, [sys.executable, str(DJANGO_APP)], tmp / "django.log", cwd=DJANGO_APP.parent,
                        env={**os.environ, "APP_PORT": str(django_port), "PYTHONUNBUFFERED": "1",
                             "REDIS_URL": f"redis://app:app-secret@127.0.0.1:{sessions.port}/0"})
        upstream = PathUpstream(always_failing=("/api/outage",), inner_cache=("/api/catalog",), failing=True)
        stack.callback(upstream.stop)
        (tmp / "nginx").mkdir()
        proxy = Nginx(tmp / "nginx", upstream, "proxy_cache_valid any 3m;")  # type: ignore[arg-type]
        stack.callback(proxy.stop)
        lru = LruApp(capacity=100)
        stack.callback(lru.stop)
        overgrown = LruApp(capacity=10, cache="sessions")
        stack.callback(overgrown.stop)
        _seed(sessions, nolimit, overfull, fragments)
        wait_until(lambda: (_alive(node, tmp / "node.log", "node app"), _listening(node_port))[1], timeout=15,
                   message="the node app to listen")
        wait_until(lambda: (_alive(django, tmp / "django.log", "django app"),
                            _http_ok(f"http://127.0.0.1:{django_port}/metrics"))[1],
                   timeout=30, message="the django app to serve /metrics")
        timings["stores and apps up"] = time.monotonic() - t0

        config = {
            "global": {"interval": "1s", "timeout": "0.8s", "forecast_window": "1m"},
            "targets": [
                redis_target("sessions", sessions, memory_limit="256MiB", role="cache", prefixes={"interval": "1s"}),
                redis_target("nolimit", nolimit),
                redis_target("overfull", overfull, memory_limit="2MiB"),
                memcached_target("fragments", fragments, memory_limit="64MiB"),
                memcached_target("objects", objects, memory_limit="64MiB", prefixes={"interval": "1s"}),
                {"name": "node", "type": "app", "url": f"http://127.0.0.1:{node_port}/metrics",
                 "memory_limit": "512MiB"},
                {"name": "django", "type": "app", "url": f"http://127.0.0.1:{django_port}/metrics",
                 "runtime": "python", "memory_limit": "512MiB"},
                {"name": "catalog-service", "type": "app", "url": lru.url, "runtime": "python",
                 "memory_limit": "1GiB"},
                {"name": "overgrown", "type": "app", "url": overgrown.url, "runtime": "python",
                 "memory_limit": "16MiB"},
                {"name": "edge", "type": "http_cache", "url": proxy.url, "interval": "1s", "timeout": "0.5s",
                 "paths": ["/api/outage", "/api/recovered", "/api/catalog", "/loop"], "max_redirects": 2,
                 "bypass": {"query_param": "cb"}},
            ],
        }
        exporter = start_lab_exporter(stack, tmp, config)
        stale_until = time.monotonic() + 180  # the first probe round (before /readyz) cached the 503s
        timings["exporter ready"] = time.monotonic() - t0

        load = Load(sessions, nolimit, fragments, objects, lru, django_port)
        load.start()
        stack.callback(load.stop)

        rules = tmp / "rules.yml"
        rules.write_text(load_build_rules().render(scale=SCALE, min_window=MIN_WINDOW))
        prom = Prometheus(tmp / "prometheus", [f"127.0.0.1:{exporter.port}"], [rules],
                          scrape_interval=f"{SCRAPE_INTERVAL:g}s")
        stack.callback(prom.stop)
        prom.wait_ready()
        timings["prometheus ready"] = time.monotonic() - t0

        # The 503 of /api/recovered is in nginx's cache (served as a HIT): the origin recovers, and
        # for the rest of its 3 minutes the cache serves a stale error (1 minute was too short for a busy
        # machine to get Prometheus up and the scaled alert firing).
        recovered = f"{proxy.url}/api/recovered"
        wait_until(lambda: exporter.metrics().value("http_cache_error_from_cache", target="edge", url=recovered) == 1,
                   timeout=15, interval=0.2, message="the cached 503")
        upstream.failing = False
        timings["origin recovered"] = time.monotonic() - t0

        # Wait (in Prometheus) for the series behind the conditions the panels show: a forecast for
        # each store, the stale error, evictions, expirations, swallowed app errors, a firing alert.
        checks = [
            'count(count by (store) (cache_memory_seconds_until_full)) >= 3',
            'http_cache_stale_error_after_recovery == 1',
            'increase(cache_evictions_total{store="redis"}[30s]) > 0',
            'increase(cache_evictions_total{store="memcached"}[30s]) > 0',
            'increase(cache_expirations_total[30s]) > 0',
            'increase(app_cache_backend_errors_total[30s]) > 0',
            'increase(cache_evictions_total{store="app"}[30s]) > 0',
            'cache_memory_seconds_until_full{store="memcached"} < +Inf',
            # Countdowns to every limit the dashboards draw: the overfull Redis, the overgrown app.
            'cache_memory_seconds_until_full{store="redis"} < +Inf',
            'cache_memory_seconds_until_full{store="app"} < +Inf',
            'cache_resident_memory_seconds_until_full{store="redis"} < +Inf',
            'cache_resident_memory_seconds_until_full{store="app"} < +Inf',
            'memcached_slab_calcified == 1',
            # An alert per store for the "Firing alerts" panels (scaled `for` 18 s): Redis without a
            # limit, the calcified memcached, the stale HTTP error, the app's heap countdown and its
            # swallowed backend errors (the last two over MIN_WINDOW windows).
            'ALERTS{alertstate="firing", alertname="CacheMemoryLimitUnset"}',
            'ALERTS{alertstate="firing", alertname="MemcachedSlabCalcification"}',
            'ALERTS{alertstate="firing", alertname="AppHeapExhaustionPredicted"}',
            'ALERTS{alertstate="firing", alertname="AppCacheBackendFailing"}',
            'ALERTS{alertstate="firing", alertname="CacheHTTPStaleErrorAfterRecovery"}',
        ]
        # Each condition must have been seen, not all in the same instant: a 3 s rate window or an
        # alert that resolves between two rounds of load is there for the panels all the same.
        seen: set[str] = set()

        def missing() -> list[str]:
            seen.update(c for c in checks if c not in seen and prom.result(c))
            return [c for c in checks if c not in seen]

        still_missing = poll_until(missing, timeout=SETTLE_TIMEOUT)
        timings["settled"] = time.monotonic() - t0
        firing = sorted({(a["metric"]["alertname"], a["metric"].get("severity", ""))
                         for a in prom.result('ALERTS{alertstate="firing"}')})
        print(f"\ndashboards-e2e: timings {', '.join(f'{k} {v:.1f}s' for k, v in timings.items())}; "
              f"not there after settling: {still_missing or 'nothing'}; load errors: {load.errors[:3]}; "
              f"firing: {', '.join(f'{n} ({s})' for n, s in firing)}")
        # Without these conditions a panel could "show data" that is only zeros.
        assert not still_missing, f"not there after {SETTLE_TIMEOUT:.0f} s: {still_missing}"
        yield Env(prom, exporter, timings, stale_until)
        timings["tests done"] = time.monotonic() - t0
        print(f"\ndashboards-e2e: environment up for {timings['tests done']:.1f}s")


# --- the tests --------------------------------------------------------------------------------

def shows_data(data: dict) -> bool:
    """A query answer a panel can show: some sample that is a number (NaN, e.g. 0/0, shows nothing)."""
    result = data.get("result")
    if data.get("resultType") in ("scalar", "string"):
        return result is not None and result[1] != "NaN"
    values = [v for s in result or [] for v in ([s["value"]] if "value" in s else s.get("values", []))]
    return any(v[1] != "NaN" for v in values)


@pytest.mark.servers
def test_every_panel_query_returns_data(env: Env) -> None:
    prom = env.prom
    files = dashboard_files()
    assert files, f"no dashboards in {DASHBOARDS}"
    queries = panel_queries(prom, files)
    assert queries, "the dashboards have no panel queries"
    failures: dict[tuple[str, str, str], str] = {}
    empty: dict[tuple[str, str, str], list[str]] = {}
    for q in queries:
        key = (q.uid, q.title, q.raw)
        answers = [(expr, prom.query(expr)) for expr in q.candidates]
        errors = [f"{a.get('errorType')}: {a.get('error')} (sent: {expr})" for expr, a in answers
                  if a["status"] != "success"]
        if errors:
            failures[key] = errors[0]
        elif not any(shows_data(a["data"]) for _, a in answers):
            empty[key] = q.candidates
    started, late = time.monotonic(), {}

    def still_empty() -> list:
        for key, candidates in list(empty.items()):
            if any(shows_data(prom.query(expr).get("data") or {}) for expr in candidates):
                late[key] = time.monotonic() - started
                del empty[key]
        return list(empty)
    poll_until(still_empty, timeout=RETRY_EMPTY_FOR, interval=2.0)
    for key, candidates in empty.items():
        failures[key] = "no data" + (f" for any of {len(candidates)} variable choices" if len(candidates) > 1 else
                                     f" (sent: {candidates[0]})")
    if late:
        print("\ndashboards-e2e: data came later for: " + "; ".join(
            f"{uid} / {title} (+{t:.0f}s)" for (uid, title, _), t in sorted(late.items(), key=lambda x: x[1])))
    # The alert rules must parse too (they return data only while they fire).
    for name, expr in rule_exprs():
        answer = prom.query(expr)
        if answer["status"] != "success":
            failures[("alerts", name, expr)] = f"{answer.get('errorType')}: {answer.get('error')}"
    print(f"\ndashboards-e2e: {len(queries)} panel queries in {len(files)} dashboards, "
          f"{len(rule_exprs())} rule expressions; {len(failures)} failing")
    late = ("\n(nginx's cached 503 had expired: no stale error after recovery to show any more; the "
            f"environment was slow: {env.timings})" if time.monotonic() > env.stale_until else "")
    assert not failures, "panel queries that fail or never show data:\n" + "\n".join(
        f"- {uid} / {title}: {error}\n    expr: {' '.join(expr.split())}"
        for (uid, title, expr), error in sorted(failures.items())) + late


@pytest.mark.servers
def test_every_metric_name_used_exists(env: Env) -> None:
    used = wanted_names()
    assert used, "no metric names found in the rules"
    exported: set[str] = set()
    in_prometheus: set[str] = set()

    def missing_names() -> list[str]:
        exported.update(name for name, _, _ in Metrics(env.exporter.get("/metrics")[1].decode()).samples)
        in_prometheus.update(env.prom.names())
        return [name for name in used if name not in exported and name not in in_prometheus]
    missing = {name: used[name] for name in poll_until(missing_names, timeout=10.0)}
    print(f"\ndashboards-e2e: {len(used)} metric names used; {len(used) - len(missing)} exist "
          f"({len(set(used) & exported)} on /metrics)")
    assert not missing, "metric names used but not exported here:\n" + "\n".join(
        f"- {name}: used by {', '.join(sorted(where))}" for name, where in sorted(missing.items()))


# --- the helpers, on their own ------------------------------------------------------------------

def test_extraction_agrees_with_dashboards_queries() -> None:
    """This file's panel walk (variables resolved from Prometheus) and dashboards/queries.py (every
    variable All) see the same queries: same dashboards, panels and expressions."""
    files = dashboard_files()
    assert files, f"no dashboards in {DASHBOARDS}"
    queries = load_script(DASHBOARDS / "queries.py")
    theirs = sorted(queries.panel_queries()) + sorted(
        (uid, f"annotation {name}", expr) for uid, name, expr in queries.annotation_queries())
    ours = []
    for path in files:
        dashboard = json.loads(path.read_text())
        everything_all = {name: Choice([".*"], ".*") for name in variables_of(dashboard)}
        ours += [(dashboard["uid"], title, substitute(expr, everything_all, queries.BUILTINS))
                 for title, expr in raw_panel_queries(dashboard)]
    panels = sorted(q for q in ours if not q[1].startswith("annotation "))
    annotations = sorted(q for q in ours if q[1].startswith("annotation "))
    assert panels + annotations == theirs

@pytest.mark.parametrize(("expr", "names"), [
    ("vector(1)", set()),
    ("absent(cache_exporter_build_info)", {"cache_exporter_build_info"}),
    ('max without (severity) (cache_config_finding{severity="critical", check!="x"})', {"cache_config_finding"}),
    ("up == 0 and on (job, instance) max_over_time(cache_exporter_build_info[1h])",
     {"up", "cache_exporter_build_info"}),
    ('sum by (target) (rate(cache_hits_total{store=~"redis|memcached"}[5m] offset 1h)) / ignoring (x) group_left '
     'sum(rate(cache_misses_total[5m:1m]))', {"cache_hits_total", "cache_misses_total"}),
    ('histogram_quantile(0.9, sum by (le) (rate(x_seconds_bucket[5m]))) * on (a) group_left (b, c) info_metric',
     {"x_seconds_bucket", "info_metric"}),
    ('label_replace(topk(3, redis_db_keys), "d", "$1", "db", "db(.*)") + {__name__="other", a="b"} @ start()',
     {"redis_db_keys", "other"}),
    ("sum(x) by (le) > bool 0.5e3 and nan < Inf or count_values(\"v\", y) # comment\n unless z", {"x", "y", "z"}),
])
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_metric_names_refuses_what_it_cannot_read() -> None:
    with pytest.raises(PromQLSyntaxError):
        metric_names('rate(x{a="b"[5m])')
    with pytest.raises(PromQLSyntaxError):
        metric_names("x ! y")


def test_substitution_forms_and_formats() -> None:
    choices = {"target": Choice(["a.b", "c"], multi=True), "job": Choice(["j"], ".*", multi=True),
               "one": Choice(["s1"])}
    assert substitute('x{target=~"$target", job=~"${job}"}[$__rate_interval]', choices) == \
        'x{target=~"(a\\\\.b|c)", job=~".*"}[1m]'
    assert substitute("${target:pipe} ${target:regex} ${target:csv} [[one]] $one ${one:raw} $__range", choices) == \
        "a.b|c (a\\\\.b|c) a.b,c s1 s1 s1 1h"
    assert substitute("$unknown $__interval", choices) == "$unknown 15s"
