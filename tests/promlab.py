"""Helpers for tests that run a real Prometheus against the exporter and check the PromQL of our
dashboards and alert rules: a Prometheus process; an origin for nginx that answers per path (down
for good, failing then recovered, behind an inner cache tier); a Python app with an in-process LRU
cache and Micrometer's metric names; metric-name extraction from PromQL; and the panel queries of
Grafana dashboard JSON with the template variables set the way Grafana sets them.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import yaml
from conftest import REPO, free_port, load_script, stop_process, wait_until
from nginx import Upstream

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
# DASHBOARDS_DIR points the tests at other dashboards (e.g. a draft) than the committed ones.
if str(REPO) not in sys.path:  # dashboards/ is not an installed package
    sys.path.insert(0, str(REPO))
from dashboards.queries import iter_panels  # noqa: E402  (the dashboards' own panel walk)

DASHBOARDS = Path(os.environ.get("DASHBOARDS_DIR") or REPO / "dashboards")
RULES_FILE = REPO / "alerts" / "cache-exporter.rules.yml"


def load_build_rules() -> ModuleType:
    """alerts/build_rules.py as a module (it is a script, not part of the package)."""
    return load_script(REPO / "alerts" / "build_rules.py")


# --- a real Prometheus ------------------------------------------------------------------

class Prometheus:
    """A Prometheus server scraping ``targets`` every ``scrape_interval``, with ``rule_files``."""

    def __init__(self, workdir: Path, targets: list[str], rule_files: Iterable[Path] = (),
                 scrape_interval: str = "1s", job: str = "cache-exporter", scrape: dict | None = None,
                 evaluation_interval: str | None = None) -> None:
        assert PROMETHEUS is not None
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.job = job
        intervals = {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval or scrape_interval}
        config = {
            "global": intervals,
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}], **(scrape or {})}],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        if PROMTOOL:
            check = subprocess.run([PROMTOOL, "check", "config", str(self.config)], capture_output=True, timeout=60)
            assert check.returncode == 0, (check.stdout + check.stderr).decode(errors="replace")
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"], stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return resp.status == 200
        wait_until(ready, timeout=timeout, interval=0.2, message="prometheus ready")

    def api(self, path: str, **params: str | list[str]) -> dict:
        """GET /api/v1/<path>; the JSON answer, also for 4xx (status "error", errorType, error)."""
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return json.loads(body)
            except ValueError:
                return {"status": "error", "errorType": f"http {err.code}", "error": body.decode(errors="replace")}

    def query(self, expr: str) -> dict:
        """An instant query: the whole answer (``status``, ``data`` or ``error``)."""
        return self.api("query", query=expr)

    def result(self, expr: str) -> list[dict]:
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        data = answer["data"]
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def names(self) -> set[str]:
        """Every metric name Prometheus holds (scraped, recorded, ALERTS, up, scrape_*)."""
        return set(self.api("label/__name__/values")["data"])

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        if match is None:
            return list(self.api(f"label/{urllib.parse.quote(label)}/values")["data"])
        series = self.api("series", **{"match[]": match, "start": str(time.time() - 3600)})["data"]
        return sorted({s[label] for s in series if label in s})

    def stop(self) -> None:
        stop_process(self.proc)


# --- an origin whose answers the test switches per path ----------------------------------

class PathUpstream(Upstream):
    """An origin server for nginx. Paths starting with a prefix in ``always_failing`` answer 503
    forever (an outage); paths in ``inner_cache`` answer 200 as a cache tier behind nginx would
    (``Cache-Control: max-age``, ``Age``, ``X-Cache: HIT``: a two-tier setup); the others answer 503
    while ``failing`` is set, else 200."""

    def __init__(self, always_failing: tuple[str, ...] = (), inner_cache: tuple[str, ...] = (),
                 failing: bool = True) -> None:
        self.always_failing = always_failing
        self.inner_cache = inner_cache
        self.started = time.monotonic()
        super().__init__()
        self.failing = failing

    @property
    def failing(self) -> bool:
        return not self.healthy

    @failing.setter
    def failing(self, value: bool) -> None:
        self.healthy = not value

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if path.startswith(self.always_failing):
            return 503, {}, b"backend unavailable\n"
        if path.startswith(self.inner_cache):
            return 200, {"Cache-Control": "public, max-age=300", "X-Cache": "HIT from inner",
                         "Age": str(5 + int(time.monotonic() - self.started))}, b"catalog\n"
        return super().answer(path)


class LruApp:
    """A Python app with a bounded in-process LRU cache, instrumented with Micrometer's cache
    metric names (``cache_gets_total{cache,result}``, ``cache_evictions_total``, ``cache_size``, as a
    Spring Boot service exports them) plus prometheus_client's process metrics, served over HTTP
    from a thread of this process. ``get`` is the app's cached lookup."""

    def __init__(self, capacity: int = 100, cache: str = "products") -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, start_http_server

        self.capacity, self.cache = capacity, cache
        self.entries: OrderedDict[str, bytes] = OrderedDict()
        self.lock = threading.Lock()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.gets = Counter("cache_gets", "Cache lookups.", ["cache", "result"], registry=self.registry)
        self.evictions = Counter("cache_evictions", "Cache evictions.", ["cache"], registry=self.registry)
        self.size = Gauge("cache_size", "Cache entries.", ["cache"], registry=self.registry)
        self.port = free_port()
        self.server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def get(self, key: str) -> bytes:
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                self.gets.labels(self.cache, "hit").inc()
                return self.entries[key]
            self.gets.labels(self.cache, "miss").inc()
            value = self.entries[key] = key.encode() * 10
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)
                self.evictions.labels(self.cache).inc()
            self.size.labels(self.cache).set(len(self.entries))
            return value

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- PromQL: metric names used by an expression --------------------------------------------

AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                          "bottomk", "topk", "quantile", "limitk", "limit_ratio"})
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
OPERATOR_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2"})
NUMBER_WORDS = frozenset({"inf", "nan"})

_TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<var>\$\{[^}]*\}|\$\w+)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[{}()\[\],=<>+\-*/%^@:])
""", re.VERBOSE)


class PromQLSyntaxError(ValueError):
    pass


def tokenize(expr: str) -> list[tuple[str, str]]:
    """(kind, text) tokens of a PromQL expression, without whitespace and comments. Kinds: string,
    duration, number, var (a Grafana ``$variable`` not yet substituted), ident, op (operators and
    every bracket). The one PromQL tokenizer of the tests (test_dashboards lints with it too)."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise PromQLSyntaxError(f"unexpected {expr[pos:pos + 20]!r} at {pos} in {expr!r}")
        kind = m.lastgroup or ""
        if kind != "space":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def _skip_group(tokens: list[tuple[str, str]], i: int, open_: str, close: str) -> int:
    """Index after the group that opens at tokens[i] (which is ``open_``)."""
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j] == ("op", open_):
            depth += 1
        elif tokens[j] == ("op", close):
            depth -= 1
            if depth == 0:
                return j + 1
    raise PromQLSyntaxError(f"unclosed {open_!r}")


def _unquote(text: str) -> str:
    return text[1:-1] if text.startswith("`") else ast.literal_eval(text)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers standing alone or before ``{`` / ``[``,
    and ``{__name__="..."}``; not functions, aggregations, keywords, label names (in matchers and in
    by/without/on/ignoring/group_left/group_right lists), strings, numbers or durations."""
    tokens = tokenize(expr)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if (kind, text) == ("op", "{"):
            end = _skip_group(tokens, i, "{", "}")
            inner = tokens[i + 1:end - 1]
            for k in range(len(inner) - 2):
                if inner[k] == ("ident", "__name__") and inner[k + 1] == ("op", "=") and inner[k + 2][0] == "string":
                    names.add(_unquote(inner[k + 2][1]))
            i = end
            continue
        if (kind, text) == ("op", "["):
            i = _skip_group(tokens, i, "[", "]")
            continue
        if kind == "ident":
            low = text.lower()
            if low in LABEL_LIST_KEYWORDS:
                i = _skip_group(tokens, i + 1, "(", ")") if nxt == ("op", "(") else i + 1
                continue
            if low in OPERATOR_KEYWORDS or low in NUMBER_WORDS:
                i += 1
                continue
            if nxt == ("op", "(") or (low in AGGREGATIONS and nxt[0] == "ident" and nxt[1].lower() in
                                      ("by", "without")):
                i += 1  # a function call or an aggregation
                continue
            names.add(text)
        i += 1
    return names


# --- Grafana dashboards: panel queries with the variables substituted ----------------------

# The built-in interval variables, for a Prometheus scraped every second on a dashboard showing the
# last hour: Grafana's $__rate_interval is max($__interval + scrape interval, 4 x scrape interval)
# with the datasource's scrape interval (15 s unless set), i.e. 1m.
BUILTIN = {"__rate_interval": "1m", "__rate_interval_ms": "60000", "__interval": "15s", "__interval_ms": "15000",
           "__range": "1h", "__range_s": "3600", "__range_ms": "3600000", "__auto": "15s"}

_VAR = re.compile(r"\$\{(?P<braced>\w+)(?::(?P<fmt>[\w]+))?\}|\[\[(?P<old>\w+)(?::(?P<oldfmt>\w+))?\]\]"
                  r"|\$(?P<plain>\w+)")
_REGEX_SPECIAL = re.compile(r"([\^$.|?*+()\[\]{}'])")


@dataclass
class Choice:
    """What a template variable is set to: some values, or "All" (with the variable's allValue)."""

    values: list[str]
    all_value: str | None = None  # the custom allValue, used raw (Grafana does not format it)
    multi: bool = False  # multi-value or includeAll: Prometheus gets a regex


def _regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape: a regex escape, written for a PromQL string literal."""
    return _REGEX_SPECIAL.sub(r"\\\\\1", value.replace("\\", "\\\\\\\\"))


def format_value(choice: Choice, fmt: str | None) -> str:
    """The text Grafana's Prometheus datasource puts in place of a variable (templateSrv + the
    datasource's interpolateQueryExpr), for the formats dashboards use."""
    if choice.all_value is not None and fmt not in ("text", "queryparam"):
        return choice.all_value
    vals = choice.values
    if fmt in (None, ""):
        if not choice.multi:
            return vals[0].replace("\\", "\\\\").replace("'", "\\'") if vals else ""
        escaped = [_regex_escape(v) for v in vals]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt == "regex":
        escaped = [_regex_escape(v) for v in vals]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt == "pipe":
        return "|".join(vals)
    if fmt in ("csv", "raw", "text"):
        return ",".join(vals)
    if fmt == "glob":
        return vals[0] if len(vals) == 1 else "{" + ",".join(vals) + "}"
    if fmt == "doublequote":
        return ",".join(f'"{v}"' for v in vals)
    if fmt == "singlequote":
        return ",".join(f"'{v}'" for v in vals)
    if fmt == "json":
        return json.dumps(vals if len(vals) != 1 else vals[0])
    if fmt == "queryparam":
        return "&".join(f"var={urllib.parse.quote(v)}" for v in vals)
    raise ValueError(f"variable format {fmt!r} not handled")


def substitute(expr: str, choices: dict[str, Choice], builtin: dict[str, str] = BUILTIN) -> str:
    """``expr`` with every ``$var``, ``${var}``, ``${var:fmt}`` and ``[[var]]`` replaced; built-in
    ``$__*`` variables from ``builtin``. Unknown variables are left as they are (and fail to parse)."""
    def repl(m: re.Match) -> str:
        name = m.group("braced") or m.group("old") or m.group("plain")
        fmt = m.group("fmt") or m.group("oldfmt")
        if name in builtin:
            return builtin[name]
        if name in choices:
            return format_value(choices[name], fmt)
        return m.group()
    return _VAR.sub(repl, expr)


def variables_used(expr: str) -> set[str]:
    return {m.group("braced") or m.group("old") or m.group("plain") for m in _VAR.finditer(expr)}


def variables_of(dashboard: dict) -> list[str]:
    """The names of a dashboard's template variables."""
    return [v["name"] for v in (dashboard.get("templating") or {}).get("list") or [] if "name" in v]


@dataclass
class Variable:
    name: str
    type: str
    definition: str
    regex: str = ""
    include_all: bool = False
    all_value: str | None = None
    multi: bool = False
    current: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, v: dict) -> Variable:
        query = v.get("query", "")
        definition = v.get("definition") or (query.get("query", "") if isinstance(query, dict) else query)
        current = (v.get("current") or {}).get("value", [])
        current = [current] if isinstance(current, str) else list(current or [])
        options = [o.get("value") for o in v.get("options") or [] if isinstance(o.get("value"), str)]
        return cls(name=v["name"], type=v.get("type", "query"), definition=definition or "",
                   regex=v.get("regex") or "", include_all=bool(v.get("includeAll")),
                   all_value=v.get("allValue") or None, multi=bool(v.get("multi")), current=current,
                   options=options)


def _label_values_call(definition: str) -> tuple[str | None, str] | None:
    m = re.fullmatch(r"\s*label_values\(\s*(?:(?P<match>.*),\s*)?(?P<label>\w+)\s*\)\s*", definition, re.S)
    return (m.group("match"), m.group("label")) if m else None


def variable_values(var: Variable, prom: Prometheus, choices: dict[str, Choice]) -> list[str]:
    """The values Grafana would offer for ``var`` in this environment."""
    definition = substitute(var.definition, choices)
    if var.type == "query":
        if (call := _label_values_call(definition)) is not None:
            match, label = call
            values = prom.label_values(label, match)
        elif m := re.fullmatch(r"\s*query_result\((?P<q>.*)\)\s*", definition, re.S):
            values = []
            for s in prom.result(m.group("q")):
                labels = ",".join(f'{k}="{v}"' for k, v in s.get("metric", {}).items() if k != "__name__")
                values.append(f'{s.get("metric", {}).get("__name__", "")}{{{labels}}} {s["value"][1]} '
                              f'{int(float(s["value"][0]) * 1000)}')
        elif m := re.fullmatch(r"\s*metrics\((?P<re>.*)\)\s*", definition, re.S):
            values = sorted(n for n in prom.names() if re.search(m.group("re"), n))
        else:
            raise ValueError(f"variable {var.name}: query {var.definition!r} not understood")
    elif var.type == "custom":
        values = [v.strip() for v in re.split(r"(?<!\\),", var.definition) if v.strip()]
    elif var.type in ("constant", "textbox"):
        values = [var.definition] if var.definition else var.current
    elif var.type == "interval":
        values = var.current or [v.strip() for v in var.definition.split(",") if v.strip()]
    else:
        values = var.current or var.options
    if var.regex:
        pattern = re.compile(var.regex.strip("/"))
        kept = []
        for v in values:
            if m := pattern.search(v):
                kept.append(m.group(1) if m.groups() else v)
        values = kept
    return list(dict.fromkeys(values))


def dashboard_files(directory: Path = DASHBOARDS) -> list[Path]:
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def raw_panel_queries(dashboard: dict, annotations: bool = True) -> list[tuple[str, str]]:
    """(panel title, expr) of every Prometheus target of every panel, then ("annotation <name>",
    expr) of every annotation query; variables not substituted."""
    out = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets") or []:
            if isinstance(target.get("expr"), str) and target["expr"].strip():
                out.append((panel.get("title") or f"panel {panel.get('id')}", target["expr"]))
    for ann in ((dashboard.get("annotations") or {}).get("list") or []) if annotations else []:
        if isinstance(ann.get("expr"), str) and ann["expr"].strip():
            out.append((f"annotation {ann.get('name', '')}", ann["expr"]))
    return out


@dataclass
class PanelQuery:
    uid: str
    title: str
    raw: str
    candidates: list[str]  # the expr under each combination of single-value variables (at least one)


SKIP_VARIABLE_TYPES = ("datasource", "adhoc", "groupby")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def time_range(dashboard: dict) -> dict[str, str]:
    """$__range and friends for the dashboard's default time range (``now-6h`` to ``now``)."""
    m = re.fullmatch(r"now-(\d+)(ms|[smhdwy])", str((dashboard.get("time") or {}).get("from", "")))
    if not m or (dashboard.get("time") or {}).get("to", "now") != "now":
        return {}
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    return {"__range": f"{m.group(1)}{m.group(2)}", "__range_s": f"{seconds:g}", "__range_ms": f"{seconds * 1000:g}"}


def panel_queries(prom: Prometheus, files: Iterable[Path] | None = None,
                  max_combinations: int = 12) -> list[PanelQuery]:
    """Every panel query of every dashboard with its variables set as in this environment.

    Variables resolve in dashboard order (chained ones see the earlier ones), from Prometheus. A
    variable with "All" is set to All (its allValue raw, else the regex of all values); a
    single-value variable has one candidate per value, so a panel passes if it shows data for some
    choice, as a user would pick (up to ``max_combinations``).
    """
    out: list[PanelQuery] = []
    for path in files if files is not None else dashboard_files():
        dashboard = json.loads(path.read_text())
        uid = dashboard.get("uid") or path.stem
        choices: dict[str, Choice] = {}
        single: dict[str, list[str]] = {}
        for raw_var in (dashboard.get("templating") or {}).get("list") or []:
            var = Variable.from_json(raw_var)
            if var.type in SKIP_VARIABLE_TYPES:
                continue
            values = variable_values(var, prom, choices)
            if var.include_all:
                choices[var.name] = Choice(values, var.all_value, multi=True)
            else:
                ordered = [v for v in var.current if v in values] + [v for v in values if v not in var.current]
                single[var.name] = ordered or values
                choices[var.name] = Choice(single[var.name][:1], multi=var.multi)
        builtin = dict(BUILTIN, **time_range(dashboard))
        for title, expr in raw_panel_queries(dashboard):
            used = [name for name in single if name in variables_used(expr)]
            candidates = []
            for combo in itertools.islice(itertools.product(*(single[n] or [""] for n in used)), max_combinations):
                local = dict(choices)
                local.update({n: Choice([v], multi=choices[n].multi) for n, v in zip(used, combo, strict=True)})
                candidates.append(substitute(expr, local, builtin))
            out.append(PanelQuery(uid, title, expr,
                                  list(dict.fromkeys(candidates)) or [substitute(expr, choices, builtin)]))
    return out


def rule_exprs(path: Path = RULES_FILE) -> list[tuple[str, str]]:
    """(alert or record name, expr) of every rule in a rules file."""
    doc = yaml.safe_load(path.read_text())
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in doc["groups"] for r in g["rules"]]


def poll_until(check: Callable[[], list], timeout: float, interval: float = 1.0) -> list:
    """Call ``check`` (which returns what is still wrong) until it returns nothing or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = check()
        if not remaining or time.monotonic() >= deadline:
            return remaining
        time.sleep(interval)
