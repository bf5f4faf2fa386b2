"""The catalog of every metric family the exporter can emit: name, type, help, labels.

Sources declare their families here when imported; exposition looks up HELP/TYPE here; a
family's labels must be listed in exporter.labels, from which the config validator refuses
static labels that would collide with them; the metrics reference (docs/metrics.md) is
generated from it. One table, many readers.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.errors import REASONS
from exporter.labels import FAMILY_LABELS, TARGET_LABEL

UNIFIED = "unified"
EXPORTER = "exporter"
DISCOVERY = "discovery"  # process-wide, one series per discovery template: no target, no static labels

GAUGE = "gauge"
COUNTER = "counter"
SUMMARY = "summary"


@dataclass(frozen=True)
class MetricSpec:
    """One metric family. ``labels`` are the family's own labels, excluding target/static labels."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...] = ()
    group: str = ""  # docs/metrics.md section: "unified", "redis", "exporter", ...
    optional_labels: tuple[str, ...] = ()  # present on some series only (e.g. cache, for in-process caches)

    @property
    def essential(self) -> bool:
        """Kept whatever a target's series cap says: the unified and exporter families, the only
        ones dashboards and alerts need for every store (their series count is fixed, except
        with the optional labels, which name data and count against the cap)."""
        return self.group in (UNIFIED, EXPORTER) or self.name.endswith("_up")

    def __post_init__(self) -> None:
        if self.type == COUNTER and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name} must end in _total")
        if self.type != COUNTER and self.name.endswith("_total"):
            raise ValueError(f"non-counter {self.name} must not end in _total")


_families: dict[str, MetricSpec] = {}


def declare(spec: MetricSpec) -> MetricSpec:
    """Register a family; declaring the same name twice with different specs is a bug, and so is
    a per-target family with a label the config does not reserve (exporter.labels)."""
    if spec.group != DISCOVERY:
        unlisted = sorted(set(spec.labels + spec.optional_labels) - FAMILY_LABELS)
        if unlisted:
            raise ValueError(f"metric {spec.name}: add its labels {unlisted} to exporter.labels.FAMILY_LABELS")
    existing = _families.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"metric {spec.name} declared twice with different specs")
    _families[spec.name] = spec
    return spec


def gauge(name: str, help: str, labels: tuple[str, ...] = (), group: str = "",
          optional_labels: tuple[str, ...] = ()) -> str:
    declare(MetricSpec(name, GAUGE, help, labels, group, optional_labels))
    return name


def counter(name: str, help: str, labels: tuple[str, ...] = (), group: str = "",
            optional_labels: tuple[str, ...] = ()) -> str:
    declare(MetricSpec(name, COUNTER, help, labels, group, optional_labels))
    return name


def summary(name: str, help: str, labels: tuple[str, ...] = (), group: str = "") -> str:
    declare(MetricSpec(name, SUMMARY, help, labels, group))
    return name


def get(name: str) -> MetricSpec:
    return _families[name]


def find(name: str) -> MetricSpec | None:
    return _families.get(name)


def families() -> list[MetricSpec]:
    """All declared families in declaration order (exposition order too, except that the
    exporter's own cache_exporter_* families come after the stores': exposition.exposition_order)."""
    return list(_families.values())


def label_names() -> set[str]:
    """Every label name some family uses itself; static labels must not reuse them."""
    names = {TARGET_LABEL}
    for spec in _families.values():
        if spec.group == DISCOVERY:
            continue  # these series carry no static labels: nothing to collide with
        names.update(spec.labels)
        names.update(spec.optional_labels)
    return names


_IN_PROCESS = " For an app target's in-process caches, label cache names the cache."

# Unified families (docs/architecture.md, "The metric contract"): dashboards and alerts use these for
# every store. Declared here because no single source owns them.
CACHE_UP = gauge("cache_up", "1 if the last poll of the target succeeded, else 0.", ("store",), UNIFIED)
CACHE_INFO = gauge(
    "cache_info",
    "Constant 1; labels describe the store: version, role and eviction policy.",
    ("store", "version", "role", "eviction_policy"),
    UNIFIED,
)
CACHE_MEMORY_USED = gauge(
    "cache_memory_used_bytes",
    "Memory counted against the store's limit (Redis: used_memory minus mem_not_counted_for_evict).",
    ("store",),
    UNIFIED,
)
CACHE_MEMORY_LIMIT = gauge(
    "cache_memory_limit_bytes",
    "Effective memory limit; absent when none can be known. Where it came from: cache_memory_limit_info.",
    ("store",),
    UNIFIED,
)
CACHE_MEMORY_LIMIT_INFO = gauge(
    "cache_memory_limit_info",
    "Constant 1; label source says where cache_memory_limit_bytes came from (maxmemory, config, system; "
    "managed: a managed store's declared data limit).",
    ("store", "source"),
    UNIFIED,
)
CACHE_MEMORY_UTILIZATION = gauge(
    "cache_memory_utilization_ratio",
    "cache_memory_used_bytes / cache_memory_limit_bytes; absent when there is no limit.",
    ("store",),
    UNIFIED,
)
CACHE_MEMORY_HEADROOM = gauge(
    "cache_memory_headroom_bytes",
    "cache_memory_limit_bytes - cache_memory_used_bytes (negative when over the limit).",
    ("store",),
    UNIFIED,
)
CACHE_RESIDENT = gauge(
    "cache_resident_memory_bytes",
    "Resident set size of the store process, as the store reports it.",
    ("store",),
    UNIFIED,
)
CACHE_RESIDENT_LIMIT = gauge(
    "cache_resident_memory_limit_bytes",
    "Hard memory limit that gets the process killed: the target's memory_limit, else the host's memory "
    "(absent for a managed store).",
    ("store",),
    UNIFIED,
)
CACHE_EVICTS_WHEN_FULL = gauge(
    "cache_evicts_when_full",
    "1 if the store evicts keys when it reaches its limit, 0 if writes fail (or the process grows unbounded).",
    ("store",),
    UNIFIED,
)
CACHE_HITS = counter("cache_hits_total", "Lookups that found the key." + _IN_PROCESS, ("store",), UNIFIED, ("cache",))
CACHE_MISSES = counter("cache_misses_total", "Lookups that did not find the key." + _IN_PROCESS, ("store",), UNIFIED,
                       ("cache",))
CACHE_EVICTIONS = counter(
    "cache_evictions_total", "Keys evicted to stay under the memory limit." + _IN_PROCESS, ("store",), UNIFIED,
    ("cache",)
)
CACHE_EXPIRATIONS = counter(
    "cache_expirations_total", "Keys removed because their TTL expired.", ("store",), UNIFIED
)
CACHE_WRITE_REJECTIONS = counter(
    "cache_write_rejections_total",
    "Writes refused for lack of memory (Redis: -OOM error replies).",
    ("store",),
    UNIFIED,
)
CACHE_ITEMS = gauge("cache_items", "Keys / items / entries currently stored." + _IN_PROCESS, ("store",), UNIFIED,
                    ("cache",))
# Written by the forecast stage (exporter.forecast) for every store.
CACHE_MEMORY_GROWTH = gauge(
    "cache_memory_growth_bytes_per_second",
    "Growth of cache_memory_used_bytes behind the countdown (median rise of the peaks of the window it "
    "came from), else over about the forecast window; negative when shrinking. Absent until a few "
    "minutes of history.",
    ("store",), UNIFIED)
CACHE_MEMORY_UNTIL_FULL = gauge(
    "cache_memory_seconds_until_full",
    "Forecast seconds until cache_memory_used_bytes reaches cache_memory_limit_bytes, given only when the "
    "growth has been seen for at least half of it; +Inf when not growing (or not for long enough), and for "
    "stores that evict when full (they do not run out at their limit); 0 when at the limit.",
    ("store",), UNIFIED)
CACHE_MEMORY_FORECAST_BASIS = gauge(
    "cache_memory_forecast_basis_seconds",
    "How long cache_memory_used_bytes has been seen growing: the longest window in which every fifth's "
    "peak rose above the one before (a step, a sawtooth or noise does not); 0 when not growing.",
    ("store",), UNIFIED)
CACHE_RESIDENT_UNTIL_FULL = gauge(
    "cache_resident_memory_seconds_until_full",
    "Forecast seconds until the resident memory reaches cache_resident_memory_limit_bytes (the hard limit "
    "that kills the process), for every eviction policy; +Inf when not growing.",
    ("store",), UNIFIED)
# Written by the audit stage (exporter.audit) for every store.
CACHE_CONFIG_FINDING = gauge(
    "cache_config_finding",
    "Constant 1 per active configuration-audit finding; labels check and severity (info, warning, critical).",
    ("check", "severity"), UNIFIED)
CACHE_CONFIG_FINDING_ACKNOWLEDGED = gauge(
    "cache_config_finding_acknowledged",
    "Constant 1 per active finding acknowledged in the target's config (acknowledge): shown, but not in "
    "cache_config_finding, so it raises no alert.",
    ("check", "severity"), UNIFIED)

# Per-target self-metrics of the exporter, rendered alongside each target's snapshot.
POLLS = counter("cache_exporter_polls_total", "Polls attempted for the target.", (), EXPORTER)
POLL_ERRORS = counter(
    "cache_exporter_poll_errors_total",
    f"Failed polls by reason ({', '.join(REASONS)}).",
    ("reason",),
    EXPORTER,
)
POLLS_SKIPPED = counter(
    "cache_exporter_polls_skipped_total",
    "Scheduled polls not started because the previous poll of the target was still running.",
    (),
    EXPORTER,
)
POLL_DURATION = summary(
    "cache_exporter_poll_duration_seconds", "Time spent polling the target.", (), EXPORTER
)
LAST_POLL_DURATION = gauge(
    "cache_exporter_last_poll_duration_seconds", "Duration of the most recent poll.", (), EXPORTER
)
LAST_SUCCESS = gauge(
    "cache_exporter_last_poll_success_timestamp_seconds",
    "Unix time of the last successful poll; absent before the first success.",
    (),
    EXPORTER,
)
MALFORMED_FIELDS = counter(
    "cache_exporter_malformed_fields_total",
    "Fields in otherwise valid replies whose values could not be parsed or are implausible (a negative "
    "counter, a byte count above 1 EiB); skipped, not fatal.",
    (),
    EXPORTER,
)
SERIES_DROPPED = counter(
    "cache_exporter_series_dropped_total",
    "Series a poll produced but the exporter dropped, by family and reason: max_series (the target's "
    "series cap was reached; past it, each skipped INFO line or slab class counts once per family it would "
    "have filled) or label_too_long (a label value longer than max_label_value_length).",
    ("family", "reason"),
    EXPORTER,
)
TARGET_SERIES = gauge(
    "cache_exporter_target_series",
    "Series the last successful poll of the target produced (the exporter's own per-target series "
    "excluded); compare with the target's max_series.",
    (),
    EXPORTER,
)
SECTION_ERRORS = counter(
    "cache_exporter_section_errors_total",
    "Polls where an optional part of the reply failed (e.g. memcached 'stats items' answered ERROR); "
    "the rest of the poll was used.",
    ("section",),
    EXPORTER,
)

# Service discovery (exporter.discovery), process-wide: rendered by exposition's registry, not per target.
DISCOVERY_ERRORS = counter(
    "cache_exporter_discovery_errors_total",
    "Refreshes of a discovery template that failed (seed unreachable, broken file_sd file, no DNS answer); "
    "its last good target list is kept and the log says why.",
    ("template", "kind"), DISCOVERY)
DISCOVERY_TARGETS = gauge(
    "cache_exporter_discovery_targets",
    "Targets a discovery template currently stands for (its last good list).",
    ("template", "kind"), DISCOVERY)
DISCOVERY_LAST_SUCCESS = gauge(
    "cache_exporter_discovery_last_success_timestamp_seconds",
    "Unix time of a discovery template's last successful refresh; absent before the first.",
    ("template", "kind"), DISCOVERY)
