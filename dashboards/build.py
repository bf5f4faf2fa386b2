"""Build the cache-exporter Grafana dashboards and write them to ``dashboards/<uid>.json``.

    python dashboards/build.py           # (re)write the JSON files
    python dashboards/build.py --check   # exit 1 and list the files that differ from a fresh build

The dashboards are code (grafana-foundation-sdk, a build-time dependency only: ``pip install
'.[dashboards]'`` or ``make dashboards``); the JSON is committed so Grafana can import or provision it
as is, and a test fails when it differs from a fresh build. Thresholds come from
``alerts/build_rules.py`` (and the exporter's V8 abort ratio), so panel colours and alerts cannot
drift apart. Conventions (datasource/job/target variables, units, descriptions, ``$__rate_interval``,
links) live in ``dashboards/common.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (REPO, REPO / "alerts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import build_rules as rules  # noqa: E402  (alerts/build_rules.py: the alert thresholds)

from dashboards.common import (  # noqa: E402
    UID,
    Column,
    Grid,
    Q,
    bargauge_panel,
    dashboard,
    data_link,
    detail_url,
    firing_alerts,
    hit_ratio,
    override_thresholds,
    query_variable,
    range_map,
    rate,
    ratio_of_rates,
    render,
    sel,
    stat_panel,
    table_panel,
    thresholds,
    timeseries_panel,
    value_map,
    with_dashboard_label,
)
from exporter.sources.app import V8_ABORT_RATIO, V8_LOW_MUTATOR_UTILIZATION  # noqa: E402

# --- thresholds: the alert levels -----------------------------------------------------------------------
# A store's memory against its effective limit: CacheMemoryExhaustionPredicted's severity by horizon.
H_CRITICAL = rules.TIME["predict_critical_horizon"]  # 1 h: critical (when the growth was seen that long)
H_WARNING = rules.TIME["predict_warning_horizon"]  # 6 h: warning
H_INFO = rules.TIME["predict_info_horizon"]  # 7 d: info, a slow leak (when seen long enough)
EVIDENCE = rules.PREDICT_EVIDENCE  # how far each severity may extrapolate, x the growth seen
TIME_UNTIL_FULL = thresholds("red", (H_CRITICAL, "orange"), (H_WARNING, "blue"), (H_INFO, "green"))
# Resident memory against the hard limit (CacheResidentMemoryExhaustionPredicted): critical and warning only.
RESIDENT_UNTIL_FULL = thresholds("red", (H_CRITICAL, "orange"), (H_WARNING, "green"))
# An app's heap against its limit (AppHeapExhaustionPredicted): its own horizons, and level guards.
HEAP_H_CRITICAL = rules.TIME["heap_critical_horizon"]  # 1 h, above PREDICT_CRITICAL_MIN_UTILIZATION
HEAP_H_WARNING = rules.TIME["heap_warning_horizon"]  # 4 h, above PREDICT_WARNING_MIN_UTILIZATION
HEAP_UNTIL_FULL = thresholds("red", (HEAP_H_CRITICAL, "orange"), (HEAP_H_WARNING, "green"))
# Memory used against the effective limit: no alert depends on a store's level (the exhaustion alerts
# follow the countdown, and an evicting store is fine at 100 %), so it has no colour of alarm. The
# level guards PREDICT_*_MIN_UTILIZATION apply to app heaps only (AppHeapExhaustionPredicted).
UTILIZATION = thresholds("text")
RESIDENT = thresholds("green", (rules.RESIDENT_WARNING_RATIO, "orange"), (rules.RESIDENT_CRITICAL_RATIO, "red"))
FORK_RISK = thresholds("green", (rules.FORK_WARNING_RATIO, "orange"), (rules.FORK_CRITICAL_RATIO, "red"))
# Heap / limit: red from where V8 may abort (its ineffective mark-compact rule); the heap alerts
# follow the countdown to that point, so there is no other level to colour.
HEAP = thresholds("green", (V8_ABORT_RATIO, "red"))
# GC share of wall time: red where V8's rule has the program under 40 % of the time.
GC_RATIO = thresholds("green", (round(1 - V8_LOW_MUTATOR_UTILIZATION, 6), "red"))
SINCE_LAST_POLL = thresholds("green", (rules.TIME["down_for"], "red"))  # CacheTargetDown after 5 m
ANY_CRITICAL = thresholds("green", (1, "red"))
ANY_WARNING = thresholds("green", (1, "orange"))
ANY_INFO = thresholds("green", (1, "blue"))
TTL_LEFT = thresholds("red", (0, "green"))  # negative: served stale

# Table sort keys must never be empty (Grafana sorts empty cells first): a forecast column shows these
# two sentinels as text instead.
NOT_FILLING = 1e15  # +Inf: not growing (or not for long enough to tell), or the store evicts when full
NO_FORECAST = 2e15  # no forecast: not enough history yet, no limit, target down, nothing to forecast
FORECAST_MAPPINGS = (range_map(NOT_FILLING, NOT_FILLING, "no countdown", "green", 0),
                     range_map(NO_FORECAST, NO_FORECAST, "no forecast", "transparent", 1))

UP = (value_map({"1": ("up", "green"), "0": ("DOWN", "red")}),)
EVICTS = (value_map({"1": ("evicts", "text"), "0": ("rejects writes", "orange")}),)
OK_FAILED = (value_map({"1": ("ok", "green"), "0": ("FAILED", "red")}),)
ON_OFF = (value_map({"1": ("on", "text"), "0": ("off", "text")}),)
YES_NO = (value_map({"1": ("yes", "text"), "0": ("no", "text")}),)
NOT_GROWING = (value_map({"0": ("not growing", "text")}),)  # cache_memory_forecast_basis_seconds 0
SEVERITY = (value_map({"critical": ("critical", "red"), "warning": ("warning", "orange"),
                       "info": ("info", "blue")}),)

BY = "job, target"
EMPTY = '""'


def alert_names() -> list[str]:
    """Our alerts (alerts/build_rules.py) except the always-firing heartbeat."""
    return sorted({r["alert"] for g in rules.build()["groups"] for r in g["rules"]
                   if "alert" in r and r["alert"] != "CacheWatchdog"})


def forecast_column(metric: str, *matchers: str) -> str:
    """Seconds until full per target for a table: +Inf and absent become sentinels (see above)."""
    return (f"min by ({BY}) (clamp_max({sel(metric, *matchers)}, {NOT_FILLING:.0e}))\n"
            f"or on ({BY})\n"
            f"max by ({BY}) ({sel('cache_up', *matchers)}) * 0 + {NO_FORECAST:.0e}").replace("e+", "e")


def finite(metric: str, *matchers: str, by: str = BY) -> str:
    """A forecast without its +Inf ("not growing") series: only countdowns remain."""
    return f"min by ({by}) ({sel(metric, *matchers)} < +Inf)"


def human(seconds: float) -> str:
    """A horizon as people say it: 7 d, 6 h, 2 m."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def basis_column(*matchers: str) -> str:
    """How long the growth behind the countdown has been seen, per target (0: not growing)."""
    return f"max by ({BY}) ({sel('cache_memory_forecast_basis_seconds', *matchers)})"


FORECAST_TEXT = ("\"no countdown\": not growing, growing for too short a time to tell (a countdown is given "
                 "once the growth has been seen for at least half of it), or the store evicts when full; \"no "
                 "forecast\": not enough history yet, no limit, or down.")
GROWTH_SEEN_FOR = ("Growth seen for: how long the growth behind the countdown has been seen "
                   "(cache_memory_forecast_basis_seconds); the exporter gives a countdown only when it is "
                   "at most twice that.")


def resident_ratio(*matchers: str, by: str = BY) -> str:
    return (f"max by ({by}) (\n  {sel('cache_resident_memory_bytes', *matchers)}\n"
            f"  / ({sel('cache_resident_memory_limit_bytes', *matchers)} > 0)\n)")


def store_alerts_table(store: str, names: list[str]) -> object:
    """Firing alerts for the targets of one store (alerts without a target belong to the overview)."""
    of_store = sel("cache_up", f'store="{store}"')
    expr = (f"max by (alertname, severity, {BY}) (\n  {firing_alerts(names)}\n"
            f"  and on ({BY}) {of_store}\n)")
    return table_panel(
        "Firing alerts", "cache-exporter alerts firing now for these targets (ALERTS, from Prometheus). "
        "Each alert has a runbook: docs/runbooks.md.", "none",
        [Q(expr, table=True)],
        [Column("alertname", "Alert", width=320), Column("severity", "Severity", mappings=SEVERITY,
                                                         cell="color-text", width=110),
         Column("target", "Target"), Column("job", "Job"), Column("A", "Firing", hidden=True)],
        sort_by="Severity", no_value="No alert firing")


def store_horizons_text() -> str:
    """CacheMemoryExhaustionPredicted's horizons, as its rules put them."""
    return (f"critical under {human(H_CRITICAL)} when the countdown is at most {EVIDENCE['critical']:g} x the "
            f"time the growth has been seen, warning under {human(H_WARNING)}, info (a ticket: a slow leak) from "
            f"{human(H_WARNING)} to {human(H_INFO)} when the countdown is at most {EVIDENCE['info']:g} x that time")


def heap_horizons_text() -> str:
    """AppHeapExhaustionPredicted's horizons and level guards."""
    return (f"critical under {human(HEAP_H_CRITICAL)} above {rules.PREDICT_CRITICAL_MIN_UTILIZATION:.0%} of "
            f"the effective heap limit, warning under {human(HEAP_H_WARNING)} above "
            f"{rules.PREDICT_WARNING_MIN_UTILIZATION:.0%}")


RESIDENT_HORIZONS = (f"CacheResidentMemoryExhaustionPredicted, critical under {human(H_CRITICAL)}, warning "
                     f"under {human(H_WARNING)}")
ONLY_COUNTDOWNS = ("Only countdowns are drawn: a target that is not growing, evicts when full, or has not been "
                   "seen growing for at least half of its countdown has no line.")


def time_until_full_panel(*matchers: str, resident: bool = True, apps: bool = False) -> object:
    """The store forecasts; ``resident=False`` where the store reports no resident memory (Memcached),
    ``apps`` where app heaps are drawn too (the overview)."""
    queries = [Q(finite("cache_memory_seconds_until_full", *matchers), "{{target}} effective limit")]
    what = "Forecast time until memory reaches the effective limit (the store rejects writes"
    what += ", or an app's heap aborts)" if apps else ")"
    if resident:
        queries.append(Q(finite("cache_resident_memory_seconds_until_full", *matchers), "{{target}} hard limit"))
        what += " and until resident memory reaches the hard limit (the process is killed)"
    text = (f"{what}. {ONLY_COUNTDOWNS} Dashed lines: CacheMemoryExhaustionPredicted, {store_horizons_text()} "
            "(Growth seen for, in the table above).")
    if resident:
        text += f" Hard limit: {RESIDENT_HORIZONS}, no info."
    if apps:
        text += f" App heaps: AppHeapExhaustionPredicted, {heap_horizons_text()} (the app dashboard)."
    return countdown_panel("Time until full", text, queries, TIME_UNTIL_FULL)


def heap_until_full_panel(*matchers: str) -> object:
    return countdown_panel(
        "Time until heap full",
        "Forecast time until the heap reaches its limit (the runtime aborts: exit 134 for Node.js, not an "
        "OOM kill). Only countdowns are drawn: a heap that is not growing, or has not been seen growing for at "
        f"least half of its countdown, has no line. Dashed lines: AppHeapExhaustionPredicted, "
        f"{heap_horizons_text()}.",
        [Q(finite("cache_memory_seconds_until_full", *matchers), "{{target}} heap limit")], HEAP_UNTIL_FULL)


def oom_kill_panel(*matchers: str) -> object:
    return countdown_panel(
        "Time until OOM kill",
        "Forecast time until resident memory reaches the hard limit that gets the process killed (the "
        "target's memory_limit, else the host's memory). Only countdowns are drawn. Dashed lines: "
        f"{RESIDENT_HORIZONS}.",
        [Q(finite("cache_resident_memory_seconds_until_full", *matchers), "{{target}} hard limit")],
        RESIDENT_UNTIL_FULL)


def countdown_panel(title: str, text: str, queries: list, colours: object) -> object:
    """A forecast over time, in seconds, coloured by its alert's horizons; legend: last and lowest."""
    return timeseries_panel(title, text, "s", queries, thresholds_config=colours, min_value=0,
                            calcs=("lastNotNull", "min"))


def utilization_panel(*matchers: str, apps: bool = False) -> object:
    text = ("cache_memory_utilization_ratio: memory counted against the limit (Redis maxmemory, else "
            "memory_limit, else the host; Memcached -m; an app's heap limit). Absent, not N/A, when no limit "
            "is known. No alert depends on a store's level: the exhaustion alerts follow the countdown (Time "
            "until full), and a store that evicts when full is fine at 100 %.")
    if apps:
        text += (f" App heaps: AppHeapExhaustionPredicted needs over {rules.PREDICT_WARNING_MIN_UTILIZATION:.0%} "
                 f"(warning) / {rules.PREDICT_CRITICAL_MIN_UTILIZATION:.0%} (critical) of the heap limit.")
    return timeseries_panel(
        "Memory used, % of effective limit", text, "percentunit",
        [Q(f"max by ({BY}) ({sel('cache_memory_utilization_ratio', *matchers)})")], min_value=0)


def resident_panel(*matchers: str) -> object:
    return timeseries_panel(
        "Resident memory, % of hard limit",
        "Resident memory (RSS) over the hard limit that gets the process killed (the target's memory_limit, "
        "else the host's memory), whatever the eviction policy. CacheResidentMemoryNearHardLimit warns "
        f"above {rules.RESIDENT_WARNING_RATIO:.0%} and is critical above {rules.RESIDENT_CRITICAL_RATIO:.0%}.",
        "percentunit", [Q(resident_ratio(*matchers))], thresholds_config=RESIDENT, min_value=0)


# --- overview ---------------------------------------------------------------------------------------------

def countdown_count(horizon: float, evidence: float | None, beyond: float | None = None) -> str:
    """How many stores meet a CacheMemoryExhaustionPredicted condition now (before its ``for``): the
    countdown under ``horizon`` (and at least ``beyond``), at most ``evidence`` x the growth seen."""
    store = 'store!="app"'
    until = f"{sel('cache_memory_seconds_until_full', store)} < {horizon:g}"
    if beyond is not None:
        until += f" >= {beyond:g}"
    expr = f"min by ({BY}) ({until})"
    if evidence is not None:
        expr += f"\n  <= {evidence:g} * {basis_column(store)}"
    expr += f"\n  unless on ({BY}) max by ({BY}) ({sel('cache_evicts_when_full', store)}) == 1"
    return f"count(\n  {expr}\n) or vector(0)"


def prefix_panel(metric: str, description: str) -> object:
    return timeseries_panel(
        "Top prefixes by memory", description, "bytes",
        [Q(f"topk(10, max by ({BY}, prefix) ({sel(metric)}))", "{{target}} {{prefix}}")],
        stack=True, fill=30, min_value=0)


def overview(names: list[str]) -> dict:
    g = Grid()
    stores, apps = 'store!="app"', 'store="app"'
    soonest = (
        "sort(\n" + with_dashboard_label(
            f"min by (job, target, store, limit) (\n"
            f"  label_replace({sel('cache_memory_seconds_until_full', stores)} < +Inf, "
            f"\"limit\", \"effective limit\", \"\", \"\")\n"
            f"  or\n"
            f"  label_replace({sel('cache_memory_seconds_until_full', apps)} < +Inf, "
            f"\"limit\", \"heap limit\", \"\", \"\")\n"
            f"  or\n"
            f"  label_replace({sel('cache_resident_memory_seconds_until_full')} < +Inf, "
            f"\"limit\", \"hard limit\", \"\", \"\")\n)") + "\n)")
    to_detail = (data_link("Open the target's dashboard",
                           detail_url("${__field.labels.dashboard}", "${__field.labels.target}")),)
    bars = bargauge_panel(
        "Runs out first: time until full",
        "Every forecast that counts down, soonest first: memory reaching the effective limit (writes are "
        "rejected), an app's heap reaching its limit (the runtime aborts) and resident memory reaching the "
        "hard limit (OOM kill). Targets that are not growing (or not for long enough to tell), or evict when "
        "full, are not listed. Colours are the alerts' horizons. Effective limit: "
        f"{store_horizons_text()} (CacheMemoryExhaustionPredicted; the tiles below count them). A bar is "
        "coloured by its countdown alone: a red or blue one may lack the evidence its alert needs (Growth "
        "seen for, in the Targets table). Hard limit: "
        f"{RESIDENT_HORIZONS}. Heap limit: AppHeapExhaustionPredicted, {heap_horizons_text()}. Click a bar "
        "for the target's dashboard.", "s",
        [Q(soonest, "{{target}} · {{limit}}", instant=True)],
        thresholds_config=TIME_UNTIL_FULL, min_value=0, links=list(to_detail),
        no_value="Nothing is filling up")
    override_thresholds(bars, " · hard limit$", RESIDENT_UNTIL_FULL)
    override_thresholds(bars, " · heap limit$", HEAP_UNTIL_FULL)
    g.add(bars, w=12, h=9)
    g.add(bargauge_panel(
        "Fullest: memory used, % of effective limit",
        "cache_memory_utilization_ratio, highest first. Targets without a known limit are absent rather "
        "than N/A. No alert depends on a store's level, so the bars have no alarm colours: the exhaustion "
        "alerts follow the countdown (Runs out first), a store that evicts when full is fine at 100 % (watch "
        "its hit ratio), and one that rejects writes shows in the countdown and the Targets table (When "
        f"full). App heaps: AppHeapExhaustionPredicted needs over {rules.PREDICT_WARNING_MIN_UTILIZATION:.0%} "
        f"(warning) / {rules.PREDICT_CRITICAL_MIN_UTILIZATION:.0%} (critical) of the heap limit.", "percentunit",
        [Q("sort_desc(\n" + with_dashboard_label(
            f"max by (job, target, store) ({sel('cache_memory_utilization_ratio')})") + "\n)", instant=True)],
        thresholds_config=UTILIZATION, min_value=0, max_value=1, links=list(to_detail)), w=6, h=9)
    g.add(bargauge_panel(
        "Fullest: resident memory, % of hard limit",
        "Resident memory over the limit that gets the process killed, highest first, for every eviction "
        f"policy. Orange above {rules.RESIDENT_WARNING_RATIO:.0%}, red above "
        f"{rules.RESIDENT_CRITICAL_RATIO:.0%} (CacheResidentMemoryNearHardLimit).", "percentunit",
        [Q("sort_desc(\n" + with_dashboard_label(resident_ratio(by="job, target, store")) + "\n)",
           instant=True)],
        thresholds_config=RESIDENT, min_value=0, max_value=1, links=list(to_detail)), w=6, h=9)

    # Countdown per horizon: how many stores meet each CacheMemoryExhaustionPredicted condition now.
    which = ("Which ones: Runs out first above, the Targets table below (with Growth seen for). Resident "
             "memory (OOM kill) and app heaps have alerts of their own and are not counted here.")
    for title, text, expr, config in (
            (f"Full within {human(H_CRITICAL)}",
             f"Stores whose memory reaches the effective limit within {human(H_CRITICAL)}: the critical "
             f"condition of CacheMemoryExhaustionPredicted now, before its for: of "
             f"{human(rules.TIME['predict_critical_for'])}. cache_memory_seconds_until_full under "
             f"{human(H_CRITICAL)} and at most {EVIDENCE['critical']:g} x cache_memory_forecast_basis_seconds "
             "(the growth has been seen at least that long); a store that evicts when full never counts.",
             countdown_count(H_CRITICAL, EVIDENCE["critical"]), ANY_CRITICAL),
            (f"Full within {human(H_WARNING)}",
             f"Stores whose memory reaches the effective limit within {human(H_WARNING)}: the warning "
             f"condition of CacheMemoryExhaustionPredicted now, before its for: of "
             f"{human(rules.TIME['predict_warning_for'])}. Any countdown under {human(H_WARNING)}: the exporter "
             "gives one only when the growth has been seen for at least half of it. Includes the stores of "
             f"Full within {human(H_CRITICAL)}, and those under {human(H_CRITICAL)} without the evidence for "
             "critical.",
             countdown_count(H_WARNING, EVIDENCE["warning"]), ANY_WARNING),
            (f"Full in {human(H_WARNING)} – {human(H_INFO)}",
             f"Slow leaks: stores whose memory reaches the effective limit in {human(H_WARNING)} to "
             f"{human(H_INFO)}, with a countdown at most {EVIDENCE['info']:g} x "
             "cache_memory_forecast_basis_seconds (the time the growth has been seen): the info condition of "
             f"CacheMemoryExhaustionPredicted (a ticket) now, before its for: of "
             f"{human(rules.TIME['predict_info_for'])}. A countdown in that range with less evidence shows in "
             "Runs out first but alerts nobody yet.",
             countdown_count(H_INFO, EVIDENCE["info"], beyond=H_WARNING), ANY_INFO)):
        g.add(stat_panel(title, f"{text} {which}", "none", [Q(expr, "")], thresholds_config=config), w=8, h=4)

    def count(title: str, description: str, expr: str, config) -> None:
        g.add(stat_panel(title, description, "none", [Q(f"count({expr}) or vector(0)", "")],
                         thresholds_config=config), w=4, h=4)

    count("Targets down", "Targets whose last poll failed (cache_up == 0). CacheTargetDown fires after "
          f"{rules.TIME['down_for'] / 60:g} m; the reason is in the Exporter row.",
          f"{sel('cache_up')} == 0", ANY_CRITICAL)
    count("Critical alerts firing", "cache-exporter alerts with severity critical firing now.",
          firing_alerts(names, 'severity="critical"'), ANY_CRITICAL)
    count("Warning alerts firing", "cache-exporter alerts with severity warning firing now.",
          firing_alerts(names, 'severity="warning"'), ANY_WARNING)
    count("Redis without maxmemory", "Redis targets running with maxmemory 0: they never evict and grow until "
          "the container or host kills them; their limit falls back to memory_limit or the host "
          "(CacheMemoryLimitUnset). A managed store's declared data limit (source managed) is a limit.",
          sel("cache_memory_limit_info", 'store="redis"', 'source!~"maxmemory|managed"'),
          ANY_WARNING)
    count("Critical audit findings", "Active configuration-audit findings of severity critical "
          "(cache_config_finding; CacheConfigAuditFinding warns after 1 h). `cache-exporter audit` explains them.",
          sel("cache_config_finding", 'severity="critical"'), ANY_WARNING)
    count("Warning audit findings", "Active configuration-audit findings of severity warning "
          "(cache_config_finding).", sel("cache_config_finding", 'severity="warning"'), ANY_INFO)

    up = f"max by (job, target, store, dashboard) (\n  {with_dashboard_label(sel('cache_up'))}\n)"
    g.add(table_panel(
        "Targets",
        "One row per target, sorted by time until full, soonest first. " + FORECAST_TEXT + " " + GROWTH_SEEN_FOR
        + " Time until full is coloured by the stores' horizons (as Runs out first), also for app heaps, "
        f"whose alert differs (AppHeapExhaustionPredicted, {heap_horizons_text()}: the app dashboard "
        "colours them so). Click a target for its dashboard. Hit ratio, "
        "evictions and rejections are rates over $__rate_interval; findings and alerts are counts now.", "none",
        [Q(up, table=True),
         Q(forecast_column("cache_memory_seconds_until_full"), table=True),
         Q(f"max by ({BY}) ({sel('cache_memory_utilization_ratio')})", table=True),
         Q(resident_ratio(), table=True),
         Q(forecast_column("cache_resident_memory_seconds_until_full"), table=True),
         Q(hit_ratio(BY), table=True),
         Q(f"sum by ({BY}) ({rate('cache_evictions_total')})", table=True),
         Q(f"sum by ({BY}) ({rate('cache_write_rejections_total')})", table=True),
         Q(f"count by ({BY}) ({sel('cache_config_finding')})", table=True),
         Q(f"count by ({BY}) ({firing_alerts(names, 'target!=' + EMPTY)})", table=True),
         Q(f"max by ({BY}) ({sel('cache_evicts_when_full')})", table=True),
         Q(basis_column(), table=True)],
        [Column("target", "Target", links=(data_link(
            "Open ${__data.fields.target}'s dashboard",
            detail_url("${__data.fields.dashboard}", "${__data.fields.target}")),), width=160),
         Column("store", "Store", width=90),
         Column("A", "Up", mappings=UP, cell="color-text", width=60),
         Column("B", "Time until full", unit="s", thresholds=TIME_UNTIL_FULL, mappings=FORECAST_MAPPINGS,
                cell="color-background"),
         Column("L", "Growth seen for", unit="s", mappings=NOT_GROWING),
         Column("C", "Used / limit", unit="percentunit", decimals=1),
         Column("D", "Resident / hard limit", unit="percentunit", thresholds=RESIDENT, cell="color-text",
                decimals=1),
         Column("E", "Until OOM kill", unit="s", thresholds=RESIDENT_UNTIL_FULL, mappings=FORECAST_MAPPINGS,
                cell="color-background"),
         Column("F", "Hit ratio", unit="percentunit", decimals=1),
         Column("G", "Evictions/s", unit="ops"),
         Column("H", "Rejected writes/s", unit="ops", thresholds=thresholds("green", (1e-9, "red")),
                cell="color-text"),
         Column("I", "Findings", unit="none", thresholds=ANY_WARNING, cell="color-text"),
         Column("J", "Alerts", unit="none", thresholds=ANY_WARNING, cell="color-text"),
         Column("K", "When full", mappings=EVICTS, cell="color-text"),
         Column("job", "Job"),
         Column("dashboard", "Dashboard", hidden=True)],
        sort_by="Time until full"), w=24, h=10)

    g.row("Memory")
    g.add(utilization_panel(apps=True), w=12, h=8)
    g.add(time_until_full_panel(apps=True), w=12, h=8)
    g.add(resident_panel(), w=12, h=8)
    g.add(timeseries_panel(
        "Memory growth", "cache_memory_growth_bytes_per_second: the growth of used memory behind the "
        "countdown (the median rise of the peaks of the window it came from; a bulk load, a sawtooth or noise "
        "is not growth), else its trend over about the forecast window. Negative when shrinking.", "Bps",
        [Q(f"max by ({BY}) ({sel('cache_memory_growth_bytes_per_second')})")]), w=12, h=8)

    g.row("Traffic")
    g.add(timeseries_panel(
        "Hit ratio", "hits / (hits + misses) over $__rate_interval (Redis keyspace, Memcached gets, an app's "
        "in-process caches summed). No point when there were no lookups. CacheEvictionPressure fires when a "
        f"store evicts while this falls under {rules.EVICTION_HIT_RATIO_DROP:.0%} of its "
        f"{rules.TIME['eviction_baseline'] / 3600:g} h baseline.", "percentunit",
        [Q(hit_ratio(BY))], min_value=0, max_value=1), w=8, h=8)
    g.add(timeseries_panel(
        "Evictions", "Keys/items evicted per second to stay under the memory limit.", "ops",
        [Q(f"sum by ({BY}) ({rate('cache_evictions_total')})")]), w=8, h=8)
    g.add(timeseries_panel(
        "Writes rejected for lack of memory", "Writes refused because memory is full (Redis -OOM, Memcached "
        "SERVER_ERROR out of memory), per second. Any of them fires CacheWritesRejected (critical).", "ops",
        [Q(f"sum by ({BY}) ({rate('cache_write_rejections_total')})")]), w=8, h=8)

    g.row("Alerts and audit")
    g.add(table_panel(
        "Firing alerts", "cache-exporter alerts firing now (ALERTS from Prometheus; alerts without a target, "
        "such as CacheExporterDown, show only when Target is All). Runbooks: docs/runbooks.md.", "none",
        [Q(f"max by (alertname, severity, {BY}) ({firing_alerts(names)})", table=True)],
        [Column("alertname", "Alert", width=320),
         Column("severity", "Severity", mappings=SEVERITY, cell="color-text", width=110),
         Column("target", "Target"), Column("job", "Job"), Column("A", "Firing", hidden=True)],
        sort_by="Severity", no_value="No alert firing"), w=12, h=8)
    g.add(table_panel(
        "Audit findings", "Active configuration-audit findings (cache_config_finding). `cache-exporter audit` "
        "prints the details and the fix of each check.", "none",
        [Q(f"max by ({BY}, check, severity) ({sel('cache_config_finding')})", table=True)],
        [Column("target", "Target"), Column("check", "Check", width=300),
         Column("severity", "Severity", mappings=SEVERITY, cell="color-text", width=110),
         Column("job", "Job"), Column("A", "Active", hidden=True)],
        sort_by="Severity", no_value="No finding"), w=12, h=8)

    g.row("Exporter")
    g.add(timeseries_panel(
        "Poll errors by reason", "Failed polls per second by reason (refused, timeout, auth, protocol, ...; "
        "see Failure reasons in docs/metrics.md).", "ops",
        [Q(f"sum by ({BY}, reason) ({rate('cache_exporter_poll_errors_total')})", "{{target}} {{reason}}")]),
        w=8, h=8)
    g.add(timeseries_panel(
        "Time since last successful poll", "Seconds since each target was last polled successfully. "
        f"CacheTargetDown fires after {rules.TIME['down_for'] / 60:g} m of failed polls.", "s",
        [Q(f"time() - max by ({BY}) ({sel('cache_exporter_last_poll_success_timestamp_seconds')})")],
        thresholds_config=SINCE_LAST_POLL, min_value=0), w=8, h=8)
    g.add(timeseries_panel(
        "Poll duration", "Duration of the most recent poll of each target (bounded by the target's timeout).",
        "s", [Q(f"max by ({BY}) ({sel('cache_exporter_last_poll_duration_seconds')})")], min_value=0),
        w=8, h=8)

    return dashboard(
        "overview",
        "Every cache-exporter target at a glance: which one runs out of memory first and when, memory "
        "against the effective and the hard limit, hit ratio, evictions, audit findings and firing alerts.",
        'cache_up{job=~"$job"}', g, names)


# --- Redis ------------------------------------------------------------------------------------------------

def redis(names: list[str]) -> dict:
    store = 'store="redis"'
    misconf = 'err="MISCONF"'
    g = Grid()
    g.add(table_panel(
        "Instances", "One row per Redis/Valkey target: version, replication role, eviction policy, whether "
        "it evicts or rejects writes when full, where its memory limit comes from, memory used against it, "
        "and the time until it is full (coloured by CacheMemoryExhaustionPredicted's horizons, as Time until "
        "full below). " + FORECAST_TEXT + " " + GROWTH_SEEN_FOR, "none",
        [Q(f"max by ({BY}, redis_version, valkey_version, role, maxmemory_policy) "
           f"({sel('redis_instance_info')})", table=True),
         Q(f"max by ({BY}) ({sel('redis_up')})", table=True),
         Q(f"max by ({BY}) ({sel('cache_evicts_when_full', store)})", table=True),
         Q(f"max by ({BY}, source) ({sel('cache_memory_limit_info', store)})", table=True),
         Q(f"max by ({BY}) ({sel('cache_memory_utilization_ratio', store)})", table=True),
         Q(f"max by ({BY}) ({sel('redis_uptime_in_seconds')})", table=True),
         Q(forecast_column("cache_memory_seconds_until_full", store), table=True),
         Q(basis_column(store), table=True)],
        [Column("target", "Target"), Column("B", "Up", mappings=UP, cell="color-text", width=60),
         Column("redis_version", "Redis"), Column("valkey_version", "Valkey"), Column("role", "Role"),
         Column("maxmemory_policy", "maxmemory-policy"),
         Column("C", "When full", mappings=EVICTS, cell="color-text"),
         Column("source", "Limit from"),
         Column("E", "Used / limit", unit="percentunit", decimals=1),
         Column("G", "Time until full", unit="s", thresholds=TIME_UNTIL_FULL, mappings=FORECAST_MAPPINGS,
                cell="color-background"),
         Column("H", "Growth seen for", unit="s", mappings=NOT_GROWING),
         Column("F", "Uptime", unit="s"), Column("job", "Job"),
         Column("A", "info", hidden=True), Column("D", "limit info", hidden=True)],
        sort_by="Target"), w=24, h=6)
    g.add(store_alerts_table("redis", names), w=24, h=5)

    g.row("Memory")
    g.add(timeseries_panel(
        "Memory used vs limits", "Memory counted against maxmemory (used_memory minus what is not counted for "
        "eviction), maxmemory itself (not drawn when 0: no limit), the effective limit the forecast uses "
        "(maxmemory, else memory_limit, else the host), resident memory (RSS) and the hard limit that "
        "gets the process killed.", "bytes",
        [Q(f"max by ({BY}) ({sel('cache_memory_used_bytes', store)})", "{{target}} used"),
         Q(f"max by ({BY}) ({sel('redis_memory_max_bytes')} > 0)", "{{target}} maxmemory"),
         Q(f"max by ({BY}) ({sel('cache_memory_limit_bytes', store)})", "{{target}} effective limit"),
         Q(f"max by ({BY}) ({sel('redis_memory_used_rss_bytes')})", "{{target}} resident (RSS)"),
         Q(f"max by ({BY}) ({sel('cache_resident_memory_limit_bytes', store)})", "{{target}} hard limit")],
        fill=0, min_value=0), w=12, h=9)
    g.add(utilization_panel(store), w=6, h=9)
    g.add(time_until_full_panel(store), w=6, h=9)
    g.add(resident_panel(store), w=8, h=8)
    g.add(timeseries_panel(
        "Fork memory risk", "redis_fork_memory_risk_ratio: (resident memory + the largest copy-on-write of a "
        "recent fork) / hard limit. Above 100 % the next BGSAVE or AOF rewrite is likely to fail or get "
        "Redis killed; with stop-writes-on-bgsave-error Redis then refuses writes (-MISCONF). "
        f"RedisForkMemoryAtRisk: warning above {rules.FORK_WARNING_RATIO:.0%}, critical above "
        f"{rules.FORK_CRITICAL_RATIO:.0%}, unless nothing forks.", "percentunit",
        [Q(f"max by ({BY}) ({sel('redis_fork_memory_risk_ratio')})")],
        thresholds_config=FORK_RISK, min_value=0), w=8, h=8)
    g.add(timeseries_panel(
        "Fragmentation", "redis_mem_fragmentation_ratio: RSS / used_memory. Well above 1: memory held by the "
        "allocator that the dataset does not use (counts against the hard limit, not maxmemory); "
        "below 1: swapping.", "none",
        [Q(f"max by ({BY}) ({sel('redis_mem_fragmentation_ratio')})")], decimals=2), w=8, h=8)

    g.row("Writes, evictions, hits")
    g.add(timeseries_panel(
        "Writes refused", "Writes refused per second: -OOM (memory full under noeviction; CacheWritesRejected) "
        "and -MISCONF (a failed background save with stop-writes-on-bgsave-error; RedisWritesRefusedMisconf).",
        "ops",
        [Q(f"sum by ({BY}) ({rate('cache_write_rejections_total', store)})", "{{target}} -OOM"),
         Q(f"sum by ({BY}) ({rate('redis_errors_total', misconf)})", "{{target}} -MISCONF")]),
        w=8, h=8)
    g.add(timeseries_panel(
        "Evictions and expirations", "Keys evicted to stay under maxmemory, and keys removed because their TTL "
        "ran out, per second.", "ops",
        [Q(f"sum by ({BY}) ({rate('redis_evicted_keys_total')})", "{{target}} evicted"),
         Q(f"sum by ({BY}) ({rate('redis_expired_keys_total')})", "{{target}} expired")]), w=8, h=8)
    g.add(timeseries_panel(
        "Hit ratio", "keyspace hits / (hits + misses) over $__rate_interval; no point without lookups.",
        "percentunit", [Q(hit_ratio(BY, store))], min_value=0, max_value=1), w=8, h=8)
    g.add(timeseries_panel(
        "Hits and misses", "Key lookups per second that found / did not find the key.", "ops",
        [Q(f"sum by ({BY}) ({rate('redis_keyspace_hits_total')})", "{{target}} hits"),
         Q(f"sum by ({BY}) ({rate('redis_keyspace_misses_total')})", "{{target}} misses")]), w=8, h=8)
    g.add(timeseries_panel(
        "Error replies by type", "Error replies sent to clients per second, by error prefix (errorstats: OOM, "
        "MISCONF, WRONGTYPE, NOAUTH, ...).", "ops",
        [Q(f"sum by ({BY}, err) ({rate('redis_errors_total')})", "{{target}} {{err}}")]), w=8, h=8)
    g.add(timeseries_panel(
        "Rejected connections", "Connections refused per second because maxclients was reached.", "ops",
        [Q(f"sum by ({BY}) ({rate('redis_rejected_connections_total')})")]), w=8, h=8)

    g.row("Keys, clients, commands")
    g.add(timeseries_panel(
        "Keys per database", "Keys per logical database, and how many of them have a TTL (volatile-* policies "
        "can only evict those).", "short",
        [Q(f"sum by ({BY}, db) ({sel('redis_db_keys')})", "{{target}} {{db}}"),
         Q(f"sum by ({BY}, db) ({sel('redis_db_keys_expiring')})", "{{target}} {{db}} with TTL")]), w=8, h=8)
    g.add(timeseries_panel(
        "Clients", "Connected and blocked clients, and the maxclients limit.", "short",
        [Q(f"max by ({BY}) ({sel('redis_connected_clients')})", "{{target}} connected"),
         Q(f"max by ({BY}) ({sel('redis_blocked_clients')})", "{{target}} blocked"),
         Q(f"max by ({BY}) ({sel('redis_config_maxclients')})", "{{target}} maxclients")]), w=8, h=8)
    g.add(timeseries_panel(
        "Commands", "Commands processed per second.", "ops",
        [Q(f"sum by ({BY}) ({rate('redis_commands_processed_total')})")]), w=8, h=8)
    g.add(timeseries_panel(
        "Top commands", "The 10 busiest commands (calls per second).", "ops",
        [Q(f"topk(10, sum by ({BY}, cmd) ({rate('redis_commands_total')}))", "{{target}} {{cmd}}")]),
        w=12, h=8)
    g.add(timeseries_panel(
        "Network", "Bytes read from and written to clients per second.", "Bps",
        [Q(f"sum by ({BY}) ({rate('redis_net_input_bytes_total')})", "{{target}} in"),
         Q(f"sum by ({BY}) ({rate('redis_net_output_bytes_total')})", "{{target}} out")]), w=12, h=8)

    g.row("Per key prefix")
    g.add(prefix_panel("redis_prefix_bytes", "Which key prefix holds the memory: MEMORY USAGE summed per prefix "
                       "over a SCAN sample of max_keys keys, scaled to DBSIZE (exact when "
                       "redis_prefix_scan_complete is 1). Opt-in: the target's prefixes setting; its own "
                       "interval, 5 m by default. The rest is summed as __other__."), w=24, h=8)

    g.row("Persistence and forks")
    g.add(table_panel(
        "Persistence", "Persistence per target: RDB and AOF on or off, whether the last background save and "
        "AOF rewrite succeeded (RedisBackgroundSaveFailed), stop-writes-on-bgsave-error (a failed save then "
        "refuses all writes: RedisWritesRefusedMisconf), time since the last successful save, replicas, and "
        "the fork memory risk.", "none",
        [Q(f"max by ({BY}) ({sel('redis_rdb_enabled')})", table=True),
         Q(f"max by ({BY}) ({sel('redis_aof_enabled')})", table=True),
         Q(f"min by ({BY}) ({sel('redis_rdb_last_bgsave_status')})", table=True),
         Q(f"min by ({BY}) ({sel('redis_aof_last_bgrewrite_status')})", table=True),
         Q(f"max by ({BY}) ({sel('redis_config_stop_writes_on_bgsave_error')})", table=True),
         Q(f"time() - max by ({BY}) ({sel('redis_rdb_last_save_timestamp_seconds')})", table=True),
         Q(f"max by ({BY}) ({sel('redis_connected_slaves')})", table=True),
         Q(f"max by ({BY}) ({sel('redis_fork_memory_risk_ratio')})", table=True)],
        [Column("target", "Target"), Column("A", "RDB", mappings=ON_OFF, cell="color-text"),
         Column("B", "AOF", mappings=ON_OFF, cell="color-text"),
         Column("C", "Last BGSAVE", mappings=OK_FAILED, cell="color-text"),
         Column("D", "Last AOF rewrite", mappings=OK_FAILED, cell="color-text"),
         Column("E", "Stop writes on save error", mappings=YES_NO, cell="color-text"),
         Column("F", "Since last save", unit="s"), Column("G", "Replicas", unit="none"),
         Column("H", "Fork risk", unit="percentunit", thresholds=FORK_RISK, cell="color-text", decimals=0),
         Column("job", "Job")],
        sort_by="Target"), w=24, h=6)
    g.add(timeseries_panel(
        "Copy-on-write", "Copy-on-write memory of the last RDB save and AOF rewrite, of the running fork, and the "
        "largest seen in the forecast window (what the next fork may need on top of resident memory).",
        "bytes",
        [Q(f"max by ({BY}) ({sel('redis_rdb_last_cow_size_bytes')})", "{{target}} last RDB save"),
         Q(f"max by ({BY}) ({sel('redis_aof_last_cow_size_bytes')})", "{{target}} last AOF rewrite"),
         Q(f"max by ({BY}) ({sel('redis_current_cow_size_bytes')})", "{{target}} running fork"),
         Q(f"max by ({BY}) ({sel('redis_recent_cow_peak_bytes')})", "{{target}} recent peak")],
        fill=0, min_value=0), w=12, h=8)
    g.add(timeseries_panel(
        "Background saves", "Whether a BGSAVE or an AOF rewrite is running (1), and forks per second.", "short",
        [Q(f"max by ({BY}) ({sel('redis_rdb_bgsave_in_progress')})", "{{target}} BGSAVE running"),
         Q(f"max by ({BY}) ({sel('redis_aof_rewrite_in_progress')})", "{{target}} AOF rewrite running"),
         Q(f"sum by ({BY}) ({rate('redis_forks_total')})", "{{target}} forks/s")], min_value=0), w=12, h=8)

    return dashboard(
        "redis", "Redis and Valkey targets: memory against maxmemory, the effective and the hard limit, "
        "forecasts, fork risk, refused writes, evictions, hits, keys, clients, commands and persistence.",
        'cache_up{job=~"$job", store="redis"}', g, names)


# --- Memcached --------------------------------------------------------------------------------------------

def memcached(names: list[str]) -> dict:
    store = 'store="memcached"'
    by_slab = f"{BY}, slab"
    g = Grid()
    g.add(table_panel(
        "Instances", "One row per Memcached target: version, whether it evicts (default) or refuses stores "
        "(-M) when full, slab page moving (slab_reassign, slab_automove), memory used against -m, the time "
        "until it is full (coloured by CacheMemoryExhaustionPredicted's horizons, as Time until full below), "
        "calcified slab classes. " + FORECAST_TEXT + " " + GROWTH_SEEN_FOR, "none",
        [Q(f"max by ({BY}, version) ({sel('memcached_version')})", table=True),
         Q(f"max by ({BY}) ({sel('memcached_up')})", table=True),
         Q(f"max by ({BY}) ({sel('cache_evicts_when_full', store)})", table=True),
         Q(f"max by ({BY}, slab_reassign, slab_automove) ({sel('memcached_settings_info')})", table=True),
         Q(f"max by ({BY}) ({sel('cache_memory_utilization_ratio', store)})", table=True),
         Q(f"max by ({BY}) ({sel('memcached_calcified_slab_classes')})", table=True),
         Q(f"max by ({BY}) ({sel('memcached_uptime_seconds')})", table=True),
         Q(forecast_column("cache_memory_seconds_until_full", store), table=True),
         Q(basis_column(store), table=True)],
        [Column("target", "Target"), Column("B", "Up", mappings=UP, cell="color-text", width=60),
         Column("version", "Version"), Column("C", "When full", mappings=EVICTS, cell="color-text"),
         Column("slab_reassign", "slab_reassign"), Column("slab_automove", "slab_automove"),
         Column("E", "Used / limit", unit="percentunit", decimals=1),
         Column("H", "Time until full", unit="s", thresholds=TIME_UNTIL_FULL, mappings=FORECAST_MAPPINGS,
                cell="color-background"),
         Column("I", "Growth seen for", unit="s", mappings=NOT_GROWING),
         Column("F", "Calcified classes", unit="none", thresholds=ANY_WARNING, cell="color-text"),
         Column("G", "Uptime", unit="s"), Column("job", "Job"),
         Column("A", "version info", hidden=True), Column("D", "settings info", hidden=True)],
        sort_by="Target"), w=24, h=6)
    g.add(store_alerts_table("memcached", names), w=24, h=5)

    g.row("Memory")
    g.add(timeseries_panel(
        "Memory: slab pages vs limit", "Slab pages handed out (total_malloced: what runs out at -m), bytes "
        "the items use (the peers' 'memory used', which hides slab overhead), the -m limit, the hash "
        "table (outside -m) and the hard limit of the process.", "bytes",
        [Q(f"max by ({BY}) ({sel('cache_memory_used_bytes', store)})", "{{target}} slab pages"),
         Q(f"max by ({BY}) ({sel('memcached_current_bytes')})", "{{target}} item bytes"),
         Q(f"max by ({BY}) ({sel('memcached_limit_bytes')})", "{{target}} limit (-m)"),
         Q(f"max by ({BY}) ({sel('memcached_hash_bytes')})", "{{target}} hash table"),
         Q(f"max by ({BY}) ({sel('cache_resident_memory_limit_bytes', store)})", "{{target}} hard limit")],
        fill=0, min_value=0), w=12, h=9)
    g.add(utilization_panel(store), w=6, h=9)
    g.add(timeseries_panel(
        "Free pages (headroom)", "memcached_free_pages: pages any slab class can still get (the global page "
        "pool plus pages not yet allocated under -m). At 0 a class that needs memory must evict, or refuse "
        "the store under -M.", "short",
        [Q(f"max by ({BY}) ({sel('memcached_free_pages')})", "{{target}} free pages"),
         Q(f"max by ({BY}) ({sel('memcached_slab_global_page_pool')})", "{{target}} global page pool")],
        min_value=0), w=6, h=9)
    # Memcached reports no resident memory: only the forecast against -m.
    g.add(time_until_full_panel(store, resident=False), w=12, h=8)
    g.add(timeseries_panel(
        "Calcified slab classes", "memcached_calcified_slab_classes: classes that evict (or refuse stores) "
        "while other classes hold free chunks and no page moves between them. MemcachedSlabCalcification "
        f"fires after {rules.TIME['calcification_for'] / 60:g} m above 0. Which classes: the Per slab class row.",
        "none", [Q(f"max by ({BY}) ({sel('memcached_calcified_slab_classes')})")],
        thresholds_config=ANY_WARNING, min_value=0), w=12, h=8)

    g.row("Evictions, hits, commands")
    g.add(timeseries_panel(
        "Evictions", "Items evicted per second before they expired, those never fetched, and stores that "
        "reused an expired item instead (reclaimed).", "ops",
        [Q(f"sum by ({BY}) ({rate('memcached_items_evicted_total')})", "{{target}} evicted"),
         Q(f"sum by ({BY}) ({rate('memcached_items_evicted_unfetched_total')})", "{{target}} evicted unfetched"),
         Q(f"sum by ({BY}) ({rate('memcached_items_reclaimed_total')})", "{{target}} reclaimed")]), w=8, h=8)
    g.add(timeseries_panel(
        "Stores refused", "Stores refused per second: out of memory (-M, or nothing evictable in the class; "
        "CacheWritesRejected's cache_write_rejections_total, which counts binary/SASL clients' refusals too) and "
        "items larger than the max item size.", "ops",
        [Q(f"sum by ({BY}) ({rate('cache_write_rejections_total', store)})", "{{target}} out of memory"),
         Q(f"sum by ({BY}) ({rate('memcached_item_too_large_total')})", "{{target}} too large")]), w=8, h=8)
    g.add(timeseries_panel(
        "Hit ratio", "get hits / (hits + misses) over $__rate_interval; no point without gets.", "percentunit",
        [Q(hit_ratio(BY, store))], min_value=0, max_value=1), w=8, h=8)
    g.add(timeseries_panel(
        "Commands", "Requests per second by command and status (hit, miss, badval, ...).", "ops",
        [Q(f"sum by ({BY}, command, status) ({rate('memcached_commands_total')})",
           "{{target}} {{command}} {{status}}")]), w=12, h=8)
    g.add(timeseries_panel(
        "Connections", "Open connections against the -c limit.", "short",
        [Q(f"max by ({BY}) ({sel('memcached_current_connections')})", "{{target}} open"),
         Q(f"max by ({BY}) ({sel('memcached_max_connections')})", "{{target}} max (-c)")], min_value=0),
        w=6, h=8)
    g.add(timeseries_panel(
        "Rejected connections", "Connections rejected per second at the -c limit.", "ops",
        [Q(f"sum by ({BY}) ({rate('memcached_connections_rejected_total')})")]), w=6, h=8)

    g.row("Per key prefix")
    g.add(prefix_panel("memcached_prefix_bytes", "Which key prefix holds the memory: item bytes per prefix "
                       "from lru_crawler metadump (opt-in: the target's prefixes setting; its own interval, "
                       "5 m by default). The top prefixes are kept per target, the rest summed as __other__. "
                       "A -S (SASL) server cannot be dumped: nothing is drawn for it."), w=24, h=8)

    g.row("Per slab class")
    g.add(table_panel(
        "Slab classes", "One row per target and slab class, most evictions first. A class that evicts while "
        "others have free chunks (and no page is free or moving) is calcified: memory is stranded in the "
        "wrong classes (restart, or enable slab_automove).", "none",
        [Q(f"max by ({by_slab}) ({sel('memcached_slab_chunk_size_bytes')})", table=True),
         Q(f"max by ({by_slab}) ({sel('memcached_slab_current_pages')})", table=True),
         Q(f"max by ({by_slab}) ({sel('memcached_slab_chunks_used')})", table=True),
         Q(f"max by ({by_slab}) ({sel('memcached_slab_chunks_free')})", table=True),
         Q(f"max by ({by_slab}) ({sel('memcached_slab_chunks_used')})\n/\n"
           f"(max by ({by_slab}) ({sel('memcached_slab_current_chunks')}) > 0)", table=True),
         Q(f"max by ({by_slab}) ({sel('memcached_slab_current_items')})", table=True),
         Q(f"sum by ({by_slab}) ({rate('memcached_slab_items_evicted_total')})", table=True),
         Q(f"sum by ({by_slab}) ({rate('memcached_slab_items_outofmemory_total')})", table=True),
         Q(f"max by ({by_slab}) ({sel('memcached_slab_items_age_seconds')})", table=True),
         Q(f"max by ({by_slab}) ({sel('memcached_slab_calcified')})", table=True)],
        [Column("target", "Target"), Column("slab", "Class", width=70),
         Column("A", "Chunk size", unit="bytes"), Column("B", "Pages", unit="none"),
         Column("C", "Chunks used", unit="short"), Column("D", "Chunks free", unit="short"),
         Column("E", "Chunks used %", unit="percentunit", decimals=0),
         Column("F", "Items", unit="short"), Column("G", "Evictions/s", unit="ops"),
         Column("H", "Refused/s", unit="ops", thresholds=thresholds("green", (1e-9, "red")), cell="color-text"),
         Column("I", "Oldest item", unit="s"),
         Column("J", "Calcified", mappings=(value_map({"1": ("calcified", "orange"), "0": ("", "text")}),),
                cell="color-text"),
         Column("job", "Job")],
        sort_by="Evictions/s", descending=True), w=24, h=10)
    g.add(timeseries_panel(
        "Evictions per slab class", "Items evicted per second in each slab class.", "ops",
        [Q(f"sum by ({by_slab}) ({rate('memcached_slab_items_evicted_total')})", "{{target}} class {{slab}}")]),
        w=12, h=8)
    g.add(timeseries_panel(
        "Pages per slab class", "Slab pages assigned to each class (stacked per target): where -m went.",
        "short",
        [Q(f"max by ({by_slab}) ({sel('memcached_slab_current_pages')})", "{{target}} class {{slab}}")],
        stack=True, fill=30), w=12, h=8)
    g.add(timeseries_panel(
        "Free chunks per slab class", "Chunks free for reuse in each class: memory a calcified class cannot "
        "use.", "short",
        [Q(f"max by ({by_slab}) ({sel('memcached_slab_chunks_free')})", "{{target}} class {{slab}}")]),
        w=8, h=8)
    g.add(timeseries_panel(
        "Oldest item per slab class", "Age of the oldest item in each class: a short age in a busy class means "
        "items are evicted soon after they are stored.", "s",
        [Q(f"max by ({by_slab}) ({sel('memcached_slab_items_age_seconds')})", "{{target}} class {{slab}}")]),
        w=8, h=8)
    g.add(timeseries_panel(
        "Calcified classes", "Slab classes while calcified (memcached_slab_calcified = 1); nothing is drawn for "
        "healthy classes.", "none",
        [Q(f"max by ({by_slab}) ({sel('memcached_slab_calcified')} == 1)", "{{target}} class {{slab}}")],
        thresholds_config=ANY_WARNING, bars=True, min_value=0), w=8, h=8)

    return dashboard(
        "memcached", "Memcached targets: slab pages against the -m limit, free pages, evictions, refused "
        "stores, hit ratio, commands, connections, and the per-slab-class view with calcification.",
        'cache_up{job=~"$job", store="memcached"}', g, names)


# --- application heap and in-process caches ---------------------------------------------------------

def app(names: list[str]) -> dict:
    store = 'store="app"'
    by_cache = f"{BY}, cache"
    g = Grid()
    g.add(table_panel(
        "Apps", "One row per app target: runtime, where the heap limit comes from, heap use, forecast (coloured "
        f"by AppHeapExhaustionPredicted's horizons: {heap_horizons_text()}), GC share and "
        "swallowed cache-backend errors. " + FORECAST_TEXT + " " + GROWTH_SEEN_FOR, "none",
        [Q(f"max by ({BY}) ({sel('app_up')})", table=True),
         Q(f"max by ({BY}, runtime) ({sel('app_runtime_info')})", table=True),
         Q(f"max by ({BY}, source) ({sel('cache_memory_limit_info', store)})", table=True),
         Q(f"max by ({BY}) ({sel('cache_memory_utilization_ratio', store)})", table=True),
         Q(forecast_column("cache_memory_seconds_until_full", store), table=True),
         Q(f"max by ({BY}) ({sel('app_gc_time_ratio')})", table=True),
         Q(f"sum by ({BY}) ({rate('app_cache_backend_errors_total')})", table=True),
         Q(basis_column(store), table=True)],
        [Column("target", "Target"), Column("A", "Up", mappings=UP, cell="color-text", width=60),
         Column("runtime", "Runtime"), Column("source", "Heap limit from"),
         Column("D", "Heap / limit", unit="percentunit", thresholds=HEAP, cell="color-text", decimals=1),
         Column("E", "Heap full in", unit="s", thresholds=HEAP_UNTIL_FULL, mappings=FORECAST_MAPPINGS,
                cell="color-background"),
         Column("H", "Growth seen for", unit="s", mappings=NOT_GROWING),
         Column("F", "GC time", unit="percentunit", thresholds=GC_RATIO, cell="color-text", decimals=1),
         Column("G", "Cache backend errors/s", unit="ops", thresholds=thresholds("green", (1e-9, "orange")),
                cell="color-text"),
         Column("job", "Job"), Column("B", "runtime info", hidden=True), Column("C", "limit info", hidden=True)],
        sort_by="Heap full in"), w=24, h=6)
    g.add(store_alerts_table("app", names), w=24, h=5)

    g.row("Heap")
    g.add(timeseries_panel(
        "Heap used vs limit", "Heap counted against the limit (Node.js: the old generation, which is what V8 "
        "aborts on; JVM: heap pools; Go: sys minus released), the total heap the runtime reports (V8: with "
        "the young generation), the heap limit, and the effective limit the countdown aims at (V8: "
        f"{V8_ABORT_RATIO:.0%} of the limit, from where its ineffective mark-compact rule may abort).", "bytes",
        [Q(f"max by ({BY}) ({sel('cache_memory_used_bytes', store)})", "{{target}} heap used (counted)"),
         Q(f"max by ({BY}) ({sel('app_heap_total_used_bytes')})", "{{target}} total heap used"),
         Q(f"max by ({BY}) ({sel('cache_memory_limit_bytes', store)})", "{{target}} heap limit"),
         Q(f"max by ({BY}) ({sel('app_heap_effective_limit_bytes')})",
           "{{target}} effective limit (may abort from here)")],
        fill=0, min_value=0), w=12, h=9)
    g.add(timeseries_panel(
        "Heap used, % of limit", "Heap counted against the limit. V8 may abort (exit 134, not an OOM "
        f"kill) from {V8_ABORT_RATIO:.0%} on, when 4 mark-compacts in a row leave the program under 40 % of "
        "the time; it died there under fast allocation in our runs.", "percentunit",
        [Q(f"max by ({BY}) ({sel('cache_memory_utilization_ratio', store)})")],
        thresholds_config=HEAP, min_value=0), w=6, h=9)
    g.add(heap_until_full_panel(store), w=6, h=9)
    g.add(timeseries_panel(
        "GC time", "app_gc_time_ratio: share of wall time spent in garbage collection between polls. "
        "Informational: V8's thrash before an abort lasts seconds, shorter than a poll, so no alert uses it; "
        "red is V8's own rule (program under 40 % of the time).", "percentunit",
        [Q(f"max by ({BY}) ({sel('app_gc_time_ratio')})")], thresholds_config=GC_RATIO, min_value=0),
        w=12, h=8)
    g.add(timeseries_panel(
        "Heap growth", "cache_memory_growth_bytes_per_second for the heap: the growth behind the forecast "
        "(from the heap's peaks, so GC sawtooth does not count as growth).", "Bps",
        [Q(f"max by ({BY}) ({sel('cache_memory_growth_bytes_per_second', store)})")]), w=12, h=8)

    g.row("Process memory")
    g.add(timeseries_panel(
        "Resident memory vs hard limit", "Resident memory of the app process and the limit that gets it "
        "killed (memory_limit, else the host).", "bytes",
        [Q(f"max by ({BY}) ({sel('cache_resident_memory_bytes', store)})", "{{target}} resident"),
         Q(f"max by ({BY}) ({sel('cache_resident_memory_limit_bytes', store)})", "{{target}} hard limit")],
        fill=0, min_value=0), w=8, h=8)
    g.add(resident_panel(store), w=8, h=8)
    g.add(oom_kill_panel(store), w=8, h=8)

    g.row("In-process caches")
    g.add(timeseries_panel(
        "Hit ratio by cache", "hits / (hits + misses) of each in-process cache over $__rate_interval.",
        "percentunit", [Q(hit_ratio(by_cache, store), "{{target}} {{cache}}")], min_value=0, max_value=1),
        w=8, h=8)
    g.add(timeseries_panel(
        "Lookups by cache", "Hits and misses per second of each in-process cache.", "ops",
        [Q(f"sum by ({by_cache}) ({rate('cache_hits_total', store)})", "{{target}} {{cache}} hits"),
         Q(f"sum by ({by_cache}) ({rate('cache_misses_total', store)})", "{{target}} {{cache}} misses")]),
        w=8, h=8)
    g.add(timeseries_panel(
        "Evictions by cache", "Entries evicted per second from each in-process cache (size or weight bound).",
        "ops", [Q(f"sum by ({by_cache}) ({rate('cache_evictions_total', store)})", "{{target}} {{cache}}")]),
        w=8, h=8)
    g.add(timeseries_panel(
        "Entries by cache", "Entries currently held by each in-process cache.", "short",
        [Q(f"sum by ({by_cache}) ({sel('cache_items', store)})", "{{target}} {{cache}}")], min_value=0),
        w=12, h=8)
    g.add(timeseries_panel(
        "Cache backend errors (swallowed)", "Cache operations per second that failed against the backend and "
        "were swallowed by the app (django-redis IGNORE_EXCEPTIONS): the cache is silently off and every "
        "request goes to the database. Any of them fires AppCacheBackendFailing.", "ops",
        [Q(f"sum by ({by_cache}) ({rate('app_cache_backend_errors_total')})", "{{target}} {{cache}}")]),
        w=12, h=8)

    return dashboard(
        "app", "Applications caching in their own heap: heap against its limit and the effective limit "
        "the forecast aims at (V8's abort rule: exit 134, invisible to OOM-kill alerts), GC time, resident "
        "memory, and the in-process caches' hit ratio, evictions, entries and swallowed backend errors.",
        'cache_up{job=~"$job", store="app"}', g, names)


# --- HTTP response cache ---------------------------------------------------------------------------------

def http_cache(names: list[str]) -> dict:
    url = 'url=~"$url"'
    by_url = f"{BY}, url"
    g = Grid()
    g.add(table_panel(
        "URLs", "The last probe of each URL: status, whether a cache served it, whether an error is served from "
        "a cache (CacheHTTPErrorResponseCached) or still served after the origin recovered "
        "(CacheHTTPStaleErrorAfterRecovery), the cache's verdict, freshness left (negative: stale), age, the "
        "hit ratio of the last 100 probes, probe time and the status past the cache.", "none",
        [Q(f"max by ({by_url}) ({sel('http_cache_response_status_code', url)})", table=True),
         Q(f"max by ({by_url}) ({sel('http_cache_error_from_cache', url)})", table=True),
         Q(f"max by ({by_url}) ({sel('http_cache_stale_error_after_recovery', url)})", table=True),
         Q(f"max by ({by_url}) ({sel('http_cache_response_from_cache', url)})", table=True),
         Q(f"max by ({by_url}, cache_status, layer) ({sel('http_cache_response_info', url)})", table=True),
         Q(f"max by ({by_url}) ({sel('http_cache_response_ttl_seconds', url)})", table=True),
         Q(f"max by ({by_url}) ({sel('http_cache_response_age_seconds', url)})", table=True),
         Q(f"max by ({by_url}) ({sel('http_cache_hit_ratio', url)})", table=True),
         Q(f"max by ({by_url}) ({sel('http_cache_probe_duration_seconds', url)})", table=True),
         Q(f"max by ({by_url}) ({sel('http_cache_bypass_status_code', url)})", table=True)],
        [Column("target", "Target"), Column("url", "URL", width=280),
         Column("A", "Status", unit="none"),
         Column("B", "Error from cache", mappings=(value_map({"1": ("YES", "orange"), "0": ("no", "text")}),),
                cell="color-text"),
         Column("C", "Stale error after recovery",
                mappings=(value_map({"1": ("YES", "red"), "0": ("no", "text")}),), cell="color-text"),
         Column("D", "From cache", mappings=(value_map({"1": ("yes", "text"), "0": ("no", "text")}),)),
         Column("cache_status", "Cache status"), Column("layer", "Cache"),
         Column("F", "TTL left", unit="s", thresholds=TTL_LEFT, cell="color-text"),
         Column("G", "Age", unit="s"), Column("H", "Hit ratio (100 probes)", unit="percentunit", decimals=0),
         Column("I", "Probe time", unit="s"), Column("J", "Status past cache", unit="none"),
         Column("job", "Job"), Column("E", "info", hidden=True)],
        sort_by="Target"), w=24, h=8)
    g.add(store_alerts_table("http_cache", names), w=24, h=5)

    g.row("Cached errors")
    g.add(timeseries_panel(
        "Status code", "HTTP status of the last probe of each URL.", "none",
        [Q(f"max by ({by_url}) ({sel('http_cache_response_status_code', url)})", "{{target}} {{url}}")],
        calcs=("lastNotNull",)), w=8, h=8)
    g.add(timeseries_panel(
        "Error served from cache", "1 while the last response is an error (error_statuses) that a cache says "
        "it served. CacheHTTPErrorResponseCached (warning) fires after "
        f"{rules.TIME['http_error_cached_for'] / 60:g} m.", "bool_yes_no",
        [Q(f"max by ({by_url}) ({sel('http_cache_error_from_cache', url)})", "{{target}} {{url}}")],
        thresholds_config=ANY_WARNING, min_value=0, max_value=1, calcs=("lastNotNull", "max")), w=8, h=8)
    g.add(timeseries_panel(
        "Stale error after recovery", "1 while a cache serves an error although a request past the cache "
        "succeeds (needs a bypass). CacheHTTPStaleErrorAfterRecovery (critical) fires on the first probe that "
        "sees it (http_cache_stale_errors_after_recovery_total) and for "
        f"{rules.TIME['http_stale_error_window'] / 60:g} m after: purge the entry.", "bool_yes_no",
        [Q(f"max by ({by_url}) ({sel('http_cache_stale_error_after_recovery', url)})", "{{target}} {{url}}")],
        thresholds_config=ANY_CRITICAL, min_value=0, max_value=1, calcs=("lastNotNull", "max")), w=8, h=8)

    g.row("Cache behaviour")
    g.add(timeseries_panel(
        "Served from cache", "Share of probes a cache said it served, over $__rate_interval, and the "
        "exporter's hit ratio of the last 100 probes with a known answer.", "percentunit",
        [Q(ratio_of_rates(rate("http_cache_responses_from_cache_total", url), rate("http_cache_probes_total", url),
                          by_url), "{{target}} {{url}}"),
         Q(f"max by ({by_url}) ({sel('http_cache_hit_ratio', url)})", "{{target}} {{url}} (last 100)")],
        min_value=0, max_value=1), w=12, h=8)
    g.add(timeseries_panel(
        "Freshness left (TTL)", "How long the cache keeps the last response (Cache-Status ttl, else "
        "max-age/s-maxage minus Age, else Expires minus Date). Negative: served stale.", "s",
        [Q(f"max by ({by_url}) ({sel('http_cache_response_ttl_seconds', url)})", "{{target}} {{url}}")],
        thresholds_config=TTL_LEFT), w=6, h=8)
    g.add(timeseries_panel(
        "Age", "Age header of the last response: how long it has been in a cache.", "s",
        [Q(f"max by ({by_url}) ({sel('http_cache_response_age_seconds', url)})", "{{target}} {{url}}")],
        min_value=0), w=6, h=8)

    g.row("Probes")
    g.add(timeseries_panel(
        "Probe failures by reason", "Probes per second that got no HTTP answer, by reason (timeout, refused, "
        "tls, too_large, redirect, ...). The target is down only when no URL answers.", "ops",
        [Q(f"sum by ({by_url}, reason) ({rate('http_cache_probe_failures_total', url)})",
           "{{target}} {{url}} {{reason}}")]), w=8, h=8)
    g.add(timeseries_panel(
        "Probe duration", "Time to the response headers of the last probe (redirects included).", "s",
        [Q(f"max by ({by_url}) ({sel('http_cache_probe_duration_seconds', url)})", "{{target}} {{url}}")],
        min_value=0), w=8, h=8)
    g.add(timeseries_panel(
        "Errors from cache and bypass failures", "Probe responses per second that were errors served from a "
        "cache, and requests past the cache that got no answer.", "ops",
        [Q(f"sum by ({by_url}) ({rate('http_cache_errors_from_cache_total', url)})",
           "{{target}} {{url}} errors from cache"),
         Q(f"sum by ({by_url}) ({rate('http_cache_bypass_failures_total', url)})",
           "{{target}} {{url}} bypass failed")]), w=8, h=8)

    url_variable = query_variable(
        "url", "URL", 'label_values(http_cache_probe_success{job=~"$job", target=~"$target"}, url)',
        "Probed URLs of the selected targets.")
    return dashboard(
        "http_cache", "HTTP response-cache probes: per URL, whether error responses are served from a cache "
        "(and still served after the origin recovered), cache verdicts, freshness, age, hit ratio and probe "
        "failures.", 'cache_up{job=~"$job", store="http_cache"}', g, names, [url_variable])


# --- output ------------------------------------------------------------------------------------------------

def build_all() -> dict[str, dict]:
    """Every dashboard by uid, as JSON-ready dicts."""
    names = alert_names()
    docs = [overview(names), redis(names), memcached(names), app(names), http_cache(names)]
    out = {d["uid"]: d for d in docs}
    assert sorted(out) == sorted(UID.values()), "dashboard uids"
    return out


def rendered(directory: Path = HERE) -> dict[Path, str]:
    """Each dashboard's file and its committed text."""
    return {directory / f"{uid}.json": render(doc) for uid, doc in sorted(build_all().items())}


def _show(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None, directory: Path = HERE) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs from a build")
    args = parser.parse_args(argv)
    files = rendered(directory)
    stale = sorted(set(directory.glob("*.json")) - set(files))
    if args.check:
        differ = [p for p, text in files.items()
                  if not p.exists() or p.read_text(encoding="utf-8") != text]
        for path in differ:
            print(f"{_show(path)} differs from a fresh build (run: python dashboards/build.py)")
        for path in stale:
            print(f"{_show(path)} is not built by dashboards/build.py (remove it, or run the build)")
        return 1 if differ or stale else 0
    for path, text in files.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {_show(path)}")
    for path in stale:
        path.unlink()
        print(f"removed {_show(path)} (not built any more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
