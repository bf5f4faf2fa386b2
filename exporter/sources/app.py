"""Poll an application's own metrics endpoint: its heap, its GC, its in-process caches.

The app's Prometheus endpoint (or a JSON stats endpoint with a field mapping) is fetched over a
persistent HTTP connection inside the per-poll guard, filtered to the families a runtime preset
needs, and mapped to the unified ``cache_memory_*`` families with ``store="app"`` — so the
forecast and the alert rules work unchanged — plus ``app_*`` families.

Heap figures compare like with like, because that is what the process dies of:

* **Node.js**: V8 aborts ("JavaScript heap out of memory", exit 134) when the *old generation*
  is full. ``heap_size_limit`` includes the young generation's reserve (3 semi-spaces, 48 MiB by
  default), so used = total heap used minus the new spaces, and limit = ``heap_size_limit``
  minus the reserve (or the configured ``heap_limit``, i.e. ``--max-old-space-size``).
* **JVM**: heap pools used against the sum of the pools' defined maxima (-Xmx).
* **Go**: runtime-managed memory (sys minus released) against GOMEMLIMIT when it is set.
* **Python**: no heap limit exists; resident memory against the target's ``memory_limit``.

Where the countdown aims: V8 does not always run to its limit. Its "ineffective mark-compacts
near heap limit" rule aborts once 4 mark-compacts in a row leave the old generation at >= 80 % of
its limit while the program gets < 40 % of the time; under fast allocation that is where an app
dies, under slow allocation it may live on toward the limit. The countdown therefore aims at
the *effective limit* (``app_heap_effective_limit_bytes``): 80 % of the old-generation limit for
V8, the limit itself for the other runtimes.

A process that restarted (a crash loop: exit 134, restarted by its supervisor) is a new heap:
a changed ``process_start_time_seconds`` or a cumulative GC time that went backwards tells the
forecast to start a new history, so each life is watched from its first poll.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from exporter import catalog
from exporter import errors as E
from exporter.errors import PollError
from exporter.netio import (
    GuardedHTTPConnection,
    authorization,
    classify_http_error,
    poll_tls_context,
)
from exporter.promtext import Parsed, looks_like_prometheus, parse
from exporter.snapshot import MemoryView, Samples, SeriesLimits
from exporter.sources.base import PersistentConnectionSource, Reading
from exporter.sources.fields import plausible_bytes
from exporter.sources.memory import add_unified_memory
from exporter.targets import AppTarget

log = logging.getLogger(__name__)

APP = "app"
# V8's kHighHeapPercentage (src/heap/heap.cc, IsIneffectiveMarkCompact): from this share of the
# old-generation limit on, 4 mark-compacts in a row with the mutator under 40 % of the time abort
# the process. It is the earliest point V8 gives up, so a countdown aimed here is never late.
V8_ABORT_RATIO = 0.8
V8_LOW_MUTATOR_UTILIZATION = 0.4  # kLowMutatorUtilization: the other half of that rule
GO_MEMLIMIT_UNSET = 2**62  # GOMEMLIMIT unset reads math.MaxInt64 (~9.2e18); anything this large is "unset"

APP_UP = catalog.gauge("app_up", "1 if the last poll of the app's metrics endpoint succeeded, else 0.", (), APP)
RUNTIME_INFO = catalog.gauge("app_runtime_info", "Constant 1; label runtime is the detected runtime preset.",
                             ("runtime",), APP)
GC_RATIO = catalog.gauge(
    "app_gc_time_ratio", "Share of wall time spent in garbage collection between the last two polls.", (), APP)
CACHE_ERRORS = catalog.counter(
    "app_cache_backend_errors_total",
    "Cache operations that failed against the backend and were swallowed by the app (django-redis "
    "IGNORE_EXCEPTIONS): the cache is silently off.", ("cache",), APP)
EFFECTIVE_LIMIT = catalog.gauge(
    "app_heap_effective_limit_bytes",
    f"Where the heap countdown aims: the point the runtime may abort (V8: {V8_ABORT_RATIO:.0%} of the "
    "old-generation limit, its ineffective mark-compact rule; other runtimes: the limit).", (), APP)
RESTARTS = catalog.counter(
    "app_process_restarts_total",
    "New lives of the app process seen by the exporter (process start time changed or GC time went back); "
    "each starts a new forecast history.", (), APP)
HEAP_TOTAL = catalog.gauge(
    "app_heap_total_used_bytes", "Total heap used as the runtime reports it (V8: including the young generation).",
    (), APP)


# --- runtime presets --------------------------------------------------------------------

@dataclass(frozen=True)
class Heap:
    used: float | None = None
    limit: float | None = None
    limit_source: str | None = None
    total_used: float | None = None
    gc_seconds: float | None = None  # cumulative
    abort_ratio: float = 1.0  # share of the limit from which the runtime may abort
    started: float | None = None  # process_start_time_seconds: a change is a new process

    @property
    def effective_limit(self) -> float | None:
        return self.limit * self.abort_ratio if self.limit else None


def _node_heap(p: Parsed, t: AppTarget) -> Heap:
    total = p.sum("nodejs_heap_size_used_bytes")
    young = sum(v for labels, v in p.samples.get("nodejs_heap_space_size_used_bytes", ())
                if labels.get("space") in ("new", "new_large_object"))
    used = total - young if total is not None else None
    limit, source = None, None
    runtime_limit = p.first("nodejs_heap_size_limit_bytes")
    if runtime_limit and runtime_limit - t.young_generation_reserve > 0:
        limit, source = runtime_limit - t.young_generation_reserve, "runtime"
    return Heap(used, limit, source, total, p.sum("nodejs_gc_duration_seconds_sum"), V8_ABORT_RATIO)


def _otel_heap(p: Parsed, t: AppTarget) -> Heap:
    # @opentelemetry/instrumentation-runtime-node: per-space series, no totals, no unit suffixes,
    # and no heap limit at all (v8js.memory.heap.limit is declared but never exported).
    space = "v8js_heap_space_name"
    total = p.sum("v8js_memory_heap_used")
    young = sum(v for labels, v in p.samples.get("v8js_memory_heap_used", ())
                if labels.get(space) in ("new_space", "new_large_object_space"))
    used = total - young if total is not None else None
    return Heap(used, None, None, total, p.sum("v8js_gc_duration_sum"), V8_ABORT_RATIO)


def _jvm_heap(p: Parsed, t: AppTarget) -> Heap:
    heap = {"area": "heap"}
    used = p.sum("jvm_memory_used_bytes", heap)
    if used is None:
        used = p.sum("jvm_memory_bytes_used", heap)  # simpleclient_hotspot
    limit = p.sum("jvm_memory_max_bytes", heap, positive=True) or p.sum("jvm_memory_bytes_max", heap, positive=True)
    source = "runtime" if limit else None
    gc = p.sum("jvm_gc_pause_seconds_sum")
    if gc is None:
        # client_java reports concurrent collectors ("G1 Concurrent GC", "ZGC Cycles") as
        # collections too; their time runs beside the program, not instead of it.
        gc = p.sum("jvm_gc_collection_seconds_sum", exclude={"gc": CONCURRENT_COLLECTORS})
    return Heap(used, limit, source, used, gc)


CONCURRENT_COLLECTORS = {"G1 Concurrent GC", "ZGC Cycles", "ZGC Major Cycles", "ZGC Minor Cycles",
                         "Shenandoah Cycles"}


def _go_heap(p: Parsed, t: AppTarget) -> Heap:
    sys_bytes, released = p.first("go_memstats_sys_bytes"), p.first("go_memstats_heap_released_bytes") or 0.0
    used = sys_bytes - released if sys_bytes is not None else p.first("go_memstats_heap_inuse_bytes")
    memlimit = p.first("go_gc_gomemlimit_bytes")
    limit, source = None, None
    if memlimit is not None and 0 < memlimit < GO_MEMLIMIT_UNSET:
        limit, source = memlimit, "runtime"
    # go_gc_duration_seconds covers stop-the-world pauses only: an underestimate of GC time.
    return Heap(used, limit, source, p.first("go_memstats_heap_alloc_bytes"), p.sum("go_gc_duration_seconds_sum"))


def _process_heap(p: Parsed, t: AppTarget) -> Heap:
    rss = p.first("process_resident_memory_bytes")
    limit = t.heap_limit or t.memory_limit
    return Heap(rss, float(limit) if limit else None, "config" if limit else None, rss, None)


@dataclass(frozen=True)
class Preset:
    name: str
    detect: tuple[str, ...]  # any of these sample names identifies the runtime
    families: frozenset[str]
    heap: Callable[[Parsed, AppTarget], Heap]


PROCESS = frozenset({"process_resident_memory_bytes", "process_start_time_seconds"})
PRESETS: list[Preset] = [
    Preset("nodejs", ("nodejs_heap_size_used_bytes",), PROCESS | {
        "nodejs_heap_size_used_bytes", "nodejs_heap_size_total_bytes", "nodejs_heap_space_size_used_bytes",
        "nodejs_heap_size_limit_bytes", "nodejs_gc_duration_seconds", "nodejs_version_info"}, _node_heap),
    Preset("nodejs-otel", ("v8js_memory_heap_used",), PROCESS | {"v8js_memory_heap_used", "v8js_gc_duration"},
           _otel_heap),
    Preset("jvm", ("jvm_memory_used_bytes", "jvm_memory_bytes_used"), PROCESS | {
        "jvm_memory_used_bytes", "jvm_memory_max_bytes", "jvm_memory_bytes_used", "jvm_memory_bytes_max",
        "jvm_gc_pause_seconds", "jvm_gc_collection_seconds"}, _jvm_heap),
    Preset("go", ("go_memstats_heap_alloc_bytes",), PROCESS | {
        "go_memstats_sys_bytes", "go_memstats_heap_released_bytes", "go_memstats_heap_inuse_bytes",
        "go_memstats_heap_alloc_bytes", "go_gc_gomemlimit_bytes", "go_gc_duration_seconds", "go_info"}, _go_heap),
    Preset("python", ("python_info", "python_gc_objects_collected"), PROCESS | {"python_info"}, _process_heap),
    Preset("process", (), PROCESS, _process_heap),  # anything else with process metrics
]
PRESET_BY_NAME = {p.name: p for p in PRESETS}


# --- in-process caches ------------------------------------------------------------------

@dataclass(frozen=True)
class CacheMetric:
    """One app metric that maps to a unified cache family; ``label`` names the cache."""

    source: str
    family: str
    label: str
    where: tuple[tuple[str, str], ...] = ()


CACHE_METRICS: list[CacheMetric] = [
    # The convention for apps without a metrics library of their own (Node.js: a Map, lru-cache,
    # Keyv): prom-client counters and a gauge, labelled by cache (docs/recipes.md, "a Node.js
    # service"; tests/apps/node_heap_app/app.js).
    CacheMetric("cache_hits_total", catalog.CACHE_HITS, "cache"),
    CacheMetric("cache_misses_total", catalog.CACHE_MISSES, "cache"),
    CacheMetric("cache_entries", catalog.CACHE_ITEMS, "cache"),
    # Micrometer (Caffeine, JCache, Guava, ...); its cache_evictions_total is the convention's too
    CacheMetric("cache_gets_total", catalog.CACHE_HITS, "cache", (("result", "hit"),)),
    CacheMetric("cache_gets_total", catalog.CACHE_MISSES, "cache", (("result", "miss"),)),
    CacheMetric("cache_evictions_total", catalog.CACHE_EVICTIONS, "cache"),
    CacheMetric("cache_size", catalog.CACHE_ITEMS, "cache"),
    # Prometheus client_java's Caffeine collector
    CacheMetric("caffeine_cache_hit_total", catalog.CACHE_HITS, "cache"),
    CacheMetric("caffeine_cache_miss_total", catalog.CACHE_MISSES, "cache"),
    CacheMetric("caffeine_cache_eviction_total", catalog.CACHE_EVICTIONS, "cache"),
    CacheMetric("caffeine_cache_estimated_size", catalog.CACHE_ITEMS, "cache"),
    # django-prometheus (per cache backend)
    CacheMetric("django_cache_get_hits_total", catalog.CACHE_HITS, "backend"),
    CacheMetric("django_cache_get_misses_total", catalog.CACHE_MISSES, "backend"),
    CacheMetric("django_cache_get_fail_total", CACHE_ERRORS, "backend"),
]
# django_cache_get (the gets counter) names the backends whose fail counter starts at 0.
CACHE_FAMILIES = frozenset({m.source.removesuffix("_total") for m in CACHE_METRICS} | {"django_cache_get"})


def _caches(p: Parsed, out: Samples) -> None:
    sums: dict[tuple[str, str], float] = {}
    for m in CACHE_METRICS:
        where = dict(m.where)
        for labels, value in p.samples.get(m.source, ()):
            if any(labels.get(k) != v for k, v in where.items()):
                continue
            key = (m.family, labels.get(m.label, ""))
            sums[key] = sums.get(key, 0.0) + value
    # django-prometheus has no fail sample until the first failure: emit it at 0 for every backend
    # seen, or increase() never sees the first burst of swallowed failures.
    for labels, _ in p.samples.get("django_cache_get_total", ()):
        sums.setdefault((CACHE_ERRORS, labels.get("backend", "")), 0.0)
    for (family, cache), value in sums.items():
        pairs = (("cache", cache),) if family == CACHE_ERRORS else (("store", APP), ("cache", cache))
        out.add(family, value, pairs)


# --- JSON -------------------------------------------------------------------------------

def _path(document: object, path: str) -> float | None:
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    try:
        value = float(node)
    except OverflowError:  # a 400-digit integer
        return None
    return value if math.isfinite(value) else None


def _json_heap(document: object, t: AppTarget) -> tuple[Heap, float | None]:
    f = dict(t.fields)
    get = lambda key: _path(document, f[key]) if key in f else None  # noqa: E731
    limit = get("heap_limit")
    source = "runtime" if limit else None
    used = get("heap_used")
    return Heap(used, limit, source, used, get("gc_seconds")), get("resident")


def _json_caches(document: object, t: AppTarget, out: Samples) -> None:
    family_of = {"hits": catalog.CACHE_HITS, "misses": catalog.CACHE_MISSES, "evictions": catalog.CACHE_EVICTIONS,
                 "items": catalog.CACHE_ITEMS, "errors": CACHE_ERRORS}
    for cache, mapping in t.caches:
        for key, path in mapping:
            value = _path(document, path)
            family = family_of[key]
            labels = (("cache", cache),) if family == CACHE_ERRORS else (("store", APP), ("cache", cache))
            out.add(family, value, labels)


# --- a body, mapped ---------------------------------------------------------------------

@dataclass
class AppDocument:
    """What one metrics body says: runtime, heap, resident memory and the cache samples."""

    runtime: str
    heap: Heap
    resident: float | None
    samples: Samples
    malformed: int


def detect(parsed: Parsed) -> Preset:
    for preset in PRESETS:
        if any(parsed.has(name) for name in preset.detect):
            return preset
    return PRESET_BY_NAME["process"]


def map_body(text: str, t: AppTarget) -> AppDocument:
    """Map a Prometheus-text or JSON body to heap figures and cache samples; raises PollError."""
    out = Samples(SeriesLimits.of(t))
    if t.format == "json":
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            raise PollError(E.PROTOCOL, "the body is not JSON") from None
        heap, resident = _json_heap(document, t)
        _json_caches(document, t, out)
        runtime, malformed = "json", 0
    else:
        if not looks_like_prometheus(text):
            raise PollError(E.PROTOCOL, "the body is not Prometheus text (HTML or JSON?)")
        families: set[str] = set(CACHE_FAMILIES)
        for preset in PRESETS if t.runtime == "auto" else [PRESET_BY_NAME[t.runtime]]:
            families |= preset.families
        parsed = parse(text, families)
        chosen = detect(parsed) if t.runtime == "auto" else PRESET_BY_NAME[t.runtime]
        started = parsed.first("process_start_time_seconds")
        # A start time that is not a finite number says nothing (NaN != NaN would read as a restart).
        heap = replace(chosen.heap(parsed, t), started=started if started is not None and math.isfinite(started)
                       else None)
        resident = parsed.first("process_resident_memory_bytes")
        _caches(parsed, out)
        runtime, malformed = chosen.name, parsed.malformed
    # Implausible figures (1e308, negative) are counted and then treated as absent.
    sane = replace(heap, used=plausible_bytes(heap.used), limit=plausible_bytes(heap.limit),
                   total_used=plausible_bytes(heap.total_used))
    resident_sane = plausible_bytes(resident)
    malformed += sum(a is not None and b is None for a, b in ((heap.used, sane.used), (heap.limit, sane.limit),
                                                             (resident, resident_sane)))
    heap, resident = sane, resident_sane
    if heap.used is None:
        raise PollError(E.PROTOCOL, f"no heap or process memory figure found ({runtime})")
    if not heap.limit and t.heap_limit:  # the target's heap_limit stands in for a runtime that reports none
        heap = replace(heap, limit=float(t.heap_limit), limit_source="config")
    return AppDocument(runtime, heap, resident, out, malformed)


# --- the source -------------------------------------------------------------------------

class AppSource(PersistentConnectionSource):
    """Polls one application metrics endpoint over a persistent HTTP connection."""

    store = APP
    up_family = APP_UP
    EXPECTED_ERRORS = (OSError, ValueError, http.client.HTTPException)

    def __init__(self, target: AppTarget) -> None:
        super().__init__(target)
        self.target: AppTarget = target
        self.conn: GuardedHTTPConnection | None = None
        self.last_gc: tuple[float, float] | None = None  # (monotonic time, cumulative GC seconds)
        self.started: float | None = None  # process_start_time_seconds at the last poll
        self.restarts = 0

    def _connect(self, password: str | None) -> None:
        t = self.target
        context = None
        if t.scheme == "https":
            context = poll_tls_context(t.tls)
        self.conn = GuardedHTTPConnection(t.host, t.port, self.guard, context, t.tls.server_name if t.tls else None)
        self.headers = {"User-Agent": "cache-exporter", "Accept-Encoding": "gzip",
                        "Accept": "application/json" if t.format == "json" else "text/plain;version=0.0.4"}
        if password is not None:
            self.headers["Authorization"] = authorization(t.credentials.username, password)

    def _classify(self, exc: BaseException) -> PollError:
        reason = classify_http_error(exc)
        return PollError(reason, E.describe(exc)) if reason else super()._classify(exc)

    def _poll_once(self) -> Reading:
        assert self.conn is not None
        t = self.target
        before = self.conn.connects
        status, headers, body = self.conn.get(t.path, self.headers, t.max_reply_size)
        self.connections_opened += self.conn.connects - before
        if status in (401, 403):
            raise PollError(E.AUTH, f"HTTP {status}")
        if status != 200:
            raise PollError(E.HTTP, f"HTTP {status}")
        document = map_body(body.decode("utf-8", "replace"), t)
        if time.monotonic() > self.guard.deadline:
            raise PollError(E.TIMEOUT, "parsing took longer than the poll timeout")
        memory = self._heap_samples(document.samples, document.heap, document.resident, document.runtime)
        details: dict[str, object] = {"runtime": document.runtime, "connections_opened": self.connections_opened,
                                      "content_type": headers.get("content-type", "")}
        return Reading(document.samples, memory, details, document.malformed)

    def _heap_samples(self, out: Samples, heap: Heap, resident: float | None, runtime: str) -> MemoryView:
        t = self.target
        out.add(RUNTIME_INFO, 1, (("runtime", runtime),))
        out.add(HEAP_TOTAL, heap.total_used)
        out.add(EFFECTIVE_LIMIT, heap.effective_limit)
        resident_limit = float(t.memory_limit) if t.memory_limit else None
        # The series show the runtime's nominal limit; the countdown (the view returned) aims lower.
        nominal = MemoryView(used=heap.used, limit=heap.limit, limit_source=heap.limit_source,
                             resident=resident, resident_limit=resident_limit)
        add_unified_memory(out, APP, nominal, runtime, "application")
        # GC time between polls; a cumulative GC time that went back is a new process.
        now = time.monotonic()
        restarted = self._new_life(heap)
        if restarted:
            self.last_gc = None
            self.restarts += 1
        out.add(RESTARTS, self.restarts)
        if heap.gc_seconds is not None:
            if self.last_gc is not None and now > self.last_gc[0]:
                out.add(GC_RATIO, min(1.0, (heap.gc_seconds - self.last_gc[1]) / (now - self.last_gc[0])))
            self.last_gc = (now, heap.gc_seconds)
        self.started = heap.started
        # The countdown aims at the effective limit: where the runtime gives up, not its nominal limit.
        return MemoryView(used=heap.used, limit=heap.effective_limit, limit_source=heap.limit_source,
                          resident=resident, resident_limit=resident_limit, evicts_when_full=None,
                          eviction_policy=None, restarted=restarted)

    def _new_life(self, heap: Heap) -> bool:
        """Whether the process behind the endpoint is not the one the last poll saw."""
        if heap.started is not None and self.started is not None and heap.started != self.started:
            return True
        return heap.gc_seconds is not None and self.last_gc is not None and heap.gc_seconds < self.last_gc[1]

