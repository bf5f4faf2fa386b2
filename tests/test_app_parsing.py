"""The app source's body mapping, without a network: fixtures, JSON mapping, the prefilter, robustness.

Every expected heap figure is computed here from the fixture's own numbers, read with
prometheus_client's full-body parser (an independent reader: the exporter filters lines and
parses them one by one), so a fixture change cannot silently move the expectations.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter import catalog
from exporter.config import APP_RUNTIMES, build_config
from exporter.errors import PollError
from exporter.netio import bounded_gunzip
from exporter.promtext import parse, wanted_names
from exporter.sources.app import CACHE_ERRORS, CACHE_FAMILIES, PRESETS, AppDocument, map_body
from exporter.targets import AppTarget

FIXTURES = Path(__file__).parent / "fixtures" / "app"
MiB = 2**20
V8_YOUNG_RESERVE = 48 * MiB
APP = (("store", "app"),)


# --- helpers -------------------------------------------------------------------------------

def app_target(**kw: object) -> AppTarget:
    """An AppTarget exactly as the config loader builds it."""
    entry: dict[str, object] = {"name": "t", "type": "app", "url": "http://127.0.0.1:9/metrics", **kw}
    target = build_config({"targets": [entry]}, "<t>").config.targets[0]
    assert isinstance(target, AppTarget)
    return target


def body(name: str) -> str:
    return (FIXTURES / name).read_text()


def reference(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a whole body, read by prometheus_client's own (full-body) parser."""
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def ref_sum(text: str, name: str, **where: str) -> float:
    values = [v for n, labels, v in reference(text) if n == name and all(labels.get(k) == w for k, w in where.items())]
    assert values, f"fixture has no {name}{where}"
    return math.fsum(values)


def without_family(text: str, family: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if family not in line)


def cache_values(doc: AppDocument) -> dict[tuple[str, str], float]:
    """{(family, cache): value} for the in-process cache samples."""
    out = {}
    for s in doc.samples:
        labels = dict(s.labels)
        assert "cache" in labels, s
        if s.family != CACHE_ERRORS:
            assert labels.get("store") == "app", s
        out[(s.family, labels["cache"])] = s.value
    return out


def assert_all_finite(doc: AppDocument) -> None:
    h = doc.heap
    for what, value in (("heap.used", h.used), ("heap.limit", h.limit), ("heap.total_used", h.total_used),
                        ("heap.gc_seconds", h.gc_seconds), ("resident", doc.resident)):
        assert value is None or math.isfinite(value), f"{what} = {value!r}"
    for s in doc.samples:
        assert math.isfinite(s.value), s


# --- Node.js, prom-client ---------------------------------------------------------------------

NODE = "nodejs_promclient.prom"


def node_expected_used(text: str) -> float:
    return (ref_sum(text, "nodejs_heap_size_used_bytes")
            - ref_sum(text, "nodejs_heap_space_size_used_bytes", space="new")
            - ref_sum(text, "nodejs_heap_space_size_used_bytes", space="new_large_object"))


def test_node_promclient_old_generation_against_the_runtime_limit():
    text = body(NODE)
    doc = map_body(text, app_target())
    assert doc.runtime == "nodejs"
    assert doc.heap.used == node_expected_used(text) == 15869328 - 10241880 - 858688
    assert doc.heap.total_used == ref_sum(text, "nodejs_heap_size_used_bytes")
    # heap_size_limit 112 MiB (--max-old-space-size=64 plus 3 x 16 MiB semi-spaces) -> 64 MiB.
    assert doc.heap.limit == ref_sum(text, "nodejs_heap_size_limit_bytes") - V8_YOUNG_RESERVE == 64 * MiB
    assert doc.heap.limit_source == "runtime"
    assert doc.heap.gc_seconds == pytest.approx(ref_sum(text, "nodejs_gc_duration_seconds_sum"), rel=1e-12)
    assert doc.resident == ref_sum(text, "process_resident_memory_bytes")
    assert doc.malformed == 0
    assert len(doc.samples) == 0  # no in-process cache families in this body
    assert_all_finite(doc)


def test_node_configured_young_generation_reserve_replaces_the_default():
    text = body(NODE)
    doc = map_body(text, app_target(young_generation_reserve="32MiB"))
    assert doc.heap.limit == ref_sum(text, "nodejs_heap_size_limit_bytes") - 32 * MiB
    assert doc.heap.limit_source == "runtime"
    assert doc.heap.used == node_expected_used(text)  # the reserve only moves the limit


def test_node_without_the_limit_gauge_uses_the_configured_heap_limit():
    text = without_family(body(NODE), "nodejs_heap_size_limit_bytes")
    assert "heap_size_limit" not in text
    doc = map_body(text, app_target(heap_limit="64MiB"))
    assert doc.runtime == "nodejs"
    assert doc.heap.limit == 64 * MiB
    assert doc.heap.limit_source == "config"
    assert doc.heap.used == node_expected_used(text)
    # Neither the gauge nor a configured limit: no limit at all (not 0, not a guess).
    doc = map_body(text, app_target())
    assert doc.heap.limit is None and doc.heap.limit_source is None
    assert doc.heap.used == node_expected_used(text)


def test_node_runtime_can_be_forced():
    text = body(NODE)
    auto = map_body(text, app_target())
    forced = map_body(text, app_target(runtime="nodejs"))
    assert (forced.runtime, forced.heap) == (auto.runtime, auto.heap)
    # Forced to "process": resident memory, nothing V8-specific.
    process = map_body(text, app_target(runtime="process"))
    assert process.runtime == "process"
    assert process.heap.used == ref_sum(text, "process_resident_memory_bytes")


def test_node_heap_limit_is_never_zero_or_negative():
    """A reserve larger than heap_size_limit must not produce a negative (or zero) heap limit."""
    text = "nodejs_heap_size_used_bytes 1000\nnodejs_heap_size_limit_bytes 33554432\n"  # 32 MiB < 48 MiB
    doc = map_body(text, app_target())
    assert doc.heap.limit is None or doc.heap.limit > 0, doc.heap


# --- Node.js, OpenTelemetry -------------------------------------------------------------------

def test_node_otel_per_space_series_against_v8_statistics():
    text = body("nodejs_otel.prom")
    v8 = json.loads(body("nodejs_otel_v8stats.json"))["at_last_metrics_scrape"]
    spaces = {s["space_name"]: s["space_used_size"] for s in v8["getHeapSpaceStatistics"]}
    doc = map_body(text, app_target())
    assert doc.runtime == "nodejs-otel"
    expected = (ref_sum(text, "v8js_memory_heap_used")
                - ref_sum(text, "v8js_memory_heap_used", v8js_heap_space_name="new_space")
                - ref_sum(text, "v8js_memory_heap_used", v8js_heap_space_name="new_large_object_space"))
    assert doc.heap.used == expected
    # The same figure from v8.getHeapSpaceStatistics() of the very same scrape.
    assert doc.heap.used == sum(spaces.values()) - spaces["new_space"] - spaces["new_large_object_space"]
    assert doc.heap.total_used == sum(spaces.values()) == 31654072
    # OTel exports no heap limit: only the configured one.
    assert doc.heap.limit is None and doc.heap.limit_source is None
    assert doc.heap.gc_seconds == pytest.approx(ref_sum(text, "v8js_gc_duration_sum"), rel=1e-12)
    configured = map_body(text, app_target(heap_limit="64MiB"))
    assert (configured.heap.limit, configured.heap.limit_source) == (64 * MiB, "config")
    # heap_limit is the old-space limit (--max-old-space-size): V8's heap_size_limit minus the reserve.
    assert configured.heap.limit == v8["getHeapStatistics"]["heap_size_limit"] - V8_YOUNG_RESERVE
    assert_all_finite(doc)


# --- JVM ----------------------------------------------------------------------------------------

JVM_FIXTURES = ["jvm_micrometer.prom", "jvm_micrometer_legacy.prom", "jvm_client_java.prom",
                "jvm_client_java_simpleclient.prom"]
XMX = 536870912
CACHES = {"users": (15230, 1870, 870, 1000), "sessions": (4410, 950, 12, 938)}  # hits, misses, evictions, size


def jvm_reference(text: str) -> tuple[float, float, float]:
    """(heap used, sum of positive heap maxima, GC seconds) from the whole body."""
    samples = reference(text)
    used_name = "jvm_memory_used_bytes" if any(n == "jvm_memory_used_bytes" for n, _, _ in samples) \
        else "jvm_memory_bytes_used"
    max_name = "jvm_memory_max_bytes" if used_name == "jvm_memory_used_bytes" else "jvm_memory_bytes_max"
    used = math.fsum(v for n, labels, v in samples if n == used_name and labels.get("area") == "heap")
    limit = math.fsum(v for n, labels, v in samples if n == max_name and labels.get("area") == "heap" and v > 0)
    gc_name = "jvm_gc_pause_seconds_sum" if any(n == "jvm_gc_pause_seconds_sum" for n, _, _ in samples) \
        else "jvm_gc_collection_seconds_sum"
    # Pause time only: concurrent collectors (client_java's "G1 Concurrent GC") run beside the program.
    gc = math.fsum(v for n, labels, v in samples if n == gc_name and labels.get("gc") != "G1 Concurrent GC")
    return used, limit, gc


@pytest.mark.parametrize("name", JVM_FIXTURES)
def test_jvm_heap_pools_against_their_maxima(name):
    text = body(name)
    used, limit, gc = jvm_reference(text)
    doc = map_body(text, app_target())
    assert doc.runtime == "jvm"
    assert doc.heap.used == used == 254763008
    assert doc.heap.limit == limit == XMX  # -1 maxima (Eden, Survivor) are left out
    assert doc.heap.limit_source == "runtime"
    assert doc.heap.gc_seconds == pytest.approx(gc, rel=1e-12)
    assert doc.malformed == 0  # trailing commas in label sets, 5.36870912E8 values: all fine
    assert_all_finite(doc)


@pytest.mark.parametrize("name", JVM_FIXTURES)
def test_jvm_caches_map_to_unified_families(name):
    doc = map_body(body(name), app_target())
    got = cache_values(doc)
    expected = {}
    for cache, (hits, misses, evictions, size) in CACHES.items():
        expected[(catalog.CACHE_HITS, cache)] = hits
        expected[(catalog.CACHE_MISSES, cache)] = misses
        expected[(catalog.CACHE_EVICTIONS, cache)] = evictions  # not doubled by *_eviction_weight*
        expected[(catalog.CACHE_ITEMS, cache)] = size
    assert got == expected
    assert len(doc.samples) == len(expected)  # one series per (family, cache)


def test_jvm_without_positive_maxima_uses_the_configured_heap_limit():
    text = ('jvm_memory_used_bytes{area="heap",id="G1 Eden Space"} 1000\n'
            'jvm_memory_used_bytes{area="heap",id="G1 Old Gen"} 2000\n'
            'jvm_memory_used_bytes{area="nonheap",id="Metaspace"} 99999\n'
            'jvm_memory_max_bytes{area="heap",id="G1 Eden Space"} -1\n'
            'jvm_memory_max_bytes{area="heap",id="G1 Old Gen"} -1\n'
            'jvm_memory_max_bytes{area="nonheap",id="Metaspace"} 123456\n')
    doc = map_body(text, app_target())
    assert doc.runtime == "jvm"
    assert doc.heap.used == 3000  # nonheap is not heap
    assert doc.heap.limit is None
    doc = map_body(text, app_target(heap_limit="1GiB"))
    assert (doc.heap.limit, doc.heap.limit_source) == (2**30, "config")


def test_caffeine_collector_synthetic_lines():
    """client_java's Caffeine scheme next to process memory only (no JVM families)."""
    text = ('process_resident_memory_bytes 1e8\n'
            'caffeine_cache_hit_total{cache="a"} 5\ncaffeine_cache_miss_total{cache="a"} 2\n'
            'caffeine_cache_eviction_total{cache="a"} 1\ncaffeine_cache_estimated_size{cache="a"} 3\n'
            'caffeine_cache_requests_total{cache="a"} 7\n')
    doc = map_body(text, app_target())
    assert doc.runtime == "process"
    assert cache_values(doc) == {(catalog.CACHE_HITS, "a"): 5, (catalog.CACHE_MISSES, "a"): 2,
                                 (catalog.CACHE_EVICTIONS, "a"): 1, (catalog.CACHE_ITEMS, "a"): 3}


def test_jvm_gc_time_agrees_across_the_four_bodies_of_one_jvm():
    """The four JVM files describe one JVM (README): young GC pauses 2.048 s, G1 concurrent 0.087 s.

    Micrometer's ``jvm_gc_pause_seconds`` holds pauses only; client_java's
    ``jvm_gc_collection_seconds`` also carries ``gc="G1 Concurrent GC"``, which runs next to the
    mutator. The mutator-utilization (thrash) signal needs pause time, and the same JVM must give
    the same figure whichever library exports it.
    """
    got = {name: map_body(body(name), app_target()).heap.gc_seconds for name in JVM_FIXTURES}
    assert got == pytest.approx(dict.fromkeys(JVM_FIXTURES, 2.048), rel=1e-9), got


# --- Go -------------------------------------------------------------------------------------------

GO_FIXTURES = ["go_client_golang.prom", "go_client_golang_runtime_metrics.prom"]


@pytest.mark.parametrize("name", GO_FIXTURES)
def test_go_runtime_managed_memory(name):
    text = body(name)
    doc = map_body(text, app_target())
    assert doc.runtime == "go"
    assert doc.heap.used == ref_sum(text, "go_memstats_sys_bytes") - ref_sum(text, "go_memstats_heap_released_bytes")
    # Go 1.19 + client_golang 1.14 export no GOMEMLIMIT although GOMEMLIMIT=256MiB was set.
    assert "gomemlimit" not in text
    assert doc.heap.limit is None and doc.heap.limit_source is None
    assert doc.heap.gc_seconds == ref_sum(text, "go_gc_duration_seconds_sum")
    assert doc.heap.total_used == ref_sum(text, "go_memstats_heap_alloc_bytes")
    assert doc.resident == ref_sum(text, "process_resident_memory_bytes")
    configured = map_body(text, app_target(heap_limit="256MiB"))
    assert (configured.heap.limit, configured.heap.limit_source) == (256 * MiB, "config")
    assert_all_finite(doc)


@pytest.mark.parametrize("name", GO_FIXTURES)
def test_go_gomemlimit_metric(name):
    text = body(name)
    used = ref_sum(text, "go_memstats_sys_bytes") - ref_sum(text, "go_memstats_heap_released_bytes")
    gauge = "# HELP go_gc_gomemlimit_bytes Go runtime memory limit.\n# TYPE go_gc_gomemlimit_bytes gauge\n"
    set_ = map_body(text + gauge + "go_gc_gomemlimit_bytes 2.68435456e+08\n", app_target(heap_limit="1GiB"))
    assert (set_.heap.limit, set_.heap.limit_source) == (268435456, "runtime")  # the runtime wins
    assert set_.heap.used == used
    unset = text + gauge + "go_gc_gomemlimit_bytes 9.223372036854776e+18\n"  # math.MaxInt64: not set
    doc = map_body(unset, app_target())
    assert doc.heap.limit is None and doc.heap.limit_source is None
    doc = map_body(unset, app_target(heap_limit="256MiB"))
    assert (doc.heap.limit, doc.heap.limit_source) == (256 * MiB, "config")


# --- Python / Django --------------------------------------------------------------------------------

PY_FIXTURES = ["python_prometheus_client.prom", "python_django.prom", "python_django_redis_down.prom"]


@pytest.mark.parametrize("name", PY_FIXTURES)
def test_python_resident_memory_against_the_configured_limit(name):
    text = body(name)
    rss = ref_sum(text, "process_resident_memory_bytes")
    doc = map_body(text, app_target())
    assert doc.runtime == "python"
    assert doc.heap.used == doc.resident == rss
    assert doc.heap.limit is None and doc.heap.gc_seconds is None  # counts only, no GC time
    doc = map_body(text, app_target(memory_limit="512MiB"))
    assert (doc.heap.limit, doc.heap.limit_source) == (512 * MiB, "config")
    doc = map_body(text, app_target(heap_limit="256MiB"))
    assert (doc.heap.limit, doc.heap.limit_source) == (256 * MiB, "config")
    assert_all_finite(doc)


@pytest.mark.parametrize("name", ["python_django.prom", "python_django_redis_down.prom"])
def test_django_cache_counters(name):
    text = body(name)
    doc = map_body(text, app_target())
    got = cache_values(doc)
    assert got[(catalog.CACHE_HITS, "redis")] == ref_sum(text, "django_cache_get_hits_total", backend="redis") == 12
    assert got[(catalog.CACHE_MISSES, "redis")] == ref_sum(text, "django_cache_get_misses_total",
                                                           backend="redis") == 8
    if name == "python_django_redis_down.prom":
        assert got[(CACHE_ERRORS, "redis")] == ref_sum(text, "django_cache_get_fail_total", backend="redis") == 20
    # get = hits + misses + fail; *_created timestamps are not counts.
    assert sum(got.values()) == ref_sum(text, "django_cache_get_total", backend="redis")
    errors = [s for s in doc.samples if s.family == CACHE_ERRORS]
    assert all(s.labels == (("cache", "redis"),) for s in errors), errors


def test_django_cache_errors_start_at_zero_before_the_first_failure():
    """Redis up: django_cache_get_fail_total has HELP/TYPE but no sample yet (README) -> errors 0.

    If the series only appears with its first value (20 here), Prometheus' increase()/rate() never
    see that first burst of swallowed failures: a series' first sample has no predecessor.
    """
    doc = map_body(body("python_django.prom"), app_target())
    assert doc.samples.value(CACHE_ERRORS, (("cache", "redis"),)) == 0


# --- JSON ---------------------------------------------------------------------------------------------

JSON_BODY = {
    "memory": {"heap": {"used": 1000, "limit": 4000}, "rss": 5000.5},
    "gc": {"pauses": [{"total": 1.5}, {"total": 2.5}]},
    "caches": {"users": {"hits": 10, "misses": 2, "evictions": 1, "size": 7, "errors": 3},
               "sessions": {"stats": [30, 4]}},
}
JSON_FIELDS = {"heap_used": "memory.heap.used", "heap_limit": "memory.heap.limit", "gc_seconds": "gc.pauses.1.total",
               "resident": "memory.rss"}
JSON_CACHES = {"users": {"hits": "caches.users.hits", "misses": "caches.users.misses",
                         "evictions": "caches.users.evictions", "items": "caches.users.size",
                         "errors": "caches.users.errors"},
               "sessions": {"hits": "caches.sessions.stats.0", "misses": "caches.sessions.stats.1"}}


def json_target(fields: dict | None = None, caches: dict | None = None, **kw: object) -> AppTarget:
    return app_target(format="json", fields=fields or JSON_FIELDS, caches=caches or JSON_CACHES, **kw)


def test_json_fields_and_caches_are_mapped():
    doc = map_body(json.dumps(JSON_BODY), json_target())
    assert doc.runtime == "json"
    assert doc.heap.used == doc.heap.total_used == 1000
    assert (doc.heap.limit, doc.heap.limit_source) == (4000, "runtime")
    assert doc.heap.gc_seconds == 2.5  # list index path
    assert doc.resident == 5000.5
    assert doc.malformed == 0
    assert cache_values(doc) == {
        (catalog.CACHE_HITS, "users"): 10, (catalog.CACHE_MISSES, "users"): 2,
        (catalog.CACHE_EVICTIONS, "users"): 1, (catalog.CACHE_ITEMS, "users"): 7, (CACHE_ERRORS, "users"): 3,
        (catalog.CACHE_HITS, "sessions"): 30, (catalog.CACHE_MISSES, "sessions"): 4,
    }
    assert [s.labels for s in doc.samples if s.family == CACHE_ERRORS] == [(("cache", "users"),)]


def test_json_missing_paths_are_absent_not_errors():
    document = {"memory": {"heap": {"used": 1000}}, "gc": {"pauses": [{"total": 1.5}]},
                "caches": {"users": {"hits": 10}}}
    doc = map_body(json.dumps(document), json_target())
    assert doc.heap.used == 1000
    assert doc.heap.limit is None and doc.heap.limit_source is None
    assert doc.heap.gc_seconds is None  # index 1 of a one-element list
    assert doc.resident is None
    assert cache_values(doc) == {(catalog.CACHE_HITS, "users"): 10}
    configured = map_body(json.dumps(document), json_target(heap_limit="8KiB"))
    assert (configured.heap.limit, configured.heap.limit_source) == (8192, "config")


def test_json_non_numeric_values_and_booleans_are_ignored():
    document = {"memory": {"heap": {"used": 1000, "limit": "4000"}, "rss": None},
                "gc": {"pauses": [True, {"total": False}]},
                "caches": {"users": {"hits": "10", "misses": True, "evictions": [1], "size": {"n": 1},
                                     "errors": False},
                           "sessions": {"stats": [1.5, "x"]}}}
    doc = map_body(json.dumps(document), json_target())
    assert doc.heap.used == 1000
    assert doc.heap.limit is None and doc.heap.gc_seconds is None and doc.resident is None
    assert cache_values(doc) == {(catalog.CACHE_HITS, "sessions"): 1.5}
    # A boolean heap figure is not a heap figure: no heap -> protocol.
    with pytest.raises(PollError) as err:
        map_body(json.dumps({"memory": {"heap": {"used": True}}}), json_target())
    assert err.value.reason == "protocol"


@pytest.mark.parametrize("path", ["a.-1", "a.01x", "a.5", "a.b", "a.0.0"])
def test_json_bad_list_indexes_are_absent(path):
    doc = map_body(json.dumps({"h": 1, "a": [7, 8]}), json_target(fields={"heap_used": "h", "gc_seconds": path},
                                                                  caches={"c": {"hits": path}}))
    assert doc.heap.gc_seconds is None
    assert len(doc.samples) == 0


@pytest.mark.parametrize("text", ["not json", "<html><body>502 Bad Gateway</body></html>", "", "{", '{"a": 1}}',
                                  "nodejs_heap_size_used_bytes 1\n"])
def test_json_target_rejects_what_is_not_json(text):
    with pytest.raises(PollError) as err:
        map_body(text, json_target())
    assert err.value.reason == "protocol"


@pytest.mark.parametrize("text", ["[1, 2]", '"heap"', "42", "null", "{}"])
def test_json_without_the_heap_figure_is_a_protocol_error(text):
    with pytest.raises(PollError) as err:
        map_body(text, json_target())
    assert err.value.reason == "protocol"


@pytest.mark.parametrize("opening, closing", [("[", "]"), ('{"a":', "}")])
def test_json_deeply_nested_body_is_a_protocol_error(opening, closing):
    text = opening * 100_000 + "1" + closing * 100_000
    t0 = time.monotonic()
    with pytest.raises(PollError) as err:
        map_body(text, json_target())
    assert err.value.reason == "protocol"
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("value", ["1e999", "-1e999", "Infinity", "-Infinity", "NaN", "9" * 400, "-" + "9" * 400],
                         ids=["1e999", "-1e999", "Infinity", "-Infinity", "NaN", "400-digit-int", "-400-digit-int"])
def test_json_huge_and_non_finite_numbers_are_not_heap_figures(value):
    """json.loads turns 1e999 into inf, accepts NaN/Infinity, and keeps a 400-digit integer exact
    (float() of which raises OverflowError): none of them is a usable number."""
    text = '{"h": 1000, "x": ' + value + "}"
    doc = map_body(text, json_target(fields={"heap_used": "h", "heap_limit": "x", "gc_seconds": "x",
                                             "resident": "x"}, caches={"c": {"hits": "x"}}))
    assert doc.heap.used == 1000
    assert doc.heap.limit is None and doc.heap.gc_seconds is None and doc.resident is None
    assert_all_finite(doc)


# --- not Prometheus text, no figures ----------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "<!DOCTYPE html>\n<html><head><title>Login</title></head><body>Sign in</body></html>\n",
    "\n\n   <html>\nprocess_resident_memory_bytes 5\n</html>",
    json.dumps({"process_resident_memory_bytes": 5}),
    "[1, 2, 3]",
])
def test_not_prometheus_text_is_a_protocol_error(text):
    with pytest.raises(PollError) as err:
        map_body(text, app_target())
    assert err.value.reason == "protocol"


@pytest.mark.parametrize("text", [
    "",
    "# HELP up x\n# TYPE up gauge\nup 1\nhttp_requests_total{code=\"200\"} 5\n",
    "process_virtual_memory_bytes 1e9\nprocess_cpu_seconds_total 3\n",
    "nodejs_heap_size_total_bytes 45420544\n",  # a Node family, but not a used figure
    "process_resident_memory_bytes NaN\n",
    "Service Unavailable\n",
])
def test_text_without_heap_or_process_memory_is_a_protocol_error(text):
    with pytest.raises(PollError) as err:
        map_body(text, app_target())
    assert err.value.reason == "protocol"


def test_prometheus_non_finite_values_are_not_heap_figures():
    """+Inf parses as a float: a heap of +Inf bytes (or a limit of +Inf) is no figure at all."""
    for text in ("nodejs_heap_size_used_bytes +Inf\nprocess_resident_memory_bytes 5\n",
                 "nodejs_heap_size_used_bytes 100\nnodejs_heap_size_limit_bytes +Inf\n",
                 "process_resident_memory_bytes -Inf\n"):
        try:
            doc = map_body(text, app_target())
        except PollError as exc:
            assert exc.reason == "protocol", text
            continue
        assert_all_finite(doc)


# --- the prefilter ------------------------------------------------------------------------------------

def unrelated_lines(n: int) -> str:
    return "".join(f'http_request_duration_seconds_bucket{{le="0.1",route="/r/{i}",method="GET"}} {i}\n'
                   for i in range(n))


def test_large_body_is_filtered_fast_and_gives_the_same_heap():
    small = body(NODE)
    # 200k unrelated samples, plus names that merely start or end like a wanted one.
    decoys = ("nodejs_heap_size_used_bytes_extra 1e12\nxnodejs_heap_size_used_bytes 1e12\n"
              'nodejs_heap_size_used_bytesx{a="b"} 1e12\n')
    big = unrelated_lines(100_000) + small + decoys + unrelated_lines(100_000)
    assert len(big) > 10 * 2**20
    target = app_target()
    expected = map_body(small, target)
    t0 = time.thread_time()  # CPU of this thread: a busy machine must not fail it
    doc = map_body(big, target)
    elapsed = time.thread_time() - t0
    assert elapsed < 1.0, f"{elapsed:.2f}s for a {len(big) / 2**20:.0f} MiB body"
    assert doc.runtime == expected.runtime == "nodejs"
    assert doc.heap == expected.heap
    assert doc.resident == expected.resident
    assert doc.malformed == 0


def test_malformed_lines_of_wanted_families_are_counted_and_skipped():
    small = body(NODE)
    bad_wanted = [
        'nodejs_heap_space_size_used_bytes{space="new"} lots\n',
        'nodejs_heap_size_used_bytes{space="x"  1\n',
        'nodejs_gc_duration_seconds_sum{kind="major" 1\n',
        "nodejs_heap_size_limit_bytes 0x1000\n",
        'process_resident_memory_bytes{a="b",a="c"} 1\n',
    ]
    bad_unrelated = ['http_requests_total{code="200" 1\n', "some_gauge notanumber\n", "garbage line\n"]
    text = "".join(bad_wanted[:2]) + small + "".join(bad_unrelated) + "".join(bad_wanted[2:])
    doc = map_body(text, app_target())
    expected = map_body(small, app_target())
    assert doc.malformed == len(bad_wanted)  # unwanted families are never parsed, so never counted
    assert doc.heap == expected.heap
    assert doc.resident == expected.resident


def test_too_many_samples_of_wanted_families_is_too_large():
    text = "".join(f'nodejs_heap_space_size_used_bytes{{space="s{i}"}} 1\n' for i in range(20_001))
    with pytest.raises(PollError) as err:
        parse(text, {"nodejs_heap_space_size_used_bytes"})
    assert err.value.reason == "too_large"


# --- property tests -----------------------------------------------------------------------------------

ALL_FAMILIES: set[str] = set(CACHE_FAMILIES).union(*(p.families for p in PRESETS))
WANTED = sorted(wanted_names(ALL_FAMILIES))
# The samples the heap figures come from, so that generated bodies often map to something.
FIGURES = ["process_resident_memory_bytes", "nodejs_heap_size_used_bytes", "nodejs_heap_space_size_used_bytes",
           "nodejs_heap_size_limit_bytes", "nodejs_gc_duration_seconds_sum", "v8js_memory_heap_used",
           "jvm_memory_used_bytes", "jvm_memory_bytes_used", "jvm_memory_max_bytes", "jvm_gc_pause_seconds_sum",
           "go_memstats_sys_bytes", "go_memstats_heap_alloc_bytes", "go_memstats_heap_released_bytes",
           "go_gc_gomemlimit_bytes", "python_info", "cache_gets_total", "django_cache_get_fail_total"]
LABEL_KEYS = ["space", "area", "id", "kind", "cache", "result", "backend", "v8js_heap_space_name", "gc", "le"]
LABEL_VALUES = ["new", "new_large_object", "old", "heap", "nonheap", "hit", "miss", "redis", "new_space",
                "G1 Old Gen", "", 'q"uote', "back\\slash"]
VALUES = ["0", "1", "-1", "1e3", "5.36870912E8", "NaN", "+Inf", "-Inf", "Inf", "nan", "1e308", "1e400", "abc",
          "", "0x10", "1_000", "--1", "1e", ".5", "5."]

label_pair = st.builds(lambda k, v: f'{k}="{v}"', st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES))
good_labels = st.one_of(
    st.just(""),
    st.lists(label_pair, min_size=1, max_size=3).map(lambda pairs: "{" + ",".join(pairs) + "}"),
    st.lists(label_pair, min_size=1, max_size=3).map(lambda pairs: "{" + ",".join(pairs) + ",}"),
)
any_labels = st.one_of(good_labels, st.text(alphabet='{}=",\\ \tak1', max_size=12))
good_value = st.one_of(st.sampled_from(["0", "1", "-1", "1e3", "5.36870912E8", "NaN", "+Inf", "-Inf", "1e308"]),
                       st.floats().map(repr), st.integers(-(2**64), 2**64).map(str))
any_value = st.one_of(good_value, st.sampled_from(VALUES), st.integers().map(str))
# Well-formed samples of the figures' families (values may still be NaN/Inf/huge) ...
good_line = st.builds(lambda name, labels, v: f"{name}{labels} {v}", st.sampled_from(FIGURES), good_labels, good_value)
# ... and lines that may be broken anywhere.
messy_line = st.builds(
    lambda name, labels, sep, v, ts: f"{name}{labels}{sep}{v}{ts}",
    st.one_of(st.sampled_from(FIGURES), st.sampled_from(WANTED), st.sampled_from(["up", "http_requests_total", "x"])),
    any_labels, st.sampled_from([" ", "\t", "  ", ""]), any_value,
    st.one_of(st.just(""), st.integers(-(2**70), 2**70).map(lambda i: f" {i}"), st.sampled_from([" x", " 1 2"])),
)
any_line = st.one_of(good_line, messy_line, st.text(max_size=40),
                     st.sampled_from(["# HELP x y", "# TYPE x gauge", "#", ""]))
prom_body = st.builds(lambda lines, nl: nl.join(lines), st.lists(any_line, max_size=25),
                      st.sampled_from(["\n", "\r\n", "\r"]))
runtime = st.one_of(st.just("auto"), st.sampled_from(APP_RUNTIMES))
heap_limit = st.sampled_from([None, "1", "64MiB"])
PROM_TARGETS = {(r, h): app_target(runtime=r, **({"heap_limit": h} if h else {}))
                for r in APP_RUNTIMES for h in (None, "1", "64MiB")}

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def map_or_poll_error(text: str, target: AppTarget) -> AppDocument | None:
    try:
        return map_body(text, target)
    except PollError as exc:
        assert exc.reason in ("protocol", "too_large"), exc
        return None


@PROPERTY
@given(text=st.text(), rt=runtime)
def test_arbitrary_text_only_ever_raises_poll_error(text, rt):
    map_or_poll_error(text, PROM_TARGETS[(rt, None)])
    map_or_poll_error(text, JSON_ANY_TARGET)
    parsed = parse(text, ALL_FAMILIES)
    assert parsed.malformed >= 0


@PROPERTY
@given(text=prom_body, rt=runtime, limit=heap_limit)
def test_mixed_valid_and_invalid_lines_only_ever_raise_poll_error(text, rt, limit):
    doc = map_or_poll_error(text, PROM_TARGETS[(rt, limit)])
    if doc is not None:
        assert doc.heap.used is not None
        assert doc.malformed >= 0


@PROPERTY
@example(text="nodejs_heap_size_used_bytes +Inf", rt="auto", limit=None)
@example(text="nodejs_heap_size_used_bytes 1\nnodejs_heap_size_limit_bytes +Inf", rt="auto", limit=None)
@given(text=prom_body, rt=runtime, limit=heap_limit)
def test_mixed_lines_only_ever_produce_finite_numbers(text, rt, limit):
    doc = map_or_poll_error(text, PROM_TARGETS[(rt, limit)])
    if doc is not None:
        assert_all_finite(doc)


JSON_KEYS = ["a", "b", "0", "1", "heap"]
json_scalars = st.one_of(st.integers(), st.floats(), st.integers(0, 2**53),
                          st.none() | st.booleans() | st.text(max_size=5))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(JSON_KEYS), children,
                                                                      max_size=4),
    max_leaves=20,
)
json_path = st.lists(st.sampled_from(JSON_KEYS + ["2", "10"]), min_size=1, max_size=4).map(".".join)
JSON_ANY_TARGET = app_target(format="json", fields={"heap_used": "a"})


def existing_paths(node: object, prefix: str = "") -> list[str]:
    """Every dotted path that leads somewhere in ``node`` (so generated mappings often hit)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    out = []
    for key, child in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        out.append(path)
        out += existing_paths(child, path)
    return out


@st.composite
def json_case(draw: st.DrawFn) -> tuple[object, list[str]]:
    document = draw(st.one_of(st.dictionaries(st.sampled_from(JSON_KEYS), json_values, max_size=4), json_values))
    paths = existing_paths(document)
    path = st.one_of(st.sampled_from(paths), json_path) if paths else json_path
    return document, draw(st.lists(path, min_size=9, max_size=9))


def json_path_target(paths: list[str]) -> AppTarget:
    fields = dict(zip(("heap_used", "heap_limit", "gc_seconds", "resident"), paths[:4], strict=True))
    caches = {"c": dict(zip(("hits", "misses", "evictions", "items", "errors"), paths[4:], strict=True))}
    return app_target(format="json", fields=fields, caches=caches)


@PROPERTY
@example(case=({"a": 10**400}, ["a"] * 9))
@given(case=json_case())
def test_arbitrary_json_only_ever_raises_poll_error(case):
    document, paths = case
    map_or_poll_error(json.dumps(document), json_path_target(paths))


@PROPERTY
@example(case=({"a": float("inf")}, ["a"] * 9))
@example(case=({"a": float("nan")}, ["a"] * 9))
@given(case=json_case())
def test_arbitrary_json_only_ever_produces_finite_numbers(case):
    document, paths = case
    try:
        doc = map_or_poll_error(json.dumps(document), json_path_target(paths))
    except OverflowError:
        return  # a crash, not a number: test_arbitrary_json_only_ever_raises_poll_error reports it
    if doc is not None:
        assert_all_finite(doc)


# --- bounded_gunzip -------------------------------------------------------------------------------------

def gzip_bomb(size: int) -> bytes:
    """A real gzip member of ``size`` zero bytes (~1/1000 of it), built without compressing ``size`` bytes.

    After Z_FULL_FLUSH the deflate state is reset and byte-aligned, so every further 1 MiB block of
    zeros compresses to the same bytes: the block is repeated. CRC-32 and ISIZE are real.
    """
    chunk = bytes(MiB)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = co.compress(chunk) + co.flush(zlib.Z_FULL_FLUSH)
    block = co.compress(chunk) + co.flush(zlib.Z_FULL_FLUSH)
    assert co.compress(chunk) + co.flush(zlib.Z_FULL_FLUSH) == block
    end = co.flush()
    n = size // MiB
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + first + block * (n - 1) + end + struct.pack("<II", crc, size & 0xFFFFFFFF)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    # The construction, checked in full on a 64 MiB bomb: a valid gzip member of exactly that many zeros.
    small = gzip_bomb(64 * MiB)
    assert gzip.decompress(small) == bytes(64 * MiB)
    data = gzip_bomb(2**30)
    assert len(data) < 2 * MiB
    assert struct.unpack("<I", data[-4:])[0] == 2**30 & 0xFFFFFFFF
    return data


def test_gzip_bomb_is_refused_quickly_with_bounded_memory(bomb):
    tracemalloc.start()
    try:
        t0 = time.thread_time()
        with pytest.raises(OSError, match="larger than"):
            bounded_gunzip(bomb, 16 * MiB)
        elapsed = time.thread_time() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0, elapsed
    assert peak < 48 * MiB, f"peak {peak / MiB:.0f} MiB while refusing a bomb at 16 MiB"


def test_gzip_round_trip_and_exact_limit():
    payload = body(NODE).encode()
    assert bounded_gunzip(gzip.compress(payload), 16 * MiB) == payload
    assert bounded_gunzip(zlib.compress(payload), 16 * MiB) == payload  # zlib wrapper accepted too
    assert bounded_gunzip(gzip.compress(payload), len(payload)) == payload
    with pytest.raises(OSError):
        bounded_gunzip(gzip.compress(payload), len(payload) - 1)
    assert bounded_gunzip(gzip.compress(b""), 1) == b""


def test_truncated_gzip_is_an_error_not_a_shorter_body():
    """A gzip stream cut short must not be returned as a silently shorter body (a Node body cut
    between its heap lines would give a wrong heap figure)."""
    payload = body(NODE).encode()
    cut = gzip.compress(payload)[: len(payload) // 8]
    with pytest.raises(ValueError, match="truncated"):
        out = bounded_gunzip(cut, 16 * MiB)
        assert payload.startswith(out)  # what comes back is a prefix


# --- a new process behind the endpoint -------------------------------------------------------

NODE_BODY = """# TYPE nodejs_heap_size_used_bytes gauge
nodejs_heap_size_used_bytes 50000000
# TYPE nodejs_heap_size_limit_bytes gauge
nodejs_heap_size_limit_bytes 117440512
# TYPE nodejs_gc_duration_seconds histogram
nodejs_gc_duration_seconds_sum{{kind="major"}} {gc}
nodejs_gc_duration_seconds_count{{kind="major"}} 3
# TYPE process_start_time_seconds gauge
process_start_time_seconds {start}
"""


@pytest.mark.parametrize(("polls", "restarts"), [
    ([("1700000000", 1.0), ("1700000000", 2.0)], [False, False]),  # the same process
    ([("1700000000", 1.0), ("1700000042", 0.1)], [False, True]),  # exit 134, restarted
    ([("1700000000", 5.0), ("1700000000", 0.2)], [False, True]),  # start time the same second: GC went back
    ([("NaN", 1.0), ("NaN", 2.0), ("+Inf", 3.0)], [False, False, False]),  # a start time that says nothing
])
def test_a_new_process_is_a_restart_and_starts_a_new_history(polls, restarts):
    from exporter.snapshot import Samples, SeriesLimits
    from exporter.sources.app import AppSource

    target = app_target()
    source = AppSource(target)
    seen = []
    for start, gc in polls:
        document = map_body(NODE_BODY.format(start=start, gc=gc), target)
        out = Samples(SeriesLimits.of(target))
        memory = source._heap_samples(out, document.heap, document.resident, document.runtime)
        seen.append(memory.restarted)
        # The countdown aims at 80 % of the old generation (heap_size_limit minus the young reserve).
        assert memory.limit == pytest.approx(0.8 * (117440512 - V8_YOUNG_RESERVE))
        assert out.value("app_heap_effective_limit_bytes") == memory.limit
    assert seen == restarts
    assert out.value("app_process_restarts_total") == sum(restarts)


def test_opentelemetry_without_a_heap_limit_is_an_audit_finding_with_the_fix():
    """runtime-node exports no heap limit at all (prom-client without the gauge: tests/test_app_node.py)."""
    from exporter import audit
    from exporter.snapshot import MemoryView
    from exporter.sources.base import Reading

    fixture, hint = "nodejs_otel.prom", "OpenTelemetry"
    target = app_target()
    document = map_body(body(fixture), target)
    assert document.runtime == "nodejs-otel" and document.heap.limit is None
    reading = Reading(document.samples, MemoryView(used=document.heap.used, limit=None),
                      {"runtime": document.runtime})
    findings = {f.check: f for f in audit.evaluate(target, reading)}
    assert findings["app_heap_limit_unknown"].severity == "warning"
    assert hint in findings["app_heap_limit_unknown"].message and "heap_limit" in findings[
        "app_heap_limit_unknown"].message
    # With heap_limit configured the same body has a limit, and the finding is gone.
    limited = app_target(heap_limit="64MiB")
    document = map_body(body(fixture), limited)
    reading = Reading(document.samples, MemoryView(used=document.heap.used, limit=document.heap.effective_limit),
                      {"runtime": document.runtime})
    assert "app_heap_limit_unknown" not in {f.check for f in audit.evaluate(limited, reading)}
