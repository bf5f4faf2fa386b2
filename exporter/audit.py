"""Configuration audit: findings about settings that turn memory pressure into an outage.

Each check is a row of ``CHECKS``: a name, the store it applies to, and a function of the
poll's facts returning ``(severity, message)`` or None. The daemon evaluates the checks on
every successful poll and exports ``cache_config_finding{check,severity}``; ``cache-exporter
audit`` evaluates them once and exits non-zero for CI/CD. A check whose inputs are unknown
(CONFIG disabled, no hard limit configured) stays silent rather than guessing.
"""

from __future__ import annotations

import datetime
import enum
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from exporter import catalog
from exporter.snapshot import Samples
from exporter.sources.base import Reading
from exporter.targets import Acknowledgement, AppTarget, ManagedStore, MemcachedTarget, RedisTarget, Target

INFO, WARNING, CRITICAL = "info", "warning", "critical"
SEVERITY_ORDER = {INFO: 0, WARNING: 1, CRITICAL: 2}

FINDING = catalog.CACHE_CONFIG_FINDING
ACKNOWLEDGED = catalog.CACHE_CONFIG_FINDING_ACKNOWLEDGED

# Host files behind the same-host checks, under CACHE_EXPORTER_HOST_ROOT (default "/"): an
# exporter in a container sees the node's /proc and /sys only where they are mounted (/host).
OVERCOMMIT_PATH = "proc/sys/vm/overcommit_memory"
THP_PATH = "sys/kernel/mm/transparent_hugepage/enabled"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    message: str
    # Set from the target's ``acknowledge`` list: still reported, but no longer an alert or a CI failure.
    acknowledged: bool = False
    reason: str | None = None


@dataclass
class Facts:
    """What a check may look at: the target's settings and one poll's reading."""

    target: Target
    reading: Reading

    def value(self, family: str) -> float | None:
        return self.reading.samples.value(family)

    @property
    def samples(self) -> Samples:
        return self.reading.samples


Result = tuple[str, str] | None


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


# --- Redis ------------------------------------------------------------------------------

def _maxmemory_unset(f: Facts) -> Result:
    if f.value("redis_memory_max_bytes") != 0 or _managed(f) is not None:
        return None  # a managed service enforces its data limit itself, with maxmemory 0
    severity = CRITICAL if f.target.role == "cache" else WARNING
    return severity, ("maxmemory is 0: Redis never evicts and grows until the container or host kills it; "
                      "set maxmemory below the memory limit")


def _managed(f: Facts) -> ManagedStore | None:
    return f.target.managed if isinstance(f.target, RedisTarget) else None


def _has_limit(f: Facts) -> bool:
    """The store has a limit it evicts at or refuses writes at (maxmemory, or a managed data limit)."""
    if _managed(f) is not None:
        return f.reading.memory.limit is not None
    return (f.value("redis_memory_max_bytes") or 0) > 0


def _noeviction_on_cache(f: Facts) -> Result:
    if f.target.role != "cache" or f.reading.memory.eviction_policy != "noeviction" or not _has_limit(f):
        return None
    if _managed(f) is not None:
        return WARNING, ("managed.evicts_at_limit is none on a cache: at the data limit the service refuses "
                         "writes with -OOM instead of evicting")
    return WARNING, ("maxmemory-policy is noeviction on a cache: at maxmemory writes fail with -OOM "
                     "instead of evicting; use allkeys-lru or allkeys-lfu")


def _volatile_few_expiring(f: Facts) -> Result:
    from exporter.sources.redis import expiring_fraction

    policy = f.reading.memory.eviction_policy or ""
    if not policy.startswith("volatile-") or not _has_limit(f):
        return None
    share = expiring_fraction(f.samples)
    if share >= 0.5:
        return None
    severity = CRITICAL if share < 0.1 else WARNING
    what = ("the service evicts only keys with a TTL (managed.evicts_at_limit: ttl)" if _managed(f) is not None
            else f"maxmemory-policy is {policy}")
    return severity, (f"{what} but only {share:.0%} of keys have a TTL: eviction can free only those, then "
                      "writes fail with -OOM")


def _managed_limit_unknown(f: Facts) -> Result:
    if _managed(f) is None or f.reading.memory.limit is not None:
        return None
    return WARNING, ("managed store without a known data limit (maxmemory is 0 and managed.data_limit is not "
                     "set): no utilization and no countdown; set managed.data_limit to the service's "
                     "maximum data storage")


def _evicting_policy_on_database(f: Facts) -> Result:
    policy = f.reading.memory.eviction_policy or ""
    if f.target.role != "database" or policy in ("", "noeviction") or not (f.value("redis_memory_max_bytes") or 0) > 0:
        return None
    if policy.startswith("volatile-"):
        return WARNING, (f"maxmemory-policy is {policy} on a database: at maxmemory Redis deletes keys that have "
                         "a TTL (sessions, locks, jobs) without telling the application; use noeviction")
    return CRITICAL, (f"maxmemory-policy is {policy} on a database: at maxmemory Redis silently deletes any key, "
                      "and state is lost; use noeviction (writes then fail with -OOM instead)")


def _persistence_on_cache(f: Facts) -> Result:
    rdb, aof = f.value("redis_rdb_enabled"), f.value("redis_aof_enabled")
    if f.target.role == "cache" and (rdb or aof) and _managed(f) is None:  # a provider's snapshots: its forks
        kinds = " and ".join(k for k, on in (("RDB", rdb), ("AOF", aof)) if on)
        return WARNING, (f"{kinds} persistence is on for a cache: every save forks and can nearly double "
                         "resident memory, for data that is disposable")
    return None


def _stop_writes_fork_risk(f: Facts) -> Result:
    risk = f.value("redis_fork_memory_risk_ratio")
    persists = f.value("redis_rdb_enabled") or f.value("redis_aof_enabled")
    if risk is None or not persists or f.value("redis_config_stop_writes_on_bgsave_error") != 1 or risk < 0.8:
        return None
    severity = CRITICAL if risk >= 1.0 else WARNING
    return severity, (f"stop-writes-on-bgsave-error is yes and resident memory plus the largest recent "
                      f"copy-on-write is {risk:.0%} of the hard limit: a failed BGSAVE will make Redis refuse "
                      "all writes (-MISCONF)")


def _redis_limit_above_hard_limit(f: Facts) -> Result:
    maxmemory = f.value("redis_memory_max_bytes") or 0
    hard = f.reading.memory.resident_limit
    if maxmemory <= 0 or not hard or not f.target.memory_limit:
        return None  # only against a configured container limit: the host's RAM is not a budget
    # Overhead in bytes (RSS beyond used_memory), not the fragmentation ratio: on a near-empty
    # server the ratio is 5-10x and would flag every instance.
    rss = f.value("redis_memory_used_rss_bytes") or 0
    overhead = max(0.0, rss - (f.value("redis_memory_used_bytes") or 0))
    expected = maxmemory + overhead + (f.value("redis_mem_not_counted_for_eviction_bytes") or 0)
    return _over_hard_limit(expected, hard, f"maxmemory {_mib(maxmemory)} + {_mib(overhead)} of overhead")


def _over_hard_limit(expected: float, hard: float, what: str) -> Result:
    if expected > hard:
        return CRITICAL, (f"{what} comes to ~{_mib(expected)}, above the hard limit {_mib(hard)}: the process "
                          "is killed before the store ever reaches its own limit")
    if expected > 0.9 * hard:
        return WARNING, (f"{what} comes to ~{_mib(expected)}, {expected / hard:.0%} of the hard limit "
                         f"{_mib(hard)}: no room for forks, buffers or fragmentation")
    return None


def _is_local(target: Target) -> bool:
    if isinstance(target, RedisTarget) and target.managed is None:  # a managed store runs on the provider's hosts
        return target.scheme == "unix" or target.host in LOCAL_HOSTS
    return False


HOST_READ_TTL = 60.0  # host settings change by hand, rarely, and reading them is not free
_host_reads: dict[str, tuple[float, str | None]] = {}


def _read(path: str) -> str | None:
    full = os.path.join(os.environ.get("CACHE_EXPORTER_HOST_ROOT", "/"), path)
    now = time.monotonic()
    cached = _host_reads.get(full)
    if cached is not None and cached[0] > now:
        return cached[1]
    try:
        with open(full, encoding="ascii", errors="replace") as fh:
            value: str | None = fh.read(4096).strip()
    except OSError:
        value = None
    _host_reads[full] = (now + HOST_READ_TTL, value)
    return value


def _host_overcommit(f: Facts) -> Result:
    value = _read(OVERCOMMIT_PATH) if _is_local(f.target) else None
    if value is None or value == "1":
        return None
    return WARNING, (f"vm.overcommit_memory is {value} on this host: the kernel may refuse the fork of a "
                     "BGSAVE or AOF rewrite under memory pressure (Redis asks for 1)")


def _host_thp(f: Facts) -> Result:
    value = _read(THP_PATH) if _is_local(f.target) else None
    if value is None or "[always]" not in value:
        return None
    return WARNING, ("transparent huge pages are 'always' on this host: forks copy 2 MiB pages, inflating "
                     "copy-on-write memory and latency (Redis asks for madvise or never)")


# --- Memcached --------------------------------------------------------------------------

def _memcached_no_eviction_low_headroom(f: Facts) -> Result:
    m = f.reading.memory
    if m.evicts_when_full is not False or m.limit is None or m.used is None:
        return None
    free_pages = f.value("memcached_free_pages")
    headroom = (m.limit - m.used) / m.limit
    if free_pages == 0 or headroom <= 0.02:
        return CRITICAL, ("evictions are off (-M) and no slab page is left: stores that need a new page fail "
                          "with SERVER_ERROR out of memory")
    if headroom < 0.10:
        return WARNING, f"evictions are off (-M) and only {headroom:.0%} of the memory limit is left"
    return None


def _memcached_limit_above_hard_limit(f: Facts) -> Result:
    limit = f.value("memcached_limit_bytes") or 0
    hard = f.reading.memory.resident_limit
    if limit <= 0 or not hard:
        return None
    expected = limit + (f.value("memcached_hash_bytes") or 0)
    return _over_hard_limit(expected, hard, f"-m {_mib(limit)} plus the hash table")


# --- apps -------------------------------------------------------------------------------

# How to give each runtime a heap limit the exporter can read; the detected runtime picks the hint.
APP_LIMIT_HINTS = {
    "nodejs": ("prom-client does not export V8's limit: add the nodejs_heap_size_limit_bytes gauge "
               "(docs/app-targets.md) or set heap_limit to --max-old-space-size"),
    "nodejs-otel": ("OpenTelemetry's runtime-node exports no heap limit: set heap_limit to "
                    "--max-old-space-size"),
    "jvm": "start the JVM with -Xmx (jvm_memory_max_bytes is -1 without it) or set heap_limit",
    "go": "set GOMEMLIMIT (go_gc_gomemlimit_bytes) or heap_limit",
    "json": "map fields.heap_limit to the limit in the JSON body, or set heap_limit",
}
APP_LIMIT_HINT = "set memory_limit to the container's memory limit"


def _app_heap_limit_unknown(f: Facts) -> Result:
    if f.reading.memory.limit:
        return None
    runtime = str(f.reading.details.get("runtime", ""))
    return WARNING, (f"no heap limit known (runtime {runtime or 'unknown'}): the heap has no countdown and the "
                     f"heap alerts cannot fire before the process dies; {APP_LIMIT_HINTS.get(runtime, APP_LIMIT_HINT)}")


def _app_heap_above_hard_limit(f: Facts) -> Result:
    heap = f.value(catalog.CACHE_MEMORY_LIMIT)
    hard = f.target.memory_limit
    if not heap or not hard or not isinstance(f.target, AppTarget):
        return None
    if f.reading.memory.limit_source == "config" and not f.target.heap_limit:
        return None  # a runtime without a heap limit of its own counts against memory_limit itself
    if heap < 0.9 * hard:
        return None
    severity = CRITICAL if heap >= hard else WARNING
    return severity, (f"the heap limit ({_mib(heap)}) is {heap / hard:.0%} of memory_limit ({_mib(hard)}): with "
                      "code, stacks and buffers beside the heap the container is OOM-killed (exit 137) before the "
                      "runtime's own limit; lower the heap limit (--max-old-space-size, -Xmx, GOMEMLIMIT)")


@dataclass(frozen=True)
class Check:
    name: str
    store: type
    evaluate: Callable[[Facts], Result]
    summary: str  # one line for the docs


CHECKS: list[Check] = [
    Check("redis_maxmemory_unset", RedisTarget, _maxmemory_unset,
          "maxmemory is 0 (critical when role is cache; not for a managed store)"),
    Check("redis_noeviction_on_cache", RedisTarget, _noeviction_on_cache,
          "noeviction (managed: evicts_at_limit none) on a target with role cache"),
    Check("redis_volatile_few_expiring", RedisTarget, _volatile_few_expiring,
          "volatile-* policy (managed: evicts_at_limit ttl) with under 50 % of keys having a TTL "
          "(critical under 10 %)"),
    Check("redis_managed_limit_unknown", RedisTarget, _managed_limit_unknown,
          "a managed store with maxmemory 0 and no managed.data_limit: no limit to count against"),
    Check("redis_evicting_policy_on_database", RedisTarget, _evicting_policy_on_database,
          "an evicting maxmemory-policy on a target with role database (critical for allkeys-*)"),
    Check("redis_persistence_on_cache", RedisTarget, _persistence_on_cache,
          "RDB or AOF persistence on a target with role cache (not for a managed store)"),
    Check("redis_stop_writes_fork_risk", RedisTarget, _stop_writes_fork_risk,
          "stop-writes-on-bgsave-error with fork risk >= 80 % of the hard limit (critical >= 100 %)"),
    Check("redis_maxmemory_above_hard_limit", RedisTarget, _redis_limit_above_hard_limit,
          "maxmemory + current RSS overhead + buffers above 90 % of memory_limit (critical above 100 %)"),
    Check("host_overcommit_memory", RedisTarget, _host_overcommit,
          "same host: vm.overcommit_memory is not 1 (not for a managed store)"),
    Check("host_transparent_hugepages", RedisTarget, _host_thp,
          "same host: transparent huge pages set to always (not for a managed store)"),
    Check("memcached_no_eviction_low_headroom", MemcachedTarget, _memcached_no_eviction_low_headroom,
          "-M (evictions off) with under 10 % headroom (critical when no page is left)"),
    Check("memcached_limit_above_hard_limit", MemcachedTarget, _memcached_limit_above_hard_limit,
          "-m plus the hash table above 90 % of memory_limit (critical above 100 %)"),
    Check("app_heap_limit_unknown", AppTarget, _app_heap_limit_unknown,
          "app target without a usable heap limit (no countdown, no heap alert); the hint names the fix"),
    Check("app_heap_limit_above_hard_limit", AppTarget, _app_heap_above_hard_limit,
          "heap limit above 90 % of memory_limit (critical above 100 %): OOM kill before the runtime's limit"),
]


def evaluate(target: Target, reading: Reading, today: datetime.date | None = None) -> list[Finding]:
    """The findings for one successful poll, most severe first; acknowledged ones marked as such."""
    facts = Facts(target, reading)
    acks = active_acknowledgements(target, today)
    findings = []
    for check in CHECKS:
        if isinstance(target, check.store):
            result = check.evaluate(facts)
            if result is not None:
                ack = acks.get(check.name)
                findings.append(Finding(check.name, *result, acknowledged=ack is not None,
                                        reason=ack.reason if ack else None))
    return by_severity(findings)


def checks_for(target_type: type) -> list[str]:
    """The check names that can fire on a target of this class (what ``acknowledge`` may name)."""
    return [c.name for c in CHECKS if issubclass(target_type, c.store)]


def active_acknowledgements(target: Target, today: datetime.date | None = None) -> dict[str, Acknowledgement]:
    """The target's acknowledgements that have not expired (``until`` is the last day they hold)."""
    day = today or datetime.date.today()
    return {a.check: a for a in target.acknowledge if a.until is None or day <= a.until}


def by_severity(findings: list[Finding]) -> list[Finding]:
    """Most severe first; the order within a severity is kept."""
    return sorted(findings, key=lambda f: -SEVERITY_ORDER[f.severity])


def add_samples(findings: list[Finding], out: Samples) -> None:
    # An acknowledged finding moves to its own family, so every rule on cache_config_finding (the
    # audit alerts, RedisDatabaseEvicting) stops firing for it while dashboards can still show it.
    for finding in findings:
        family = ACKNOWLEDGED if finding.acknowledged else FINDING
        out.add(family, 1, (("check", finding.check), ("severity", finding.severity)))



# --- one-shot audit (the CLI) ---------------------------------------------------------

EXIT_OK, EXIT_FINDINGS, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3
AUDIT_POLLS = 2  # Redis sends CONFIG GET on the poll after a connect


class ReportKind(enum.Enum):
    """What an audit row comes from: a target polled, or a file read (where an error is bad input, exit 2)."""

    TARGET = "target"
    NGINX_CONFIG = "nginx config"
    APIGEE_BUNDLE = "Apigee bundle"

    @property
    def polled(self) -> bool:
        return self is ReportKind.TARGET


# The summary's count of file rows in error, per kind, in this order.
BROKEN_FILES = {ReportKind.NGINX_CONFIG: "unparsable nginx configs",
                ReportKind.APIGEE_BUNDLE: "unreadable Apigee bundles"}


@dataclass
class TargetReport:
    name: str
    type: str
    address: str
    error: str | None = None
    reason: str | None = None
    findings: list[Finding] | None = None
    capabilities: dict[str, bool] | None = None  # optional commands probed: False = renamed away or denied
    kind: ReportKind = ReportKind.TARGET


# What a missing optional command costs the audit, for its report.
CAPABILITY_NOTES = {
    "config": "CONFIG is unavailable (renamed away or denied by ACL): the checks that read CONFIG GET "
              "(redis_persistence_on_cache for RDB, redis_stop_writes_fork_risk) cannot run; "
              "metric redis_capability{capability=\"config\"} 0",
    "client": "CLIENT is unavailable (renamed away or denied by ACL): the exporter's connection is not named; "
              "metric redis_capability{capability=\"client\"} 0",
}


def audit_target(target: Target) -> TargetReport:
    """Connect, poll, evaluate; never raises."""
    import time

    from exporter.errors import PollError
    from exporter.sources import source_for

    report = TargetReport(target.name, target.type, target.address)
    source = source_for(target)
    try:
        reading = None
        for _ in range(AUDIT_POLLS):
            reading = source.poll(time.monotonic() + target.timeout)
        assert reading is not None
        report.findings = evaluate(target, reading)
        caps = reading.details.get("capabilities")
        if isinstance(caps, dict):
            report.capabilities = {k: v for k, v in caps.items() if v is not None}
    except PollError as err:
        report.error, report.reason = str(err), err.reason
    finally:
        source.close()
    return report


def audit_all(targets: tuple[Target, ...], workers: int = 16) -> list[TargetReport]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        return list(pool.map(audit_target, targets))


def exit_code(reports: list[TargetReport], fail_on: str) -> int:
    if any(r.error and not r.kind.polled for r in reports):  # a file that cannot be read: a usage error
        return EXIT_CONFIG
    if any(r.error for r in reports):
        return EXIT_UNREACHABLE
    threshold = SEVERITY_ORDER[fail_on]
    if any(SEVERITY_ORDER[f.severity] >= threshold and not f.acknowledged for r in reports for f in r.findings or []):
        return EXIT_FINDINGS
    return EXIT_OK


def format_text(reports: list[TargetReport], fail_on: str, code: int) -> str:
    rows = [("TARGET", "SEVERITY", "CHECK", "MESSAGE")]
    for r in reports:
        if r.error:
            verb = "could not poll" if r.kind.polled else "could not parse"
            rows.append((r.name, "error", r.reason or "", f"{verb} {r.address}: {r.error}"))
        elif not r.findings:
            rows.append((r.name, "ok", "-", "no findings"))
        for f in r.findings or []:
            if f.acknowledged:
                note = f" (acknowledged: {f.reason})" if f.reason else " (acknowledged)"
                rows.append((r.name, f"{f.severity}/ack", f.check, f.message + note))
            else:
                rows.append((r.name, f.severity, f.check, f.message))
        for cap, available in (r.capabilities or {}).items():
            if not available:
                rows.append((r.name, "note", f"capability_{cap}", CAPABILITY_NOTES.get(cap, f"{cap} is unavailable")))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
             for row in rows]
    counts = {s: sum(1 for r in reports for f in r.findings or [] if f.severity == s and not f.acknowledged)
              for s in (CRITICAL, WARNING, INFO)}
    acknowledged = sum(1 for r in reports for f in r.findings or [] if f.acknowledged)
    unreachable = sum(1 for r in reports if r.error and r.kind.polled)
    broken = ""
    for kind, noun in BROKEN_FILES.items():
        count = sum(1 for r in reports if r.error and r.kind is kind)
        broken += f", {count} {noun}" if count else ""
    lines.append(f"{len(reports)} targets: {counts[CRITICAL]} critical, {counts[WARNING]} warning, "
                 f"{counts[INFO]} info, {acknowledged} acknowledged, {unreachable} unreachable{broken}; "
                 f"failing on {fail_on}: exit {code}")
    return "\n".join(lines)


def format_json(reports: list[TargetReport], fail_on: str, code: int) -> str:
    import json

    payload = {
        "fail_on": fail_on,
        "exit_code": code,
        "targets": [{"name": r.name, "type": r.type, "address": r.address, "error": r.error, "reason": r.reason,
                     "findings": [f.__dict__ for f in r.findings or []], "capabilities": r.capabilities or {}}
                    for r in reports],
    }
    return json.dumps(payload, indent=2)
