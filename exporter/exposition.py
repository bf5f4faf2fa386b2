"""Render stored snapshots as Prometheus text: chunks at poll time, one join per scrape.

A scrape never contacts a target and never formats a number: each poll renders its own
samples into per-family text chunks (``render_chunks``), and a scrape joins the chunks
family by family behind one HELP/TYPE header (``Exposition.body``). The joined body and its
gzip form are cached until the store changes. The exporter's process-wide metrics (build
info, config reload status, process stats) come from prometheus_client registries and are
rendered per scrape; they are few.

Order: what someone reading a scrape came for first -- the stores' families (cache_*,
redis_*, memcached_*, app_*, http_cache_*) -- then the exporter's own (cache_exporter_*, per
target and process-wide), then the Python process's (process_*, python_*) last.

Gzip uses multi-member streams (RFC 1952 2.2): the small registry part is compressed per
scrape and appended to the cached compressed store part. Go's and Python's gzip readers
both read multi-member streams as one.
"""

from __future__ import annotations

import ctypes
import gzip
import math
import platform
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    Summary,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from exporter import __version__, catalog
from exporter.snapshot import LabelPairs, Sample
from exporter.store import SnapshotStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

TRIM_ABOVE = 4 << 20  # plain body bytes: below this a scrape leaves too little behind to matter
TRIM_EVERY = 10.0  # seconds


def _libc_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only: absent from musl (Alpine)
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc_malloc_trim()

# `_created` series only add noise to a text-format scrape (and change on every restart).
disable_created_metrics()


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def label_prefix(target: str, static: LabelPairs) -> str:
    """The rendered labels every series of a target carries: ``target="x",env="prod"``."""
    pairs = ((catalog.TARGET_LABEL, target),) + tuple(static)
    return ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs)


def _value_text(value: float) -> str:
    """``floatToGoString`` with its common case inlined: a plain ``repr`` (integral counters and
    gauges below 1e6, most fractions) needs none of its checks; inf, NaN, exponents and large
    positive values still go through it, so the text is identical."""
    text = repr(value)
    dot = text.find(".")
    if dot < 0 or (dot > 6 and value > 0):
        return floatToGoString(value)
    return text


# Rendered own labels (``k="v",...``) by their pairs, shared by every target: the same pairs
# (db, cmd, slab class, ...) recur from poll to poll and across targets, and escaping and joining
# them is most of a poll's rendering CPU (docs/benchmarks.md). Cleared when full, so labels that keep
# changing (client names, keys) cannot grow it without bound; the GIL keeps get/set/clear safe.
_LABELS_CACHE: dict[LabelPairs, str] = {}
_LABELS_CACHE_MAX = 20_000  # at worst a few MiB: label pairs are mostly shared between targets


def _own_labels(labels: LabelPairs) -> str:
    text = _LABELS_CACHE.get(labels)
    if text is None:
        if len(_LABELS_CACHE) >= _LABELS_CACHE_MAX:
            _LABELS_CACHE.clear()
        text = _LABELS_CACHE[labels] = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels)
    return text


def render_chunks(samples: Iterable[Sample], prefix: str) -> dict[str, bytes]:
    """Group a target's samples by family and render each group to exposition lines."""
    lines: dict[str, list[str]] = {}
    for s in samples:
        labels = f"{prefix},{_own_labels(s.labels)}" if s.labels else prefix
        lines.setdefault(s.family, []).append(f"{s.family}{s.suffix}{{{labels}}} {_value_text(s.value)}\n")
    # "replace": the config refuses text that is not valid Unicode, and sources decode with
    # "replace"; should a lone surrogate still slip through, it costs a "?", not the target.
    return {family: "".join(parts).encode("utf-8", "replace") for family, parts in lines.items()}


BATCH_CHUNKS = 8192  # chunks average ~80 bytes: pieces of ~0.5-1 MiB


def batches(parts: list[bytes], count: int = BATCH_CHUNKS) -> list[bytes]:
    """Join chunks into pieces of ``count`` chunks: few writes/zlib calls, no huge buffer.

    By count rather than by size: slicing and joining run in C, a size-tracking loop would not.
    """
    return [b"".join(parts[i:i + count]) for i in range(0, len(parts), count)]


OWN_PREFIX = "cache_exporter_"


def exposition_order(specs: list[catalog.MetricSpec]) -> list[catalog.MetricSpec]:
    """The stores' families in declaration order, then the exporter's own per-target ones."""
    return [s for s in specs if not s.name.startswith(OWN_PREFIX)] + \
        [s for s in specs if s.name.startswith(OWN_PREFIX)]


def _header(spec: catalog.MetricSpec) -> bytes:
    return f"# HELP {spec.name} {_escape_help(spec.help)}\n# TYPE {spec.name} {spec.type}\n".encode()


class StateHealth(Protocol):
    """What the state-file collector reads: a ``state.StateFile``."""

    @property
    def last_save(self) -> float | None: ...  # Unix time of the last successful save

    @property
    def failures(self) -> int: ...


class _StateCollector:
    """The forecast state file's health, read at scrape time."""

    def __init__(self, state_file: StateHealth, restored: Callable[[], int]) -> None:
        self.state_file = state_file
        self.restored = restored

    def collect(self) -> Iterable[Metric]:
        if self.state_file.last_save is not None:
            yield GaugeMetricFamily("cache_exporter_state_last_save_timestamp_seconds",
                                    "Unix time the forecast state file was last written.",
                                    value=self.state_file.last_save)
        yield CounterMetricFamily("cache_exporter_state_save_failures",
                                  "Writes of the forecast state file that failed (the log says why).",
                                  value=self.state_file.failures)
        yield GaugeMetricFamily("cache_exporter_state_restored_targets",
                                "Targets whose forecast history was restored from the state file at start.",
                                value=self.restored())


class _HTTPCollector:
    """The HTTP server's bounds at work and the web config's health, read at scrape time."""

    def __init__(self, server: Any, web: Any) -> None:
        self.server = server
        self.web = web

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("cache_exporter_http_connections", "Open HTTP connections.",
                                value=self.server.connections)
        yield CounterMetricFamily("cache_exporter_http_connections_evicted",
                                  "Idle or slow HTTP connections closed to admit a new one at the connection cap.",
                                  value=self.server.evicted)
        yield CounterMetricFamily("cache_exporter_http_connections_refused",
                                  "HTTP connections refused (503) because every connection was busy at the cap.",
                                  value=self.server.refused)
        if self.web is not None:
            yield CounterMetricFamily("cache_exporter_http_auth_failures",
                                      "Requests refused with 401: missing or wrong basic-auth credentials.",
                                      value=self.web.auth_failures)
            yield CounterMetricFamily("cache_exporter_web_config_reload_failures",
                                      "Changes to the web config file (or its certificates) that were invalid "
                                      "and kept the previous configuration (the log says why).",
                                      value=self.web.reload_failures)


class _DiscoveryCollector:
    """Each discovery template's health, read at scrape time (families declared in the catalog)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def collect(self) -> Iterable[Metric]:
        labels = ["template", "kind"]
        errors = CounterMetricFamily(catalog.DISCOVERY_ERRORS.removesuffix("_total"),
                                     catalog.get(catalog.DISCOVERY_ERRORS).help, labels=labels)
        targets = GaugeMetricFamily(catalog.DISCOVERY_TARGETS, catalog.get(catalog.DISCOVERY_TARGETS).help,
                                    labels=labels)
        success = GaugeMetricFamily(catalog.DISCOVERY_LAST_SUCCESS, catalog.get(catalog.DISCOVERY_LAST_SUCCESS).help,
                                    labels=labels)
        for state in self.runner.states():
            key = [state.template.name, state.template.kind]
            errors.add_metric(key, state.errors)
            targets.add_metric(key, len(state.targets))
            if state.last_success is not None:
                success.add_metric(key, state.last_success)
        yield from (errors, targets, success)


class Exposition:
    """Builds /metrics bodies from a SnapshotStore plus the process-wide registry."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self.registry = CollectorRegistry(auto_describe=True)  # the exporter's own: cache_exporter_*
        # Apart, so that the process's families render after everything else.
        self.process_registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.process_registry)
        PlatformCollector(registry=self.process_registry)
        GCCollector(registry=self.process_registry)
        build = Gauge("cache_exporter_build_info", "Constant 1; labels: version and Python version.",
                      ["version", "python_version"], registry=self.registry)
        build.labels(__version__, platform.python_version()).set(1)
        self.targets = Gauge("cache_exporter_targets", "Configured targets by type.", ["type"],
                             registry=self.registry)
        self.targets_owned = Gauge(
            "cache_exporter_targets_owned",
            "Targets this replica polls: those of its shard (--shard, --total-shards), all of them when not sharded.",
            registry=self.registry)
        self.shard_info = Gauge(
            "cache_exporter_shard_info",
            "Constant 1; labels: this replica's shard index and the total number of shards (0 and 1 when not "
            "sharded).", ["index", "total"], registry=self.registry)
        self.total_shards = Gauge(
            "cache_exporter_total_shards",
            "Replicas sharing the targets (--total-shards; 1 when not sharded): the alert rules compare it "
            "with the shards seen.", registry=self.registry)
        self.set_shard(0, 1)
        self.reload_ok = Gauge("cache_exporter_config_last_reload_successful",
                               "1 if the last config (re)load succeeded.", registry=self.registry)
        self.reload_time = Gauge("cache_exporter_config_last_reload_success_timestamp_seconds",
                                 "Unix time of the last successful config (re)load.", registry=self.registry)
        self.render_time = Summary("cache_exporter_render_duration_seconds",
                                   "Time to build a /metrics body.", registry=self.registry)
        self._lock = threading.Lock()
        self._cache_generation = -1
        self._cache_parts: list[bytes] | None = None
        self._cache_gzip: list[bytes] | None = None
        self._trimmed_at = -math.inf
        self._headers: dict[str, bytes] = {}

    def set_shard(self, index: int, total: int) -> None:
        self.shard_info.clear()
        self.shard_info.labels(str(index), str(total)).set(1)
        self.total_shards.set(total)

    def watch_http(self, server: Any, web: Any) -> None:
        """Export the HTTP server's connection counts and the web config's failures."""
        self.registry.register(_HTTPCollector(server, web))

    def watch_discovery(self, runner: Any) -> None:
        """Export each discovery template's errors, target count and last success."""
        self.registry.register(_DiscoveryCollector(runner))

    def watch_state(self, state_file: StateHealth, restored: Callable[[], int]) -> None:
        """Export the state file's health: when it was last written, failed writes, targets restored."""
        self.registry.register(_StateCollector(state_file, restored))

    def _build(self) -> tuple[int, list[bytes]]:
        """(generation, the stored targets' part as ~1 MiB pieces) from one consistent view."""
        generation, by_family = self.store.family_chunks()
        parts: list[bytes] = []
        for spec in exposition_order(catalog.families()):
            chunks = by_family.get(spec.name)
            if chunks:
                header = self._headers.get(spec.name)
                if header is None:
                    header = self._headers[spec.name] = _header(spec)
                parts.append(header)
                parts.extend(chunks)
        # Batches, built once per store change: no body-sized buffer (page faults on every
        # render) and no per-scrape loop over hundreds of thousands of chunks.
        return generation, batches(parts)

    def _store_part(self, compress: bool) -> list[bytes]:
        """The stored targets' part as ~1 MiB pieces, each encoding cached until the store changes.

        Not one buffer: at a thousand targets the body is tens of MB, and a fresh buffer that size
        page-faults its way in on every render (docs/benchmarks.md, "Design measurements").
        """
        with self._lock:
            stale = self.store.generation != self._cache_generation
            if not compress:
                plain = self._cache_parts
                return self._rebuild() if stale or plain is None else plain
            if stale:
                self._rebuild()
            if self._cache_gzip is None:
                # Level 1: /metrics bodies are repetitive text and compress well even at the fastest level.
                z = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: gzip framing
                parts = self._cache_parts
                assert parts is not None  # set by _rebuild, which is what clears the gzip pieces
                size = sum(len(batch) for batch in parts)
                self._cache_gzip = [z.compress(batch) for batch in parts]
                self._cache_gzip.append(z.flush())
                # Prometheus asks for gzip: the plain pieces (the body's full size, the largest
                # block held between scrapes) are not kept beside the compressed ones; a plain
                # request rebuilds them.
                self._cache_parts = None
                del parts
                self._release(size)
            return self._cache_gzip

    def _rebuild(self) -> list[bytes]:
        """The plain pieces for the store as it is now (the lock held); the gzip ones go with an
        older store."""
        generation, parts = self._build()
        if generation != self._cache_generation:
            self._cache_gzip = None
        self._cache_parts, self._cache_generation = parts, generation
        return parts

    def _release(self, size: int) -> None:
        """Hand the memory a large body was built in back to the kernel (glibc's ``malloc_trim``).

        After a scrape the freed body pieces and the poll threads' transient buffers sit in
        malloc's free lists, counted in RSS; ``malloc_trim`` returns them for a few ms of CPU
        (docs/benchmarks.md). At most once per ``TRIM_EVERY`` seconds, and only for bodies of
        ``TRIM_ABOVE`` bytes or more."""
        now = time.monotonic()
        if _malloc_trim is None or size < TRIM_ABOVE or now - self._trimmed_at < TRIM_EVERY:
            return
        self._trimmed_at = now
        _malloc_trim(0)

    def body_parts(self, compress: bool = False) -> list[bytes]:
        """The whole body as chunks: the stored targets, then the process-wide part."""
        started = time.perf_counter()
        tail = generate_latest(self.registry) + generate_latest(self.process_registry)
        if compress:
            tail = gzip.compress(tail, compresslevel=1, mtime=0)
        parts = [*self._store_part(compress), tail]
        self.render_time.observe(time.perf_counter() - started)
        return parts

    def cached_body_parts(self, compress: bool = False) -> list[bytes] | None:
        """``body_parts`` when the stored targets' part for this encoding is already built for the
        store's current generation, else None; never waits for the lock (the event loop calls
        this). The process-wide tail is still rendered here: it is a few series, and its values
        change on every scrape."""
        started = time.perf_counter()
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self.store.generation != self._cache_generation:
                return None
            store_part = self._cache_gzip if compress else self._cache_parts
        finally:
            self._lock.release()
        if store_part is None:
            return None
        tail = generate_latest(self.registry) + generate_latest(self.process_registry)
        if compress:
            tail = gzip.compress(tail, compresslevel=1, mtime=0)
        parts = [*store_part, tail]
        self.render_time.observe(time.perf_counter() - started)
        return parts

    def body(self, compress: bool = False) -> bytes:
        return b"".join(self.body_parts(compress))
