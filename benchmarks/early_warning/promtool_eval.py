"""Evaluate a replay's series with ``promtool test rules`` and read back when each alert fired.

One promtool unit-test file per scenario: the replay's series as ``input_series`` (promtool's
expanding notation: runs of equal or evenly spaced values are written ``a+bxN``, missing samples
``_``, staleness markers ``stale``), the rules under test plus the peer rules as ``rule_files``,
``evaluation_interval: 1m``.

promtool stores the ``ALERTS`` series its rule evaluations produce, like Prometheus does (one
sample per evaluation while an alert is pending or firing, a staleness marker when it resolves).
promql_expr_tests run after the last evaluation, so a few PromQL queries over
``ALERTS{alertstate="firing"}`` summarise the whole firing timeline per (alertname, severity): the
first and last firing evaluation, the firing minutes, the firing episodes (an evaluation firing that
was not firing a minute before), and for fills the firing minutes up to the full time. promtool's
query engine refuses a query that loads over 10,000 samples, so the queries run per chunk of at
most 3 h (and the chunks are cut at the full time) and the chunks are added up. Each query expects
nothing (``exp_samples: []``), so promtool reports every result it got as a failure -- which is how
the results are read: each query labels its results with ``q`` (label_replace) and the output lines
``got: {labels} value, ...`` are parsed. A ``sentinel`` query always answers, so an output without
it (a rules file promtool rejects) is an error, not "nothing fired"; so is any ``err:`` line.

The slow, independent cross-check (``test_file(alert_names=...)``, ``parse_timeline``): an
``alert_rule_test`` with ``exp_alerts: []`` for every alert name at every evaluation minute;
promtool prints, per mismatch, the eval time and the firing alerts it got, from which the whole
timeline is rebuilt and summarised the same way.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from early_warning.replay import STALE, Value

FIRING = 'ALERTS{alertstate="firing"}'
TOLERANCE = 1e-9  # relative: a run is written a+bxN when every value is within this of the line


# --- input series -----------------------------------------------------------------------------

def fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def with_staleness(values: list[Value]) -> list[Value]:
    """A series that disappears from a successful (or failed) scrape gets a staleness marker there,
    as Prometheus writes one; later missing samples stay missing."""
    out: list[Value] = []
    previous: Value = None
    for v in values:
        if v is None and isinstance(previous, float | int):
            out.append(STALE)
        else:
            out.append(v)
        previous = v
    return out


def encode(values: list[Value]) -> str:
    """promtool's expanding notation for one series; ``values`` are one per input interval."""
    tokens: list[str] = []
    i, n = 0, len(values)
    while i < n:
        v = values[i]
        if v is None:
            j = i
            while j < n and values[j] is None:
                j += 1
            tokens.append("_" if j - i == 1 else f"_x{j - i}")
            i = j
            continue
        if v == STALE:
            tokens.append("stale")
            i += 1
            continue
        assert isinstance(v, float | int)
        if math.isinf(v):
            j = i
            while j < n and values[j] == v:
                j += 1
            tokens.append(fmt(v) if j - i == 1 else f"{fmt(v)}+0x{j - i - 1}")
            i = j
            continue
        # A run a+bxN: promtool adds b N times (float64, as here), so a run is taken only as long as
        # that sum reproduces every value exactly: promtool sees the replay's values bit for bit.
        j = i + 1
        step = 0.0
        if j < n and isinstance(values[j], float | int) and math.isfinite(values[j]):  # type: ignore[arg-type]
            step = float(values[j]) - float(v)  # type: ignore[arg-type]
            x = float(v)
            while j < n:
                w = values[j]
                x += step
                if not isinstance(w, float | int) or x != w:
                    break
                j += 1
        count = j - i
        if count == 1:
            tokens.append(fmt(v))
        elif step == 0:
            tokens.append(f"{fmt(v)}x{count - 1}")
        else:
            tokens.append(f"{fmt(v)}{'+' if step > 0 else '-'}{fmt(abs(step))}x{count - 1}")
        i = j
    return " ".join(tokens)


def duration(seconds: float) -> str:
    return f"{int(round(seconds))}s"


# --- the test file --------------------------------------------------------------------------

CHUNK = 3 * 3600  # promtool's query engine loads at most 10,000 samples per query (MaxSamples)


def chunks(end: float, full_at: float | None) -> list[tuple[float, float]]:
    """(start, end] spans of whole minutes covering evaluations 0 .. end, cut at the full time."""
    cuts = {float(b) for b in range(CHUNK, int(end), CHUNK)} | {float(end)}
    if full_at is not None and math.floor(full_at / 60) * 60 < end:
        cuts.add(math.floor(full_at / 60) * 60.0)
    out, previous = [], -60.0
    for b in sorted(cuts):
        out.append((previous, b))
        previous = b
    return out


def summary_queries(end: float, full_at: float | None, ignore: frozenset[str] = frozenset()) -> list[dict]:
    """The promql_expr_tests that read the firing timeline back (see the module docstring), one set
    per chunk of at most CHUNK seconds: over longer spans promtool's engine refuses the subqueries."""
    firing = FIRING if not ignore else \
        f'ALERTS{{alertstate="firing", alertname!~"{"|".join(sorted(ignore))}"}}'
    out = [{"expr": 'label_replace(vector(1), "q", "sentinel", "", "")', "eval_time": duration(end),
            "exp_samples": []}]
    for a, b in chunks(end, full_at):
        r = duration(b - a - 1)  # (a, b]: the evaluations after a, up to and including b

        def q(name: str, expr: str, at: float = b) -> dict:
            return {"expr": f'label_replace({expr}, "q", "{name}", "", "")', "eval_time": duration(at),
                    "exp_samples": []}

        out += [
            q("minutes", f"sum by (alertname, severity) (count_over_time({firing}[{r}]))"),
            q("first", f"min by (alertname, severity) (min_over_time(timestamp({firing})[{r}:1m]))"),
            q("last", f"max by (alertname, severity) (max_over_time(timestamp({firing})[{r}:1m]))"),
            q("episodes", f"sum by (alertname, severity) "
                          f"(count_over_time(({firing} unless {firing} offset 1m)[{r}:1m]))"),
        ]
    return out


def test_file(name: str, series: dict[str, list[Value]], interval: float, end: float, rule_files: list[Path],
              full_at: float | None, alert_names: list[str] | None = None,
              ignore: frozenset[str] = frozenset()) -> str:
    """A promtool unit-test file. ``alert_names``: also the per-minute alert_rule_tests (the cross-check)."""
    group: dict = {
        "name": name,
        "interval": duration(interval),
        "input_series": [{"series": key, "values": encode(with_staleness(values))} for key, values in series.items()],
        "promql_expr_test": summary_queries(end, full_at, ignore),
    }
    if alert_names:
        group["alert_rule_test"] = [{"eval_time": f"{m}m", "alertname": a, "exp_alerts": []}
                                    for m in range(int(end // 60) + 1) for a in alert_names]
    doc = {"rule_files": [str(p) for p in rule_files], "evaluation_interval": "1m", "tests": [group]}
    return yaml.safe_dump(doc, sort_keys=False, width=1 << 30)


# --- running and reading back ---------------------------------------------------------------

@dataclass
class AlertSummary:
    first: float | None = None  # seconds since the exporter's start
    last: float | None = None
    minutes: int = 0  # firing evaluations (1 m apart)
    episodes: int = 0
    minutes_before_full: int | None = None


@dataclass
class Evaluation:
    alerts: dict[tuple[str, str], AlertSummary] = field(default_factory=dict)
    timeline: dict[tuple[str, str], list[int]] | None = None  # cross-check: firing minutes per alert
    seconds: float = 0.0


SAMPLE_RE = re.compile(r"\{([^{}]*)\} (\S+?)(?:,|$)")
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
ALERT_HEADER_RE = re.compile(r"alertname: (\S+), time: (\S+),")
EXPR_HEADER_RE = re.compile(r'expr: ".*", time: (\S+),$')
ERROR_RE = re.compile(r"^(expr: .*|rule: .*), err: ")
DURATION_RE = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str) -> float:
    parts = DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * UNITS[u] for n, u in parts)


def labels_of(text: str) -> dict[str, str]:
    return {k: v for k, v in LABEL_RE.findall(text)}


def parse_summary(output: str, full_at: float | None = None) -> dict[tuple[str, str], AlertSummary]:
    """The per-chunk results added up: first = earliest, last = latest, minutes and episodes summed;
    minutes_before_full: the minutes of the chunks that end at or before the full time."""
    alerts: dict[tuple[str, str], AlertSummary] = {}
    sentinel = False
    limit = math.floor(full_at / 60) * 60 if full_at is not None else None
    at = 0.0
    for line in output.splitlines():
        line = line.strip()
        if ERROR_RE.match(line):
            raise RuntimeError(f"promtool could not evaluate a query or rule: {line[:2000]}")
        m = EXPR_HEADER_RE.match(line)
        if m:
            at = parse_duration(m.group(1))
            continue
        if not line.startswith("got: {"):
            continue
        for labels_text, value_text in SAMPLE_RE.findall(line[len("got: "):]):
            labels = labels_of(labels_text)
            q = labels.get("q")
            if q == "sentinel":
                sentinel = True
                continue
            if q is None:
                continue
            key = (labels.get("alertname", ""), labels.get("severity", ""))
            s = alerts.setdefault(key, AlertSummary())
            value = float(value_text)
            if q == "first":
                s.first = value if s.first is None else min(s.first, value)
            elif q == "last":
                s.last = value if s.last is None else max(s.last, value)
            elif q == "minutes":
                s.minutes += int(value)
                if limit is not None and at <= limit:
                    s.minutes_before_full = (s.minutes_before_full or 0) + int(value)
            elif q == "episodes":
                s.episodes += int(value)
    if limit is not None:
        for s in alerts.values():
            s.minutes_before_full = s.minutes_before_full or 0
    if not sentinel:
        raise RuntimeError("promtool output without the sentinel query's result:\n" + output[-4000:])
    return alerts


def parse_timeline(output: str) -> dict[tuple[str, str], list[int]]:
    """Firing minutes per (alertname, severity) from the per-minute alert_rule_test failures."""
    timeline: dict[tuple[str, str], set[int]] = {}
    current: tuple[str, int] | None = None
    for line in output.splitlines():
        line = line.strip()
        m = ALERT_HEADER_RE.match(line)
        if m:
            current = (m.group(1), int(parse_duration(m.group(2)) // 60))
            continue
        if line.startswith("expr: "):
            current = None
            continue
        if line.startswith("Labels:{") and current is not None:
            labels = labels_of(line[len("Labels:"):])
            key = (labels.get("alertname", current[0]), labels.get("severity", ""))
            timeline.setdefault(key, set()).add(current[1])
    return {k: sorted(v) for k, v in timeline.items()}


def summarise_timeline(timeline: dict[tuple[str, str], list[int]], full_at: float | None) -> dict[tuple[str, str],
                                                                                                   AlertSummary]:
    out = {}
    for key, minutes in timeline.items():
        present = set(minutes)
        s = AlertSummary(first=minutes[0] * 60.0, last=minutes[-1] * 60.0, minutes=len(minutes),
                         episodes=sum(1 for m in minutes if m - 1 not in present))
        if full_at is not None:
            limit = math.floor(full_at / 60)
            s.minutes_before_full = sum(1 for m in minutes if m <= limit)
        out[key] = s
    return out


def run(path: Path, promtool: str, timeout: float = 900) -> str:
    proc = subprocess.run([promtool, "test", "rules", path.name], cwd=path.parent, capture_output=True,
                          text=True, timeout=timeout)
    return proc.stdout + proc.stderr


def alert_names(rule_files: list[Path]) -> list[str]:
    names: list[str] = []
    for path in rule_files:
        doc = yaml.safe_load(path.read_text()) or {}
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule and rule["alert"] not in names:
                    names.append(rule["alert"])
    return names


def heartbeat_names(rule_files: list[Path]) -> set[str]:
    """Alerts that always fire (a dead-man's switch, ``expr: vector(1)``): not about memory."""
    out = set()
    for path in rule_files:
        doc = yaml.safe_load(path.read_text()) or {}
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule and str(rule.get("expr", "")).replace(" ", "") == "vector(1)":
                    out.add(rule["alert"])
    return out
