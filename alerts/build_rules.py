"""Build alerts/cache-exporter.rules.yml: the alert rules, with every time constant in one place.

The committed rules file is this script's output at ``scale=1`` (a test fails when they
differ). The end-to-end test builds the same rules at a small scale, so a 30 minute ``for``
becomes seconds without a forked copy of the rules. Run ``python alerts/build_rules.py`` (or
``make docs``) after editing.

Conventions (docs/alerts.md): CamelCase names with a Cache/Redis/Memcached/App prefix; ``severity`` in
critical|warning|info; annotations summary, description, runbook_url ->
docs/runbooks.md#<lowercase-alertname>. Rules use the unified ``cache_*`` families, so they
cover Redis, Memcached and app heaps alike, plus store-specific rules for store-specific
failure modes. The forecast itself (sawtooth, steps, noise) is handled in the exporter;
the rules add level guards and ``for`` durations.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE / "cache-exporter.rules.yml"
RUNBOOK_BASE = "https://github.com/cache-exporter/cache-exporter/blob/main/docs/runbooks.md"

# Every time constant of the rules, in seconds. Thresholds on forecasts are times too.
TIME: dict[str, float] = {
    "down_for": 5 * 60,
    "absent_for": 10 * 60,
    "exporter_down_for": 5 * 60,
    "exporter_lookback": 3600,  # an instance that exported cache-exporter metrics within this is ours
    # Replicas disagreeing on --total-shards, or two on one index, for this long: longer than a
    # StatefulSet takes to roll its pods one by one onto a new --total-shards.
    "sharding_mismatch_for": 15 * 60,
    # Severity by horizon. The exporter gives a countdown only when it has seen growth for at
    # least half of it (exporter/forecast.py), so the rules need no level guard, and each ``for``
    # only rides out a countdown that flickers: it is short where the horizon is short.
    "predict_critical_horizon": 3600,  # page: full within an hour
    "predict_critical_for": 2 * 60,
    "predict_warning_horizon": 6 * 3600,  # full within 6 h
    "predict_warning_for": 5 * 60,
    "predict_info_horizon": 7 * 86400,  # a slow leak: full within a week (a ticket)
    "predict_info_for": 15 * 60,
    # A restart of the exporter (a pod rollout) leaves a gap of a few polls in its series, and a
    # new pod has a new instance label: the rules read each instance's last countdown of the
    # last 2 min (a gap is bridged, a value is not stretched) and the lowest across instances,
    # so a firing alert keeps firing through the rollout.
    "forecast_continuity": 2 * 60,
    # App heaps (store="app") keep level guards, against the effective limit (where the runtime may
    # abort: V8 at 80 % of its old generation). The ``for``s are short because heaps die fast: a
    # real Node app leaking to its abort in ~10 min shows a countdown after ~3-5 min of growth, and a
    # 30 m or even 5 m ``for`` outlasted it (tests/test_app_node.py). The countdown only counts down
    # once given, so 1 m rides out the rest; a healthy heap sawing under GC gives no countdown.
    "heap_warning_horizon": 4 * 3600,
    "heap_warning_for": 60,
    "heap_critical_horizon": 3600,
    "heap_critical_for": 60,
    "resident_warning_for": 15 * 60,
    "resident_critical_for": 5 * 60,
    "limit_unset_for": 30 * 60,
    "rejections_window": 5 * 60,
    "rejections_for": 60,
    "eviction_window": 10 * 60,
    "eviction_baseline": 6 * 3600,
    "eviction_for": 15 * 60,
    "fork_warning_for": 15 * 60,
    "fork_critical_for": 5 * 60,
    "bgsave_failed_for": 60,
    "misconf_window": 5 * 60,
    "calcification_for": 30 * 60,
    "finding_for": 3600,
    # Swallowed backend errors: fire on the first evaluation that sees them and resolve once a window
    # passes without any, so a 41 s Redis outage alerts while it lasts (poll + scrape + evaluation
    # later), not 5 min later when it is over. No ``for``: it would add its length to that delay, and a
    # failed cache operation is never a false alarm. 3 min holds 2+ samples at a 1 min scrape.
    "cache_backend_window": 3 * 60,
    # Evictions on a database lose data the app expects to find: fire on the first evaluation that
    # sees one; the window only decides how long the alert stays up after the last.
    "database_eviction_window": 10 * 60,
    # HTTP response caches (http_cache probes, every 30 s by default). A cached error must be seen on
    # every probe for 2 min (4+ rounds at 30 s): a microcache (1-10 s) that catches one origin error
    # now and then flickers and resets the ``for``; a cache that keeps an error for minutes does not.
    "http_error_cached_for": 2 * 60,
    # Cached error while a cache-bypassing request gets a good answer: two observations agree, so one
    # probe is enough. A 1-minute cache TTL leaves a stale error of 35-60 s after the origin recovers,
    # which one or two 30 s probes see: the alert counts probes (increase of a counter) instead of
    # waiting for a sustained state, over a window that holds 3+ scrapes at a 1 min scrape interval.
    "http_stale_error_window": 3 * 60,
}

# Level guards and thresholds that are not times.
# How far each severity may extrapolate, as a multiple of how long the growth has been seen
# (cache_memory_forecast_basis_seconds); None: as far as the exporter does (twice).
PREDICT_EVIDENCE: dict[str, float | None] = {"critical": 1.0, "warning": None, "info": 0.6}
# App heaps' level guards, as a share of the effective limit (app_heap_effective_limit_bytes).
PREDICT_WARNING_MIN_UTILIZATION = 0.5
PREDICT_CRITICAL_MIN_UTILIZATION = 0.7
RESIDENT_WARNING_RATIO = 0.85
RESIDENT_CRITICAL_RATIO = 0.95
EVICTION_MIN_LOOKUPS_PER_SECOND = 1
EVICTION_HIT_RATIO_DROP = 0.9  # hit ratio below 90 % of its baseline
FORK_WARNING_RATIO = 0.8
FORK_CRITICAL_RATIO = 1.0


def duration(seconds: float) -> str:
    """Prometheus duration text; scaled values may be fractions of a second."""
    ms = max(1, round(seconds * 1000))
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


# The TIME constants that are range windows (``[3m]``) rather than ``for`` durations or horizons.
WINDOWS = frozenset({"exporter_lookback", "forecast_continuity", "rejections_window", "eviction_window",
                     "eviction_baseline", "misconf_window", "cache_backend_window",
                     "database_eviction_window", "http_stale_error_window"})


def build(scale: float = 1.0, runbook_base: str = RUNBOOK_BASE, min_window: float = 0.0) -> dict:
    """The rules document; every TIME constant multiplied by ``scale``.

    ``min_window`` (seconds) floors the scaled range windows: a test that scrapes faster than the
    scale implies but not by the whole factor (1 s scrapes under a 1/100 scale) still needs each
    window to hold several scrapes, or ``increase()`` over it is empty whenever a scrape is late.
    """
    t = {k: max(v * scale, min_window) if k in WINDOWS else v * scale for k, v in TIME.items()}
    d = {k: duration(v) for k, v in t.items()}
    seconds = {k: f"{v:g}" for k, v in t.items()}

    def alert(name: str, expr: str, severity: str, for_: str | None, summary: str, description: str) -> dict:
        rule = {"alert": name, "expr": expr.strip()}
        if for_:
            rule["for"] = for_
        rule["labels"] = {"severity": severity}
        rule["annotations"] = {"summary": summary, "description": description,
                               "runbook_url": f"{runbook_base}#{name.lower()}"}
        return rule

    continuity = d["forecast_continuity"]
    # The level as the rules read the countdown: across a restart's gap and the exporter's instances.
    util = ("{{ with printf `max(last_over_time(cache_memory_utilization_ratio{target=%q}[" + continuity
            + "]))` $labels.target | query }}{{ . | first | value | humanizePercentage }}{{ end }}")

    def across_restarts(series: str) -> str:
        return f"min without (instance, pod) (last_over_time({series}[{continuity}]))"

    until_full = across_restarts('cache_memory_seconds_until_full{store!="app"}')
    basis = across_restarts('cache_memory_forecast_basis_seconds{store!="app"}').replace("min without", "max without")

    def exhaustion(horizon: str, evidence: float | None, beyond: str | None = None) -> str:
        expr = f"{until_full} < {horizon}\n"
        if beyond is not None:  # a shorter horizon's alert has it from here
            expr += f"and {until_full} >= {beyond}\n"
        if evidence is not None:
            expr += f"and {until_full} <= {evidence:g} * {basis}\n"
        return expr + "unless ignoring (instance, pod) cache_evicts_when_full == 1"

    heap_exhaustion = """
cache_memory_seconds_until_full{{store="app"}} < {horizon}
and ignoring (store) cache_memory_used_bytes{{store="app"}} / ignoring (store) app_heap_effective_limit_bytes > {guard}
"""
    resident_predicted = across_restarts("cache_resident_memory_seconds_until_full") + " < {horizon}"
    lookups = ("(rate(cache_hits_total[{w}]) + rate(cache_misses_total[{w}]))")
    hit_ratio = "(rate(cache_hits_total[{w}]) / " + lookups + ")"

    memory = [
        alert("CacheMemoryExhaustionPredicted",
              exhaustion(seconds["predict_info_horizon"], PREDICT_EVIDENCE["info"], seconds["predict_warning_horizon"]),
              "info", d["predict_info_for"],
              "{{ $labels.target }} will run out of memory in {{ $value | humanizeDuration }}",
              "{{ $labels.target }} ({{ $labels.store }}) has been growing steadily and, at that pace, fills "
              "its memory limit in {{ $value | humanizeDuration }}: a slow leak. It rejects writes when full."),
        alert("CacheMemoryExhaustionPredicted",
              exhaustion(seconds["predict_warning_horizon"], PREDICT_EVIDENCE["warning"]),
              "warning", d["predict_warning_for"],
              "{{ $labels.target }} will run out of memory in {{ $value | humanizeDuration }}",
              "{{ $labels.target }} ({{ $labels.store }}) is at " + util + " of its memory limit and, at its "
              "current growth, fills it in {{ $value | humanizeDuration }}. It rejects writes when full."),
        alert("CacheMemoryExhaustionPredicted",
              exhaustion(seconds["predict_critical_horizon"], PREDICT_EVIDENCE["critical"]),
              "critical", d["predict_critical_for"],
              "{{ $labels.target }} runs out of memory in {{ $value | humanizeDuration }}",
              "{{ $labels.target }} ({{ $labels.store }}) is at " + util + " of its memory limit and fills it "
              "in {{ $value | humanizeDuration }}. Writes will then fail (Redis -OOM, Memcached SERVER_ERROR "
              "out of memory)."),
        alert("CacheResidentMemoryExhaustionPredicted",
              resident_predicted.format(horizon=seconds["predict_warning_horizon"]),
              "warning", d["predict_warning_for"],
              "{{ $labels.target }} reaches its hard memory limit in {{ $value | humanizeDuration }}",
              "The resident memory of {{ $labels.target }} ({{ $labels.store }}) reaches the limit that gets "
              "the process killed in {{ $value | humanizeDuration }} at its current growth, whatever its "
              "eviction policy."),
        alert("CacheResidentMemoryExhaustionPredicted",
              resident_predicted.format(horizon=seconds["predict_critical_horizon"]),
              "critical", d["predict_critical_for"],
              "{{ $labels.target }} reaches its hard memory limit in {{ $value | humanizeDuration }}",
              "The resident memory of {{ $labels.target }} ({{ $labels.store }}) reaches the limit that gets "
              "the process killed (OOM kill) in {{ $value | humanizeDuration }}."),
        alert("CacheResidentMemoryNearHardLimit",
              f"cache_resident_memory_bytes / cache_resident_memory_limit_bytes > {RESIDENT_WARNING_RATIO}",
              "warning", d["resident_warning_for"],
              "{{ $labels.target }} uses {{ $value | humanizePercentage }} of its hard memory limit",
              "The resident memory of {{ $labels.target }} ({{ $labels.store }}) is "
              "{{ $value | humanizePercentage }} of the container or host limit: little room is left for "
              "forks, buffers and fragmentation before an OOM kill."),
        alert("CacheResidentMemoryNearHardLimit",
              f"cache_resident_memory_bytes / cache_resident_memory_limit_bytes > {RESIDENT_CRITICAL_RATIO}",
              "critical", d["resident_critical_for"],
              "{{ $labels.target }} uses {{ $value | humanizePercentage }} of its hard memory limit",
              "The resident memory of {{ $labels.target }} ({{ $labels.store }}) is "
              "{{ $value | humanizePercentage }} of the limit that gets the process killed."),
        # A managed store (source="managed") enforces the data limit its target declares, with maxmemory 0.
        alert("CacheMemoryLimitUnset",
              'cache_memory_limit_info{store="redis", source!~"maxmemory|managed"} == 1',
              "warning", d["limit_unset_for"],
              "{{ $labels.target }} has no maxmemory",
              "{{ $labels.target }} runs with maxmemory 0: Redis never evicts and grows until the container "
              "or host kills it. Its forecast counts against {{ $labels.source }} memory instead."),
        alert("CacheWritesRejected",
              f"increase(cache_write_rejections_total[{d['rejections_window']}]) > 0",
              "critical", d["rejections_for"],
              "{{ $labels.target }} is rejecting writes for lack of memory",
              "{{ $labels.target }} ({{ $labels.store }}) refused {{ $value | humanize }} writes in the last "
              f"{d['rejections_window']} because its memory is full (Redis -OOM, Memcached out of memory)."),
        alert("CacheEvictionPressure",
              (f"rate(cache_evictions_total[{{w}}]) > 0\n"
               f"and {lookups} > {EVICTION_MIN_LOOKUPS_PER_SECOND}\n"
               f"and {hit_ratio} < {EVICTION_HIT_RATIO_DROP} * {hit_ratio.replace('{w}', '{b}')}")
              .format(w=d["eviction_window"], b=d["eviction_baseline"]),
              "warning", d["eviction_for"],
              "{{ $labels.target }} evicts and its hit ratio is dropping",
              "{{ $labels.target }} ({{ $labels.store }}) evicts {{ $value | humanize }} keys/s while its hit "
              f"ratio over {d['eviction_window']} fell below {EVICTION_HIT_RATIO_DROP:.0%} of its "
              f"{d['eviction_baseline']} baseline: the cache is too small for its working set."),
    ]
    apps = [
        alert("AppHeapExhaustionPredicted",
              heap_exhaustion.format(horizon=seconds["heap_warning_horizon"], guard=PREDICT_WARNING_MIN_UTILIZATION),
              "warning", d["heap_warning_for"],
              "The heap of {{ $labels.target }} runs out in {{ $value | humanizeDuration }}",
              "{{ $labels.target }}'s heap is at " + util + " of its limit and, at its current growth, reaches "
              "the point where the runtime may abort (V8: 80 % of the limit) in {{ $value | humanizeDuration }}. "
              "The runtime then aborts (Node.js: \"JavaScript heap out of "
              "memory\", exit 134) — not an OOM kill, so container OOM alerts never see it."),
        alert("AppHeapExhaustionPredicted",
              heap_exhaustion.format(horizon=seconds["heap_critical_horizon"],
                                     guard=PREDICT_CRITICAL_MIN_UTILIZATION),
              "critical", d["heap_critical_for"],
              "The heap of {{ $labels.target }} runs out in {{ $value | humanizeDuration }}",
              "{{ $labels.target }}'s heap is at " + util + " of its limit and reaches the point where the "
              "runtime may abort (V8: 80 % of the limit) in {{ $value | humanizeDuration }}; it will abort "
              "(exit 134 for Node.js)."),
        alert("AppCacheBackendFailing",
              f"rate(app_cache_backend_errors_total[{d['cache_backend_window']}]) > 0",
              "warning", None,
              "The cache backend of {{ $labels.target }} ({{ $labels.cache }}) is failing silently",
              "{{ $labels.target }} fails {{ $value | humanize }} cache operations per second against its "
              "{{ $labels.cache }} backend and carries on without the cache (django-redis IGNORE_EXCEPTIONS): "
              "every request now goes to the database."),
    ]
    stores = [
        alert("RedisDatabaseEvicting",
              f'increase(cache_evictions_total{{store="redis"}}[{d["database_eviction_window"]}]) > 0\n'
              # The audit finding carries what the series do not: the configured role (and it is
              # gone when the finding is acknowledged in the config or the policy is fixed).
              'and on (job, instance, target) cache_config_finding{check="redis_evicting_policy_on_database"}',
              "critical", None,
              "{{ $labels.target }} is a database and evicts keys",
              "{{ $labels.target }} (role: database) evicted {{ $value | humanize }} keys in the last "
              f"{d['database_eviction_window']}: its maxmemory-policy lets Redis delete data when maxmemory is "
              "reached, and state the application expects to find is gone. Set maxmemory-policy noeviction (writes "
              "then fail with -OOM instead) and give it memory."),
        alert("RedisForkMemoryAtRisk",
              f"redis_fork_memory_risk_ratio > {FORK_WARNING_RATIO}\n"
              # No persistence and no replica to resync: nothing forks.
              "unless (redis_rdb_enabled == 0 and redis_aof_enabled == 0 and redis_connected_slaves == 0)",
              "warning", d["fork_warning_for"],
              "A background save of {{ $labels.target }} risks running out of memory",
              "Resident memory plus the largest recent copy-on-write of {{ $labels.target }} is "
              "{{ $value | humanizePercentage }} of its hard limit: the next BGSAVE or AOF rewrite may fail "
              "or get the process killed."),
        alert("RedisForkMemoryAtRisk",
              f"redis_fork_memory_risk_ratio > {FORK_CRITICAL_RATIO}\n"
              # No persistence and no replica to resync: nothing forks.
              "unless (redis_rdb_enabled == 0 and redis_aof_enabled == 0 and redis_connected_slaves == 0)",
              "critical", d["fork_critical_for"],
              "The next background save of {{ $labels.target }} will not fit in memory",
              "Resident memory plus the largest recent copy-on-write of {{ $labels.target }} is "
              "{{ $value | humanizePercentage }} of its hard limit."),
        alert("RedisBackgroundSaveFailed",
              "redis_rdb_last_bgsave_status == 0 or redis_aof_last_bgrewrite_status == 0",
              "warning", d["bgsave_failed_for"],
              "The last background save of {{ $labels.target }} failed",
              "{{ $labels.target }}'s last BGSAVE or AOF rewrite failed; with stop-writes-on-bgsave-error it "
              "now refuses writes (see RedisWritesRefusedMisconf)."),
        alert("RedisWritesRefusedMisconf",
              f'max without (err) (increase(redis_errors_total{{err="MISCONF"}}[{d["misconf_window"]}])) > 0\n'
              # Redis refuses writes after a failed save only when RDB saving is configured (a failed
              # manual BGSAVE with `save ""` does not stop writes).
              "or (redis_rdb_last_bgsave_status == 0 and redis_config_stop_writes_on_bgsave_error == 1\n"
              "    and redis_rdb_enabled == 1)",
              "critical", None,
              "{{ $labels.target }} refuses writes with -MISCONF",
              "{{ $labels.target }} refuses writes with -MISCONF: a background save (RDB) or an AOF write failed "
              "and Redis stops accepting writes until persistence works again (stop-writes-on-bgsave-error, "
              "AOF write errors)."),
        alert("MemcachedSlabCalcification",
              "memcached_calcified_slab_classes > 0",
              "warning", d["calcification_for"],
              "{{ $labels.target }} evicts in {{ $value }} slab classes while others hold free memory",
              "{{ $value }} slab classes of {{ $labels.target }} evict (or refuse stores) while other classes "
              "hold free chunks and no page moves between them: memory is stranded in the wrong classes."),
    ]
    # The series of one probed URL: the joins below match on these labels (static target labels come
    # along on both sides).
    url_labels = "job, instance, target, url"

    def url_query(metric: str) -> str:
        """The template pipeline that queries ``metric`` for the alert's URL."""
        return (f"printf `{metric}{{job=%q, instance=%q, target=%q, url=%q}}` "
                "$labels.job $labels.instance $labels.target $labels.url | query")

    # Remaining freshness when the response says (Cache-Status ttl, max-age, Expires; negative when stale),
    # else absent: each branch of the text is in alerts/tests/http-cache.test.yml.
    ttl_left = ("{{ with " + url_query("http_cache_response_ttl_seconds") + " }}"
                "{{ $ttl := . | first | value }}{{ if gt $ttl 0.0 }}The cache keeps it for another "
                "{{ $ttl | humanizeDuration }} unless purged."
                "{{ else }}It is past its freshness lifetime and served stale.{{ end }}"
                "{{ else }}How long the cache keeps it is unknown (no max-age or Expires).{{ end }}")
    last_status = ("{{ with " + url_query("http_cache_response_status_code") + " }}"
                   "The last probe got HTTP {{ . | first | value }}. {{ end }}")
    # $value is the status code users get: the status series joined to the condition.
    http = [
        alert("CacheHTTPErrorResponseCached",
              f"http_cache_response_status_code\n"
              f"and on ({url_labels}) http_cache_error_from_cache == 1",
              "warning", d["http_error_cached_for"],
              "{{ $labels.target }}: a cache serves HTTP {{ $value }} for {{ $labels.url }}",
              f"For {d['http_error_cached_for']} every probe of {{{{ $labels.url }}}} ({{{{ $labels.target }}}}) "
              "got HTTP {{ $value }} from a cache (its Cache-Status, X-Cache-Status, X-Cache, CF-Cache-Status "
              "or Age header says so), not from the origin: the error is cached and served to every user. "
              + ttl_left),
        alert("CacheHTTPStaleErrorAfterRecovery",
              f"increase(http_cache_stale_errors_after_recovery_total[{d['http_stale_error_window']}]) > 0",
              "critical", None,
              "{{ $labels.target }}: {{ $labels.url }} served a cached error after the origin recovered",
              f"In the last {d['http_stale_error_window']}, probes of {{{{ $labels.url }}}} ({{{{ $labels.target }}}}) "
              "got an error from a cache (or from a proxy that does not say it caches) while a request that "
              "bypasses the cache got a good answer from the origin: the origin had recovered, users still got "
              "its old error. " + last_status + "Purge the entry if it is still served."),
    ]
    audit = [
        alert("CacheConfigAuditFinding",
              'max without (severity) (cache_config_finding{severity="critical", '
              'check!="redis_maxmemory_unset"})',
              "warning", d["finding_for"],
              "{{ $labels.target }}: critical configuration finding {{ $labels.check }}",
              "The configuration audit reports {{ $labels.check }} (critical) on {{ $labels.target }}; run "
              "`cache-exporter audit` for the details."),
        alert("CacheConfigAuditFinding",
              'max without (severity) (cache_config_finding{severity="warning", '
              'check!="redis_maxmemory_unset"})',
              "info", d["finding_for"],
              "{{ $labels.target }}: configuration finding {{ $labels.check }}",
              "The configuration audit reports {{ $labels.check }} (warning) on {{ $labels.target }}; run "
              "`cache-exporter audit` for the details."),
    ]
    # Sharded replicas (docs/sharding.md): a shard seen within the lookback, with the total the running
    # shards have, that is gone now (one alert per shard; a scale-down changes the total and stays
    # silent) -- and, for a shard never seen at all (a pod that never started), the job's count.
    shard = "cache_exporter_shard_info"
    shard_gone = (f"max without (instance, pod) (max_over_time({shard}[{d['exporter_lookback']}]))\n"
                  f"  unless on (job, index) {shard}\n"
                  f"  and on (job, total) group by (job, total) ({shard})")
    shard_never = (f"count by (job) (group by (job, index) ({shard})) < max by (job) (cache_exporter_total_shards)\n"
                   f"  unless on (job) ({shard_gone})")
    exporter = [
        alert("CacheTargetDown", "cache_up == 0", "critical", d["down_for"],
              "{{ $labels.target }} cannot be polled",
              "cache-exporter has failed to poll {{ $labels.target }} ({{ $labels.store }}) for "
              f"{d['down_for']}; "
              '{{ if eq $labels.store "http_cache" }}none of its URLs answers, so cached errors go unseen'
              "{{ else }}its memory is not being watched{{ end }}. The reason is in "
              "cache_exporter_poll_errors_total and /targets."),
        alert("CacheExporterDown",
              f"up == 0 and on (job, instance) max_over_time(cache_exporter_build_info[{d['exporter_lookback']}])",
              "critical", d["exporter_down_for"],
              "cache-exporter {{ $labels.instance }} cannot be scraped",
              "Prometheus has failed to scrape the cache-exporter at {{ $labels.instance }} (job {{ $labels.job }}) "
              f"for {d['exporter_down_for']}: the targets it polls are not being watched."),
        alert("CacheExporterAbsent",
              f"absent(cache_exporter_build_info)\nor ({shard_gone})\nor ({shard_never})",
              "critical", d["absent_for"],
              "{{ if $labels.index }}cache-exporter shard {{ $labels.index }} of {{ $labels.total }} is not being "
              "scraped{{ else if $labels.job }}cache-exporter job {{ $labels.job }} has fewer shards than "
              "--total-shards{{ else }}cache-exporter is not being scraped{{ end }}",
              "{{ if $labels.index }}Prometheus has had no metrics from shard {{ $labels.index }} of "
              "{{ $labels.total }} (job {{ $labels.job }}) for " + d["absent_for"] + " while the other shards "
              "run: the targets it owns are not being watched."
              "{{ else if $labels.job }}Only {{ $value }} shards of job {{ $labels.job }} have been scraped for "
              + d["absent_for"] + ", fewer than their --total-shards: the targets the missing ones own are not "
              "being watched."
              f"{{{{ else }}}}Prometheus has had no cache-exporter metrics for {d['absent_for']}: no cache memory "
              "is being watched and none of the other cache alerts can fire.{{ end }}"),
        alert("CacheExporterShardingMismatch",
              "count by (job) (count by (job, total) (cache_exporter_shard_info)) > 1\n"
              'or count by (job, index) (cache_exporter_shard_info{total!="1"}) > 1',
              "critical", d["sharding_mismatch_for"],
              "cache-exporter job {{ $labels.job }}: the shards disagree",
              "{{ if $labels.index }}{{ $value }} replicas of job {{ $labels.job }} run as shard {{ $labels.index }}: "
              "its targets are polled {{ $value }} times (duplicate series) and another shard's by none."
              "{{ else }}The replicas of job {{ $labels.job }} run with {{ $value }} different --total-shards: "
              "some targets are polled twice, others by none.{{ end }} For "
              + d["sharding_mismatch_for"] + "; a rollout of a new --total-shards takes minutes, not this long."),
        alert("CacheWatchdog", "vector(1)", "info", None,
              "Alerting pipeline heartbeat",
              "Always firing, so that a dead-man's switch can page when it stops arriving."),
    ]
    return {"groups": [
        {"name": "cache-memory", "rules": memory},
        {"name": "cache-stores", "rules": stores},
        {"name": "cache-apps", "rules": apps},
        {"name": "cache-http", "rules": http},
        {"name": "cache-audit", "rules": audit},
        {"name": "cache-exporter", "rules": exporter},
    ]}


HEADER = ("# Generated by alerts/build_rules.py -- edit that file and run it (or `make docs`).\n"
          "# Time constants: alerts/build_rules.py TIME. Runbooks: docs/runbooks.md.\n")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (expressions) as literal blocks, the way people write rules by hand."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def render(scale: float = 1.0, runbook_base: str = RUNBOOK_BASE, min_window: float = 0.0) -> str:
    return HEADER + yaml.dump(build(scale, runbook_base, min_window), Dumper=_Dumper, sort_keys=False, width=120,
                              allow_unicode=True)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else RULES_FILE
    out.write_text(render())
    print(f"wrote {out}")
