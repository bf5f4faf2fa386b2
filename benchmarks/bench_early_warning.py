"""bench_early_warning: does the exporter warn before a cache is full earlier than the usual peer
rules, and stay silent where they cry wolf?

Replays a library of memory-growth scenarios (benchmarks/early_warning/scenarios.py: fills that must
warn, look-alikes that must not) at the default settings (15 s polls, 1 h forecast window) poll by
poll through the repository's ``Forecaster``, exactly as the scheduler calls it, builds the series
the exporter exports for a Redis target, and evaluates them with ``promtool test rules`` against the
shipped rules (alerts/cache-exporter.rules.yml, or ``--rules``) and three peer rules
(benchmarks/early_warning/peer.rules.yml: threshold, predict_linear, node-mixin). Figures: first
firing and lead before full per rule for fills, false-alarm minutes per rule for look-alikes, the
forecast's error at 25/50/75 % of the way to full, when the forecast first exists. Results also go
to a JSON file (``--json``; a temporary file by default), which ``--compare`` reads back.
Prints figures; asserts nothing (it checks its own promtool read-back on a tiny case first).

    .venv/bin/python benchmarks/bench_early_warning.py [--only linear-*,saw-5m] [--kind fill|lookalike]
        [--rules FILE] [--peer-rules FILE] [--jobs N] [--json FILE] [--compare OLD.json]
        [--keep DIR] [--cross-check] [--list]
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from _common import machine_line, table  # noqa: E402
from early_warning import promtool_eval as pe  # noqa: E402
from early_warning.replay import replay  # noqa: E402
from early_warning.scenarios import FILL, LOOKALIKE, TWIN, TWIN_AFTER, Scenario, library, twin  # noqa: E402

import exporter.forecast  # noqa: E402

try:
    from exporter.targets import DEFAULT_FORECAST_WINDOW, DEFAULT_INTERVAL
except ImportError:  # moved by a redesign: the documented defaults
    DEFAULT_INTERVAL, DEFAULT_FORECAST_WINDOW = 15.0, 3600.0

RULES = REPO / "alerts" / "cache-exporter.rules.yml"
PEER_RULES = HERE / "early_warning" / "peer.rules.yml"
PEERS = {"PeerThreshold": "threshold", "PeerPredictLinear": "predict_linear", "PeerNodeMixin": "node-mixin"}
FRACTIONS = (0.25, 0.50, 0.75)


# --- one scenario ----------------------------------------------------------------------------

def evaluate(name: str, cfg: dict, stop: float | None = None) -> dict:
    """Replay one scenario (or, with ``stop``, the twin of fill ``name`` stopping there), evaluate it
    with promtool, return its figures (JSON-ready)."""
    scenario = {s.name: s for s in library()}[name]
    if stop is not None:
        scenario = twin(scenario, stop)
        name = scenario.name
    started = time.monotonic()
    rep = replay(scenario, cfg["interval"], cfg["window"])
    replay_seconds = time.monotonic() - started
    coarse = cfg["coarse_after"] is not None and scenario.duration > cfg["coarse_after"]
    step = scenario.step or (60.0 if coarse else cfg["interval"])
    k = max(1, int(round(step / cfg["interval"])))
    series = {key: values[::k] for key, values in rep.series.items()}
    end = math.floor((rep.polls - 1) * cfg["interval"] / 60) * 60
    rule_files = [Path(cfg["rules"]), Path(cfg["peer_rules"])]
    names = [n for n in pe.alert_names(rule_files) if n not in set(cfg["heartbeats"])] if cfg["cross_check"] else None
    text = pe.test_file(name, series, k * cfg["interval"], end, rule_files, scenario.full_at, names,
                        frozenset(cfg["heartbeats"]))
    workdir = Path(cfg["workdir"])
    path = workdir / f"{name}.test.yml"
    path.write_text(text)
    started = time.monotonic()
    output = pe.run(path, cfg["promtool"])
    promtool_seconds = time.monotonic() - started
    alerts = pe.parse_summary(output, scenario.full_at)
    result = {
        "name": name, "kind": scenario.kind, "twin_of": [scenario.name.split("~")[0], stop] if stop else None,
        "description": scenario.description,
        "duration_s": scenario.duration, "full_at_s": scenario.full_at, "growth_start_s": scenario.growth_start,
        "evicts": scenario.evicts, "input_step_s": k * cfg["interval"], "polls": rep.polls,
        "forecast_available_s": forecast_available(rep.until_full, cfg["interval"]),
        "forecast_lost_s": forecast_lost(rep.until_full, cfg["interval"]),
        "history_restored": rep.history_restored,
        "forecast_error": forecast_errors(scenario, rep.until_full, cfg["interval"]),
        "alerts": {f"{a}/{s}": vars(v) for (a, s), v in sorted(alerts.items())},
        "timing": {"replay_s": round(replay_seconds, 2), "forecast_cpu_s": round(rep.forecast_seconds, 2),
                   "promtool_s": round(promtool_seconds, 2), "test_file_bytes": len(text)},
    }
    if cfg["cross_check"]:
        timeline = pe.parse_timeline(output)
        rebuilt = pe.summarise_timeline(timeline, scenario.full_at)
        agree = {k: vars(v) for k, v in rebuilt.items()} == {k: vars(v) for k, v in alerts.items()}
        result["cross_check"] = {"agree": agree,
                                 "timeline": {f"{a}/{s}": m for (a, s), m in sorted(timeline.items())}}
    if not cfg["keep"]:
        path.unlink()
    return result


def forecast_available(until_full: list[float | None], interval: float) -> float | None:
    return next((i * interval for i, v in enumerate(until_full) if v is not None), None)


def forecast_lost(until_full: list[float | None], interval: float) -> list[list[float]]:
    """[from, to) spans without a forecast after it first existed (an exporter restart)."""
    spans: list[list[float]] = []
    seen = False
    for i, v in enumerate(until_full):
        if v is not None:
            seen = True
        elif seen:
            if spans and spans[-1][1] == i * interval:
                spans[-1][1] = (i + 1) * interval
            else:
                spans.append([i * interval, (i + 1) * interval])
    return spans


def forecast_errors(s: Scenario, until_full: list[float | None], interval: float) -> dict[str, dict] | None:
    """The forecast at 25/50/75 % of the way from ``growth_start`` to full, against the true time left."""
    if s.kind != FILL or s.full_at is None:
        return None
    out = {}
    for f in FRACTIONS:
        i = int((s.growth_start + f * (s.full_at - s.growth_start)) // interval)
        t = i * interval
        predicted = until_full[i] if i < len(until_full) else None
        true_left = s.full_at - t
        entry: dict[str, object] = {"t_s": t, "true_left_s": true_left, "predicted_s": None, "error_s": None}
        if predicted is not None:
            entry["predicted_s"] = "inf" if math.isinf(predicted) else predicted
            entry["error_s"] = "inf" if math.isinf(predicted) else predicted - true_left
        out[f"{round(f * 100)}%"] = entry
    return out


# --- columns: ours per severity, each peer rule --------------------------------------------

def columns(results: list[dict], heartbeats: set[str]) -> list[tuple[str, list[str]]]:
    """(column title, alert keys "alertname/severity") -- ours grouped by severity, peers one by one."""
    ours_sev: set[str] = set()
    peers: set[str] = set()
    for r in results:
        for key in r["alerts"]:
            alert, sev = key.split("/", 1)
            if alert in heartbeats:
                continue
            if alert in PEERS:
                peers.add(key)
            else:
                ours_sev.add(sev)
    order = {"critical": 1, "warning": 0, "info": 2}
    cols = [(f"ours {sev[:4]}", [f"ours/{sev}"]) for sev in sorted(ours_sev | {"warning", "critical"},
                                                                    key=lambda s: order.get(s, 9))]
    for alert, short in PEERS.items():
        sevs = sorted({k.split("/", 1)[1] for k in peers if k.startswith(alert + "/")} or {"warning"},
                      key=lambda s: order.get(s, 9))
        if alert == "PeerNodeMixin":
            sevs = sorted(set(sevs) | {"warning", "critical"}, key=lambda s: order.get(s, 9))
        for sev in sevs:
            cols.append((short if len(sevs) == 1 else f"{short} {sev[:4]}", [f"{alert}/{sev}"]))
    return cols


def merged(r: dict, keys: list[str], heartbeats: set[str]) -> dict:
    """The summary of a column: one peer alert, or every alert of ours with that severity."""
    picked = []
    for key, v in r["alerts"].items():
        alert, sev = key.split("/", 1)
        if alert in heartbeats:
            continue
        for want in keys:
            if want.startswith("ours/"):
                if alert not in PEERS and sev == want[5:]:
                    picked.append(v)
            elif key == want:
                picked.append(v)
    firsts = [v["first"] for v in picked if v["first"] is not None]
    return {"first": min(firsts) if firsts else None, "minutes": sum(v["minutes"] for v in picked),
            "episodes": sum(v["episodes"] for v in picked)}


def dur(seconds: float | None) -> str:
    """1h05m, 25d3h, -10m, 45s."""
    if seconds is None:
        return "-"
    s = int(round(abs(seconds)))
    sign = "-" if seconds < 0 and s else ""
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{sign}{d}d{h:02d}h" if h else f"{sign}{d}d"
    if h:
        return f"{sign}{h}h{m:02d}m"
    if m:
        return f"{sign}{m}m" if not s else f"{sign}{m}m{s:02d}s"
    return f"{sign}{s}s"


def never(seconds: float | None) -> str:
    return "never" if seconds is None else dur(seconds)


def error_cell(e: dict | None) -> str:
    if e is None or e["predicted_s"] is None:
        return "n/a"
    if e["error_s"] == "inf":
        return "inf"
    return ("+" if e["error_s"] >= 0.5 else "") + dur(e["error_s"])


# --- report ---------------------------------------------------------------------------------

def report(results: list[dict], heartbeats: set[str]) -> dict:
    cols = columns(results, heartbeats)
    fills = [r for r in results if r["kind"] == FILL]
    looks = [r for r in results if r["kind"] == LOOKALIKE]
    summary: dict[str, object] = {}
    if fills:
        rows = []
        ours_earliest = ties = 0
        before_full = {title: 0 for title, _ in cols}
        for r in fills:
            full = r["full_at_s"]
            firsts = {title: merged(r, keys, heartbeats)["first"] for title, keys in cols}
            cells = []
            for title, keys in cols:
                first = firsts[title]
                if first is None:
                    cells.append("never")
                    continue
                episodes = merged(r, keys, heartbeats)["episodes"]
                cells.append(f"{dur(first)} ({dur(full - first)})" + (f" {episodes}x" if episodes > 1 else ""))
                before_full[title] += first < full
            fired = {t: f for t, f in firsts.items() if f is not None}
            earliest = min(fired.values()) if fired else None
            winners = [t for t, f in fired.items() if f == earliest]
            ours_first = min((f for t, f in fired.items() if t.startswith("ours")), default=None)
            peers_first = min((f for t, f in fired.items() if not t.startswith("ours")), default=None)
            if ours_first is not None and (peers_first is None or ours_first < peers_first):
                ours_earliest += 1
            elif ours_first is not None and ours_first == peers_first:
                ties += 1
            rows.append([r["name"], dur(full), *cells, ", ".join(winners) or "none"])
        print()
        print(table(["fill", "full at", *[t for t, _ in cols], "earliest"], rows,
                    title="FILLS (must warn): first firing since the exporter's start (lead before full; "
                          "negative = after full; Nx = fired in N separate episodes)"))
        rows = []
        for r in fills:
            e = r["forecast_error"] or {}
            lost = ", ".join(f"{dur(a)}-{dur(b)}" for a, b in r["forecast_lost_s"]) or "-"
            if r["history_restored"] is not None:
                lost += " (history restored)" if r["history_restored"] else " (history NOT restorable)"
            rows.append([r["name"], dur(r["full_at_s"]), dur(r["growth_start_s"]), dur(r["forecast_available_s"]), lost,
                         *[f"{error_cell(e.get(k))} / {dur(e[k]['true_left_s'])}" if k in e else "n/a"
                           for k in ("25%", "50%", "75%")], dur(r["input_step_s"])])
        print()
        print(table(["fill", "full at", "growth from", "forecast from", "forecast lost", "error at 25 % / left",
                     "error at 50 % / left", "error at 75 % / left", "input step"], rows,
                    title="FILLS: the forecast -- cache_memory_seconds_until_full minus the true time left, at "
                          "25/50/75 % of the time from growth start to full (n/a = absent, inf = +Inf)"))
        summary["fills"] = len(fills)
        summary["ours_earliest"] = ours_earliest
        summary["ours_tied_earliest"] = ties
        summary["fired_before_full"] = before_full
    if looks:
        totals, noisy = silent_table(looks, cols, heartbeats, "LOOK-ALIKES (must stay silent): false-alarm minutes "
                                     "(firing episodes); pending does not count")
        summary["lookalikes"] = len(looks)
        summary["false_alarm_minutes"] = totals
        summary["scenarios_with_false_alarms"] = noisy
    twins = [r for r in results if r["kind"] == TWIN]
    if twins:
        totals, noisy = silent_table(twins, cols, heartbeats, "TWINS (must stay silent): each follows a fill poll "
                                     "for poll until the first firing of the earliest peer that beat ours on it, then "
                                     "stays flat; false-alarm minutes (firing episodes)")
        summary["twins"] = len(twins)
        summary["twin_false_alarm_minutes"] = totals
        summary["twins_with_false_alarms"] = noisy
    print()
    if fills:
        bf = summary["fired_before_full"]
        print(f"SUMMARY fills: ours earliest in {summary['ours_earliest']} of {len(fills)} "
              f"(tied in {summary['ours_tied_earliest']}); fired before full: "
              + ", ".join(f"{t} {bf[t]}/{len(fills)}" for t, _ in cols))  # type: ignore[index]
    if looks:
        fa = summary["false_alarm_minutes"]
        nz = summary["scenarios_with_false_alarms"]
        print(f"SUMMARY look-alikes ({len(looks)}): false-alarm minutes: "
              + ", ".join(f"{t} {fa[t]} (in {nz[t]})" for t, _ in cols))  # type: ignore[index]
    if twins:
        fa = summary["twin_false_alarm_minutes"]
        nz = summary["twins_with_false_alarms"]
        print(f"SUMMARY twins ({len(twins)}): false-alarm minutes: "
              + ", ".join(f"{t} {fa[t]} (in {nz[t]})" for t, _ in cols)  # type: ignore[index]
              + ". A rule that fires on a fill by the time its twin stops fires on the twin too: to be first "
                "there is to cry wolf here.")
    others = sorted({k for r in results for k in r["alerts"]
                     if k.split("/", 1)[0] not in heartbeats and k.split("/", 1)[0] not in PEERS})
    print("ours = every alert of the rules file but heartbeats, by severity; alerts of ours that fired: "
          + (", ".join(others) or "none"))
    return summary


def silent_table(results: list[dict], cols: list[tuple[str, list[str]]], heartbeats: set[str],
                 title: str) -> tuple[dict[str, int], dict[str, int]]:
    """Print the false-alarm minutes of scenarios that must stay silent; return (minutes, scenarios) per column."""
    rows = []
    totals = {t: 0 for t, _ in cols}
    noisy = {t: 0 for t, _ in cols}
    for r in results:
        cells = []
        for t, keys in cols:
            m = merged(r, keys, heartbeats)
            totals[t] += m["minutes"]
            noisy[t] += m["minutes"] > 0
            cells.append("0" if not m["minutes"] else f"{m['minutes']} ({m['episodes']}x)")
        rows.append([r["name"], dur(r["duration_s"]), dur(r["forecast_available_s"]), *cells])
    rows.append(["TOTAL", "", "", *[str(totals[t]) for t, _ in cols]])
    print()
    print(table(["scenario", "length", "forecast from", *[t for t, _ in cols]], rows, title=title))
    return totals, noisy


def twin_stops(fills: list[dict], heartbeats: set[str]) -> dict[str, float]:
    """fill name -> when its twin stops: the first firing of the earliest peer, on every fill where a
    peer fired before full and before ours."""
    cols = columns(fills, heartbeats)
    out = {}
    for r in fills:
        firsts = {t: merged(r, keys, heartbeats)["first"] for t, keys in cols}
        ours = min((f for t, f in firsts.items() if t.startswith("ours") and f is not None), default=math.inf)
        peer = min((f for t, f in firsts.items() if not t.startswith("ours") and f is not None), default=math.inf)
        if peer < min(ours, r["full_at_s"]):
            out[r["name"]] = peer
    return out


def compare(old_path: Path, results: list[dict], heartbeats: set[str]) -> None:
    old = {r["name"]: r for r in json.loads(old_path.read_text())["scenarios"]}
    both = [r for r in results if r["name"] in old]
    cols = columns(both + [old[r["name"]] for r in both], heartbeats)
    rows = []
    for r in both:
        o = old[r["name"]]
        cells = []
        for _, keys in cols:
            a, b = merged(o, keys, heartbeats), merged(r, keys, heartbeats)
            if r["kind"] == FILL:
                cells.append("=" if a["first"] == b["first"] else f"{never(a['first'])} -> {never(b['first'])}")
            else:
                cells.append("=" if a["minutes"] == b["minutes"] else f"{a['minutes']} -> {b['minutes']}")
        rows.append([r["name"], r["kind"], *cells])
    print()
    print(table(["scenario", "kind", *[t for t, _ in cols]], rows,
                title=f"CHANGES against {old_path} ({json.loads(old_path.read_text()).get('git', '?')}; fills: first "
                      "firing; look-alikes: false-alarm minutes)"))


# --- self-test of the read-back -------------------------------------------------------------

SELF_TEST_RULES = """groups:
- name: self-test
  rules:
  - alert: SelfTest
    expr: m > 5
    for: 2m
    labels: {severity: warning}
"""


def self_test(promtool: str, workdir: Path) -> bool:
    """A tiny case whose answer is known, read back both ways: firing at 6-9 m and 21-25 m
    (m > 5 from 4 m and 19 m, for 2 m; a staleness marker at 15 m ends the pending 14 m); "full" at
    8 m cuts the first episode across two query chunks."""
    rules = workdir / "self-test.rules.yml"
    rules.write_text(SELF_TEST_RULES)
    values: list = [0.0] * 4 + [9.0] * 6 + [0.0] * 4 + [9.0] + [None] * 4 + [9.0] * 7 + [0.0] * 5
    path = workdir / "self-test.test.yml"
    path.write_text(pe.test_file("self-test", {'m{target="a"}': values}, 60, 30 * 60, [rules], 8 * 60,
                                 ["SelfTest"]))
    output = pe.run(path, promtool)
    want = {"first": 360.0, "last": 1500.0, "minutes": 9, "episodes": 2, "minutes_before_full": 3}
    got = pe.parse_summary(output, 8 * 60)
    timeline = pe.parse_timeline(output)
    ok = ({k: vars(v) for k, v in got.items()} == {("SelfTest", "warning"): want}
          and timeline == {("SelfTest", "warning"): [6, 7, 8, 9, 21, 22, 23, 24, 25]}
          and {k: vars(v) for k, v in pe.summarise_timeline(timeline, 8 * 60).items()}
          == {("SelfTest", "warning"): want})
    if not ok:
        print(f"self-test FAILED: got {got}, timeline {timeline}\n{output[-3000:]}")
    return ok and round_trip(promtool, workdir)


def round_trip(promtool: str, workdir: Path) -> bool:
    """The encoded input series reach promtool bit for bit: awkward float steps (a+bxN runs), whole
    bytes, +Inf runs, a gap, read back at every minute (promtool loads samples only up to its last
    evaluation step, so reads are minute-aligned, as the benchmark's are)."""
    n = 8 * 60 * 4  # 8 h of 15 s samples
    series: dict[str, list] = {
        "ratio": [0.3 + i * (0.7 / 1919) for i in range(n)],
        "bytes": [float(round((0.4 + i * 0.6 / n) * 2**30)) for i in range(n)],
        "countdown": [math.inf] * 100 + [36000.0 - 15 * i for i in range(100, n - 300)] + [None] * 60
                     + [1.0 / 3 + i * 1e-7 for i in range(240)],
    }
    minutes = range(0, n // 4)
    tests = [{"expr": name, "eval_time": f"{m}m", "exp_samples": []} for name in series for m in minutes]
    doc = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "name": "round-trip", "interval": "15s",
        "input_series": [{"series": k, "values": pe.encode(pe.with_staleness(v))} for k, v in series.items()],
        "promql_expr_test": tests}]}
    path = workdir / "round-trip.test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1 << 30))
    output = pe.run(path, promtool)
    got: dict[tuple[str, int], float] = {}
    current = None
    for line in output.splitlines():
        line = line.strip()
        m = re.match(r'expr: "(\w+)", time: (\S+),$', line)
        if m:
            current = (m.group(1), int(pe.parse_duration(m.group(2)) // 60))
        elif line.startswith("got: {") and current is not None:
            got[current] = float(line.rsplit(" ", 1)[1])
    want = {(name, m): v[m * 4] for name, v in series.items() for m in minutes if v[m * 4] is not None}
    bad = [(k, want.get(k), got.get(k)) for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
    if bad:
        print(f"self-test FAILED: {len(bad)} input values did not reach promtool unchanged, e.g. {bad[:3]}")
    return not bad


# --- main -----------------------------------------------------------------------------------

def shown(path: Path) -> str:
    """A path relative to the repository when it is inside it (so results compare across checkouts)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "exporter", "alerts"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return head + (" (exporter/ or alerts/ modified)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_phase(pool: ProcessPoolExecutor, jobs: list[tuple[str, float | None, float]], cfg: dict,
              results: dict[str, dict], failed: list[str]) -> None:
    """Evaluate (scenario name, twin stop or None, duration) in the pool, longest first; print progress."""
    futures = {pool.submit(evaluate, name, cfg, stop): name for name, stop, _ in jobs}
    total = len(results) + len(jobs)
    for future in as_completed(futures):
        try:
            r = future.result()
        except Exception as exc:  # a rules file promtool rejects, a query it cannot run
            failed.append(futures[future])
            print(f"  {futures[future]}: FAILED: {exc}", flush=True)
            continue
        results[r["name"]] = r
        t = r["timing"]
        check = ""
        if "cross_check" in r:
            check = "  cross-check " + ("agrees" if r["cross_check"]["agree"] else "DISAGREES")
        print(f"  [{len(results):2d}/{total}] {r['name']:22} {dur(r['duration_s']):>7} replay "
              f"{t['replay_s']:5.1f} s, promtool {t['promtool_s']:5.1f} s "
              f"({t['test_file_bytes'] / 1e6:.1f} MB, input every {r['input_step_s']:g} s){check}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated scenario names or glob patterns")
    ap.add_argument("--kind", choices=(FILL, LOOKALIKE), help="only fills or only look-alikes")
    ap.add_argument("--rules", type=Path, default=RULES, help="the rules file under test (default: the shipped one)")
    ap.add_argument("--peer-rules", type=Path, default=PEER_RULES)
    ap.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help="poll interval, s")
    ap.add_argument("--window", type=float, default=DEFAULT_FORECAST_WINDOW, help="forecast window, s")
    ap.add_argument("--coarse-after", type=float, metavar="SECONDS",
                    help="scenarios longer than this go to promtool as 1 min samples (default: every poll)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, help="where to write the results (default: a temporary file)")
    ap.add_argument("--compare", type=Path, help="a previous --json file: print what changed")
    ap.add_argument("--keep", type=Path, help="keep the generated promtool test files in this directory")
    ap.add_argument("--cross-check", action="store_true",
                    help="also rebuild every timeline from per-minute alert_rule_tests and compare (slow)")
    ap.add_argument("--no-twins", action="store_true",
                    help="skip the twins (the look-alikes built from the fills where a peer fired first)")
    ap.add_argument("--promtool", default=shutil.which("promtool"))
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args()

    scenarios = library()
    if args.kind:
        scenarios = [s for s in scenarios if s.kind == args.kind]
    if args.only:
        patterns = [p.strip() for p in args.only.split(",") if p.strip()]
        unknown = [p for p in patterns if not any(fnmatch.fnmatch(s.name, p) for s in scenarios)]
        if unknown:
            print(f"no scenario matches {', '.join(unknown)} (see --list)", file=sys.stderr)
            return 2
        scenarios = [s for s in scenarios if any(fnmatch.fnmatch(s.name, p) for p in patterns)]
    if args.list:
        for s in scenarios:
            full = f", full at {dur(s.full_at)}" if s.full_at is not None else ""
            print(f"{s.name:20} {s.kind:9} {dur(s.duration):>7}{full}: {s.description}")
        return 0
    if not args.promtool:
        print("promtool not found on PATH (Debian: apt-get install prometheus)", file=sys.stderr)
        return 2

    rule_files = [args.rules.resolve(), args.peer_rules.resolve()]
    heartbeats = pe.heartbeat_names(rule_files)
    version = subprocess.run([args.promtool, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    print("bench_early_warning: memory scenarios replayed through exporter.forecast.Forecaster, "
          "alerts evaluated by promtool")
    print(machine_line())
    print(f"rules: {shown(args.rules)} (sha256 {sha(args.rules)}), peers: {shown(args.peer_rules)}; forecaster: "
          f"{Path(exporter.forecast.__file__).relative_to(REPO)} (sha256 {sha(Path(exporter.forecast.__file__))}); "
          f"git {git_state()}")
    print(f"polls every {args.interval:g} s, forecast window {args.window:g} s, evaluation every 1 m; {version}; "
          f"{len(scenarios)} scenarios, {args.jobs} jobs; heartbeats ignored: {', '.join(sorted(heartbeats)) or '-'}")

    tmp = tempfile.TemporaryDirectory(prefix="bench-early-warning-")
    workdir = args.keep.resolve() if args.keep else Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    if not self_test(args.promtool, Path(tmp.name)):
        return 2
    print("self-test OK: a known 2-episode timeline read back both ways (ALERTS queries, per-minute "
          "alert_rule_tests); input series reach promtool bit for bit", flush=True)
    cfg = {"interval": args.interval, "window": args.window, "coarse_after": args.coarse_after,
           "rules": str(rule_files[0]), "peer_rules": str(rule_files[1]), "promtool": args.promtool,
           "workdir": str(workdir), "keep": bool(args.keep), "cross_check": args.cross_check,
           "heartbeats": sorted(heartbeats)}
    started = time.monotonic()
    results: dict[str, dict] = {}
    order = sorted(scenarios, key=lambda s: -s.duration)  # the longest first: they bound the run time
    failed: list[str] = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        run_phase(pool, [(s.name, None, s.duration) for s in order], cfg, results, failed)
        ordered = [results[s.name] for s in scenarios if s.name in results]
        stops = {} if args.no_twins or failed else twin_stops([r for r in ordered if r["kind"] == FILL], heartbeats)
        if stops:
            print(f"twins: {len(stops)} fills where a peer fired first; each twin stops growing there", flush=True)
            twins = sorted(((name, stop, stop + TWIN_AFTER) for name, stop in stops.items()), key=lambda x: -x[2])
            before = set(results)
            run_phase(pool, twins, cfg, results, failed)
            ordered += [results[k] for k in results if k not in before]
    elapsed = time.monotonic() - started
    if failed:
        print(f"{len(failed)} scenario(s) could not be evaluated: {', '.join(failed)}", file=sys.stderr)
        return 1
    summary = report(ordered, heartbeats)
    print(f"wall time {elapsed:.0f} s for {len(scenarios)} scenarios ({args.jobs} jobs)")
    if args.cross_check:
        bad = [r["name"] for r in ordered if not r["cross_check"]["agree"]]
        print(f"cross-check (per-minute alert_rule_tests): {len(ordered) - len(bad)} of {len(ordered)} agree"
              + (f"; DISAGREE: {', '.join(bad)}" if bad else ""))
    doc = {"benchmark": "bench_early_warning", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_state(),
           "rules": shown(args.rules), "rules_sha256": sha(args.rules), "peer_rules": shown(args.peer_rules),
           "forecast_sha256": sha(Path(exporter.forecast.__file__)), "interval_s": args.interval,
           "window_s": args.window, "promtool": version, "wall_s": round(elapsed, 1), "summary": summary,
           "scenarios": ordered}
    out = args.json or Path(tempfile.gettempdir()) / f"bench_early_warning-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(doc, indent=1))
    print(f"results: {out}")
    if args.compare:
        compare(args.compare, ordered, heartbeats)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
