"""Render stored snapshots as Prometheus text: chunks at poll time, one join per scrape.

A scrape never contacts a target and never formats a number: each poll renders its own
samples into per-family text chunks (``render_chunks``), and a scrape joins the chunks
family by family behind one HELP/TYPE header (``Exposition.body``). The joined body and its
gzip form are cached until the store changes. The exporter's process-wide metrics (build
info, config reload status, process stats) are rendered per scrape (``selfmetrics``); they are
few.

Order: what someone reading a scrape came for first -- the stores' families (cache_*,
redis_*, memcached_*, app_*, http_cache_*) -- then the exporter's own (cache_exporter_*, per
target and process-wide), then the Python process's (process_*, python_*) last.

Gzip uses multi-member streams (RFC 1952 2.2): the small registry part is compressed per
scrape and appended to the cached compressed store part. Go's and Python's gzip readers
both read multi-member streams as one.
"""

from __future__ import annotations

import gzip
import platform
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from exporter import __version__, catalog, memory
from exporter.selfmetrics import (
    Collected,
    Family,
    Gauge,
    ProcessCollector,
    Registry,
    Series,
    Summary,
    escape_help,
    escape_label_value,
    go_float,
)
from exporter.snapshot import LabelPairs, Sample
from exporter.store import Chunks, SnapshotStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

TRIM_ABOVE = 4 << 20  # plain body bytes: below this a scrape leaves too little behind to matter


def label_prefix(target: str, static: LabelPairs) -> str:
    """The rendered labels every series of a target carries: ``target="x",env="prod"``."""
    pairs = ((catalog.TARGET_LABEL, target),) + tuple(static)
    return ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs)


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
    family = None
    parts: list[str] = []
    # Inlined (the label cache lookup) and unpacked: this runs for every series of every poll,
    # ~20 % of the poll path's CPU (py-spy). A value needing none of ``go_float``'s special cases
    # (integral counters and gauges below 1e6, most fractions) is its plain ``repr``; inf, NaN,
    # exponents and large positive values go through it, so the text is identical.
    cache = _LABELS_CACHE
    for name, labels, value, suffix in samples:
        if name != family:  # a source adds a family's series one after another
            family = name
            parts = lines.setdefault(name, [])
        if labels:
            own = cache.get(labels)
            if own is None:
                own = _own_labels(labels)
            head = f"{name}{suffix}{{{prefix},{own}}} "
        else:
            head = f"{name}{suffix}{{{prefix}}} "
        text = repr(value)
        dot = text.find(".")
        if dot < 0 or (dot > 6 and value > 0):
            text = go_float(value)
        parts.append(f"{head}{text}\n")
    # "replace": the config refuses text that is not valid Unicode, and sources decode with
    # "replace"; should a lone surrogate still slip through, it costs a "?", not the target.
    return {family: "".join(parts).encode("utf-8", "replace") for family, parts in lines.items()}


BATCH_CHUNKS = 8192  # chunks average ~80 bytes: pieces of ~0.5-1 MiB


OWN_PREFIX = "cache_exporter_"


def exposition_order(specs: list[catalog.MetricSpec]) -> list[catalog.MetricSpec]:
    """The stores' families in declaration order, then the exporter's own per-target ones."""
    return [s for s in specs if not s.name.startswith(OWN_PREFIX)] + \
        [s for s in specs if s.name.startswith(OWN_PREFIX)]


def _header(spec: catalog.MetricSpec) -> bytes:
    return f"# HELP {spec.name} {escape_help(spec.help)}\n# TYPE {spec.name} {spec.type}\n".encode()


class StateHealth(Protocol):
    """What the state-file collector reads: a ``state.StateFile``."""

    @property
    def last_save(self) -> float | None: ...  # Unix time of the last successful save

    @property
    def failures(self) -> int: ...


STATE_LAST_SAVE = Family("cache_exporter_state_last_save_timestamp_seconds", "gauge",
                         "Unix time the forecast state file was last written.")
STATE_SAVE_FAILURES = Family("cache_exporter_state_save_failures_total", "counter",
                             "Writes of the forecast state file that failed (the log says why).")
STATE_RESTORED = Family("cache_exporter_state_restored_targets", "gauge",
                        "Targets whose forecast history was restored from the state file at start.")


def _state_collector(state_file: StateHealth, restored: Callable[[], int]) -> Callable[[], Iterator[Collected]]:
    """The forecast state file's health, read at scrape time."""
    def collect() -> Iterator[Collected]:
        if state_file.last_save is not None:
            yield STATE_LAST_SAVE.one(state_file.last_save)
        yield STATE_SAVE_FAILURES.one(state_file.failures)
        yield STATE_RESTORED.one(restored())
    return collect


HTTP_CONNECTIONS = Family("cache_exporter_http_connections", "gauge", "Open HTTP connections.")
HTTP_EVICTED = Family("cache_exporter_http_connections_evicted_total", "counter",
                      "Idle or slow HTTP connections closed to admit a new one at the connection cap.")
HTTP_REFUSED = Family("cache_exporter_http_connections_refused_total", "counter",
                      "HTTP connections refused (503) because every connection was busy at the cap.")
HTTP_AUTH_FAILURES = Family("cache_exporter_http_auth_failures_total", "counter",
                            "Requests refused with 401: missing or wrong basic-auth credentials.")
WEB_RELOAD_FAILURES = Family("cache_exporter_web_config_reload_failures_total", "counter",
                             "Changes to the web config file (or its certificates) that were invalid "
                             "and kept the previous configuration (the log says why).")


def _http_collector(server: Any, web: Any) -> Callable[[], Iterator[Collected]]:
    """The HTTP server's bounds at work and the web config's health, read at scrape time."""
    def collect() -> Iterator[Collected]:
        yield HTTP_CONNECTIONS.one(server.connections)
        yield HTTP_EVICTED.one(server.evicted)
        yield HTTP_REFUSED.one(server.refused)
        if web is not None:
            yield HTTP_AUTH_FAILURES.one(web.auth_failures)
            yield WEB_RELOAD_FAILURES.one(web.reload_failures)
    return collect


def _catalog_family(name: str) -> Family:
    spec = catalog.get(name)
    return Family(name, spec.type, spec.help, spec.labels)


DISCOVERY_ERRORS = _catalog_family(catalog.DISCOVERY_ERRORS)
DISCOVERY_TARGETS = _catalog_family(catalog.DISCOVERY_TARGETS)
DISCOVERY_LAST_SUCCESS = _catalog_family(catalog.DISCOVERY_LAST_SUCCESS)


def _discovery_collector(runner: Any) -> Callable[[], Iterator[Collected]]:
    """Each discovery template's health, read at scrape time (families declared in the catalog)."""
    def collect() -> Iterator[Collected]:
        errors: list[Series] = []
        targets: list[Series] = []
        success: list[Series] = []
        for state in runner.states():
            key = (state.template.name, state.template.kind)
            errors.append(("", key, state.errors))
            targets.append(("", key, len(state.targets)))
            if state.last_success is not None:
                success.append(("", key, state.last_success))
        yield from ((DISCOVERY_ERRORS, errors), (DISCOVERY_TARGETS, targets), (DISCOVERY_LAST_SUCCESS, success))
    return collect


class Exposition:
    """Builds /metrics bodies from a SnapshotStore plus the process-wide registry."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self.registry = Registry()  # the exporter's own: cache_exporter_*
        # Apart, so that the process's families render after everything else.
        self.process_registry = Registry()
        self.process_registry.register(ProcessCollector().collect)
        build = Gauge("cache_exporter_build_info", "Constant 1; labels: version and Python version.",
                      ("version", "python_version"))
        build.set(1, __version__, platform.python_version())
        self.targets = Gauge("cache_exporter_targets", "Configured targets by type.", ("type",))
        self.targets_owned = Gauge(
            "cache_exporter_targets_owned",
            "Targets this replica polls: those of its shard (--shard, --total-shards), all of them when not sharded.")
        self.shard_info = Gauge(
            "cache_exporter_shard_info",
            "Constant 1; labels: this replica's shard index and the total number of shards (0 and 1 when not "
            "sharded).", ("index", "total"))
        self.total_shards = Gauge(
            "cache_exporter_total_shards",
            "Replicas sharing the targets (--total-shards; 1 when not sharded): the alert rules compare it "
            "with the shards seen.")
        self.reload_ok = Gauge("cache_exporter_config_last_reload_successful",
                               "1 if the last config (re)load succeeded.")
        self.reload_time = Gauge("cache_exporter_config_last_reload_success_timestamp_seconds",
                                 "Unix time of the last successful config (re)load.")
        self.render_time = Summary("cache_exporter_render_duration_seconds", "Time to build a /metrics body.")
        for metric in (build, self.targets, self.targets_owned, self.shard_info, self.total_shards,
                       self.reload_ok, self.reload_time, self.render_time):
            self.registry.register(metric.collect)
        self.set_shard(0, 1)
        self._lock = threading.Lock()
        self._cache_generation = -1
        self._cache_parts: list[bytes] | None = None
        self._cache_gzip: list[bytes] | None = None
        self._headers: dict[str, bytes] = {}

    def set_shard(self, index: int, total: int) -> None:
        self.shard_info.clear()
        self.shard_info.set(1, str(index), str(total))
        self.total_shards.set(total)

    def watch_http(self, server: Any, web: Any) -> None:
        """Export the HTTP server's connection counts and the web config's failures."""
        self.registry.register(_http_collector(server, web))

    def watch_discovery(self, runner: Any) -> None:
        """Export each discovery template's errors, target count and last success."""
        self.registry.register(_discovery_collector(runner))

    def watch_state(self, state_file: StateHealth, restored: Callable[[], int]) -> None:
        """Export the state file's health: when it was last written, failed writes, targets restored."""
        self.registry.register(_state_collector(state_file, restored))

    def _build(self) -> tuple[int, list[bytes]]:
        """(generation, the stored targets' part as ~1 MiB pieces) from one consistent view.

        Each target's packed text is inflated once (the texts are the body's size while this
        runs, freed when it returns); then family by family, each target's chunk is sliced out
        of its text and joined into a piece every ``BATCH_CHUNKS`` chunks: no body-sized buffer
        (page faults on every render), and never more than one piece's worth of slices alive at
        once. Slicing every chunk first (150 000 at 1000 targets) left ~25 MiB of the
        small-object allocator's pages behind each scrape (docs/benchmarks.md, "Fixes, measured before/after")."""
        generation, stored = self.store.chunks()
        # Targets with the same families share one index: a family's position is looked up once
        # per distinct family list, not once per target.
        groups: dict[int, tuple[dict[str, int], list[tuple[Chunks, bytes]]]] = {}
        for chunks in stored:
            group = groups.get(id(chunks.index))
            if group is None:
                group = groups[id(chunks.index)] = (chunks.index, [])
            group[1].append((chunks, chunks.text()))  # inflated once per build, sliced per family
        present = {family for index, _ in groups.values() for family in index}
        parts: list[bytes] = []
        batch: list[bytes] = []
        for spec in exposition_order(catalog.families()):
            if spec.name not in present:
                continue
            header = self._headers.get(spec.name)
            if header is None:
                header = self._headers[spec.name] = _header(spec)
            batch.append(header)
            for index, members in groups.values():
                position = index.get(spec.name)
                if position is not None:
                    batch.extend(chunks.chunk(position, text) for chunks, text in members)
                    if len(batch) >= BATCH_CHUNKS:
                        parts.append(b"".join(batch))
                        batch = []
        if batch:
            parts.append(b"".join(batch))
        return generation, parts

    def _store_part(self, compress: bool) -> list[bytes]:
        """The stored targets' part as ~1 MiB pieces, each encoding cached until the store changes.

        Not one buffer: at a thousand targets the body is tens of MB, and a fresh buffer that size
        page-faults its way in on every render (docs/benchmarks.md, "Design measurements").
        """
        with self._lock:
            stale = self.store.generation != self._cache_generation
            if not compress:
                plain = self._cache_parts
                if stale or plain is None:
                    plain = self._rebuild()
                    if sum(map(len, plain)) >= TRIM_ABOVE:
                        # Not kept: a body this large comes with many targets, whose polls change
                        # the store long before the next scrape, and keeping it held its whole
                        # size (25 MB at 1000 Redis targets) until a gzip scrape came.
                        self._cache_parts = None
                return plain
            if stale or (self._cache_gzip is None and self._cache_parts is None):
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
        """Hand the memory a large body was built in back to the kernel at once, rather than at
        the daemon's next periodic trim; only for bodies of ``TRIM_ABOVE`` bytes or more. Not
        rate-limited with the periodic trims (which would skip nearly every one): a trim is
        1-3 ms, a body this large tens to hundreds."""
        if size >= TRIM_ABOVE:
            memory.trim(every=0.0)

    def body_parts(self, compress: bool = False) -> list[bytes]:
        """The whole body as chunks: the stored targets, then the process-wide part."""
        started = time.perf_counter()
        return self._with_tail(self._store_part(compress), compress, started)

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
        return self._with_tail(store_part, compress, started)

    def _with_tail(self, store_part: list[bytes], compress: bool, started: float) -> list[bytes]:
        """The stored targets' part, then the process-wide tail rendered now (its own gzip
        member when compressed); the build timed from ``started``."""
        tail = self.registry.render() + self.process_registry.render()
        if compress:
            tail = gzip.compress(tail, compresslevel=1, mtime=0)
        self.render_time.observe(time.perf_counter() - started)
        return [*store_part, tail]

    def body(self, compress: bool = False) -> bytes:
        return b"".join(self.body_parts(compress))
