"""The Grafana dashboards: committed JSON == a fresh build, and grafana dashboard-linter's rules.

dashboards/build.py builds them with grafana-foundation-sdk; the committed dashboards/*.json must be
exactly its output. The lint rules reimplement grafana/dashboard-linter (not installable here):
one ``datasource`` variable, ``job``/``target`` variables refreshed on time range change, every panel
with a datasource, targets, title, description and unit, ``$__rate_interval`` in every rate, counters
only inside rate/irate/increase, ``job``/``target`` matchers on every selector — plus this project's
own: stable uids, no ``__inputs``, thresholds equal to the alert constants, links between the
overview and the details, no NaN/Inf (guarded divisions, forecasts without +Inf), metric names and
matcher labels that the exporter really exports, and every expression parsed by promtool.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import yaml
from conftest import REPO, load_script, need
from promlab import LABEL_LIST_KEYWORDS
from promlab import tokenize as promql_tokens

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import exporter.sources  # noqa: E402
from dashboards import queries  # noqa: E402
from exporter import catalog  # noqa: E402

exporter.sources.load_all()  # every source's families in the catalog
from exporter.sources.app import V8_ABORT_RATIO, V8_LOW_MUTATOR_UTILIZATION  # noqa: E402

DASHBOARDS_DIR = REPO / "dashboards"
UIDS = {"cache-exporter-overview", "cache-exporter-redis", "cache-exporter-memcached", "cache-exporter-app",
        "cache-exporter-http-cache"}
OVERVIEW = "cache-exporter-overview"
DETAILS = sorted(UIDS - {OVERVIEW})
STORE_OF = {"cache-exporter-redis": "redis", "cache-exporter-memcached": "memcached",
            "cache-exporter-app": "app", "cache-exporter-http-cache": "http_cache"}
NO_QUERY_PANELS = {"row", "text"}
COUNTER_FUNCS = {"rate", "irate", "increase"}
# Families the exporter serves process-wide (exporter/exposition.py), not per target.
PROCESS_WIDE = {"cache_exporter_build_info", "cache_exporter_targets", "cache_exporter_config_last_reload_successful",
                "cache_exporter_config_last_reload_success_timestamp_seconds", "cache_exporter_render_duration_seconds"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


rules = load_script(REPO / "alerts" / "build_rules.py")
DOCS = queries.dashboards()
FAMILIES = {spec.name: spec for spec in catalog.families()}


def panels(doc: dict) -> list[dict]:
    return list(queries.iter_panels(doc))


def query_panels(doc: dict) -> list[dict]:
    return [p for p in panels(doc) if p.get("type") not in NO_QUERY_PANELS]


def panel(uid: str, title: str) -> dict:
    found = [p for p in panels(DOCS[uid]) if p.get("title") == title]
    assert len(found) == 1, f"{uid}: {len(found)} panels titled {title!r}"
    return found[0]


def all_exprs(doc: dict) -> list[tuple[str, str]]:
    """(where, raw expr) of every panel query and annotation of a dashboard."""
    out = [(f"panel {p.get('title')!r} {t.get('refId')}", t["expr"])
           for p in query_panels(doc) for t in p.get("targets", []) if t.get("expr")]
    out += [(f"annotation {a.get('name')!r}", a["expr"]) for a in doc["annotations"]["list"] if a.get("expr")]
    return out


ALL_EXPRS = [(uid, where, expr) for uid, doc in DOCS.items() for where, expr in all_exprs(doc)]


# --- a small PromQL scanner (enough for lint rules; promtool checks the syntax) -------------------------

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset"}
LITERALS = {"Inf", "NaN", "inf", "nan"}


def tokenize(expr: str) -> list[tuple[str, str]]:
    """promlab's tokens, each ``[...]`` (range or subquery) folded into one ("range", text) token:
    the rules below read a range as a whole."""
    toks = promql_tokens(expr)
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(toks):
        if toks[i] == ("op", "["):
            end = toks.index(("op", "]"), i)
            out.append(("range", "[" + "".join(text for _, text in toks[i + 1:end]) + "]"))
            i = end + 1
            continue
        out.append(toks[i])
        i += 1
    return out


@dataclass
class Selector:
    metric: str
    matchers: list[tuple[str, str, str]] = field(default_factory=list)  # (label, op, value without quotes)
    range: str | None = None
    funcs: list[str] = field(default_factory=list)  # enclosing contexts, innermost last
    followed_by: list[str] = field(default_factory=list)  # the next tokens after the selector


@dataclass
class Parsed:
    selectors: list[Selector]
    ranges: list[str]
    calls: list[str]
    divisions_guarded: list[bool]


def parse(expr: str) -> Parsed:
    toks = tokenize(expr)
    stack: list[str] = []  # per open paren: a function name, "(labels)" or "(group)"
    selectors, ranges, calls, guarded = [], [], [], []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "range":
            ranges.append(text[1:-1])
        elif kind == "op" and text == "(":
            prev = toks[i - 1] if i else ("", "")
            if prev[0] == "ident" and prev[1] in LABEL_LIST_KEYWORDS:
                stack.append("(labels)")
            elif prev[0] == "ident" and prev[1] not in KEYWORDS:
                stack.append(prev[1])
                calls.append(prev[1])
            else:
                stack.append("(group)")
        elif kind == "op" and text == ")":
            assert stack, f"unbalanced ) in {expr!r}"
            stack.pop()
        elif kind == "op" and text == "/":
            guarded.append(_division_guarded(toks, i + 1))
        elif kind == "ident" and nxt[0] == "ident" and nxt[1] in ("by", "without"):
            calls.append(text)  # an aggregation: sum by (...) (...)
        elif kind == "ident" and text not in KEYWORDS and text not in LITERALS and nxt != ("op", "(") \
                and (not stack or stack[-1] != "(labels)"):
            sel = Selector(text, funcs=list(stack))
            j = i + 1
            if j < len(toks) and toks[j] == ("op", "{"):
                j += 1
                while toks[j] != ("op", "}"):
                    if toks[j] == ("op", ","):
                        j += 1
                        continue
                    (lk, label), (ok, op), (vk, value) = toks[j], toks[j + 1], toks[j + 2]
                    assert lk == "ident" and ok == "op" and vk == "string", f"bad matcher in {expr!r}"
                    sel.matchers.append((label, op, value[1:-1]))
                    j += 3
                j += 1
            if j < len(toks) and toks[j][0] == "range":
                sel.range = toks[j][1][1:-1]
            sel.followed_by = [t for _, t in toks[j:j + 3]]
            selectors.append(sel)
            i = j - 1 if j > i + 1 else i
        elif kind == "op" and text == "{":
            raise AssertionError(f"selector without a metric name in {expr!r}")
        i += 1
    assert not stack, f"unbalanced ( in {expr!r}"
    return Parsed(selectors, ranges, calls, guarded)


def _division_guarded(toks: list[tuple[str, str]], start: int) -> bool:
    """The denominator is ``( ... > 0)`` (or ``> 0`` at its top level): never 0, so never NaN/Inf."""
    if start >= len(toks) or toks[start] != ("op", "("):
        return False
    depth, j = 0, start
    while j < len(toks):
        if toks[j] == ("op", "("):
            depth += 1
        elif toks[j] == ("op", ")"):
            depth -= 1
            if depth == 0:
                return False
        elif depth == 1 and toks[j] == ("op", ">") and j + 1 < len(toks) and toks[j + 1] == ("number", "0"):
            return True
        j += 1
    return False


def _check_parser() -> None:
    p = parse('sum by (job) (rate(a_total{job=~"$job", x="y"}[$__rate_interval])) / (b{c="d"} > 0)')
    assert [s.metric for s in p.selectors] == ["a_total", "b"]
    assert p.selectors[0].funcs[-1] == "rate" and p.selectors[0].range == "$__rate_interval"
    assert p.selectors[0].matchers == [("job", "=~", "$job"), ("x", "=", "y")]
    assert p.divisions_guarded == [True]
    assert parse("a / b").divisions_guarded == [False]
    assert parse("x_total").selectors[0].funcs == []
    agg = parse('count by (job, target) (up{a="b"}) or on (job) vector(0)')
    assert [s.metric for s in agg.selectors] == ["up"] and {"count", "vector"} <= set(agg.calls)


# --- (a) the committed JSON is the build's output ---------------------------------------------------------

def test_scanner_understands_promql():
    _check_parser()


def _build():
    """dashboards/build.py (needs grafana-foundation-sdk: a test extra; skipped locally, fails in CI)."""
    need(importlib.util.find_spec("grafana_foundation_sdk") is not None,
         "grafana-foundation-sdk not installed (pip install -e '.[dashboards]')")
    from dashboards import build
    return build


def test_committed_json_equals_a_fresh_build():
    build = _build()
    files = build.rendered()
    committed = {p.name for p in DASHBOARDS_DIR.glob("*.json")}
    assert committed == {p.name for p in files}, "run: python dashboards/build.py"
    stale = [p.name for p, text in files.items() if p.read_text(encoding="utf-8") != text]
    assert not stale, f"{stale} differ from a fresh build; run: python dashboards/build.py"
    # Deterministic: a second build is byte-identical.
    assert build.rendered() == files


@pytest.mark.servers
def test_build_check_mode(tmp_path, capsys):
    build = _build()

    # As a script, from anywhere: the committed files pass.
    ok = subprocess.run([sys.executable, str(DASHBOARDS_DIR / "build.py"), "--check"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # A hand edit and a file the build no longer makes are both reported, and nothing is written.
    for path in DASHBOARDS_DIR.glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    edited = tmp_path / "cache-exporter-redis.json"
    edited.write_text(edited.read_text(encoding="utf-8").replace('"refresh": "1m"', '"refresh": "5s"'),
                      encoding="utf-8")
    (tmp_path / "old-dashboard.json").write_text("{}\n")
    capsys.readouterr()
    assert build.main(["--check"], directory=tmp_path) == 1
    out = capsys.readouterr().out
    assert "cache-exporter-redis.json" in out and "old-dashboard.json" in out
    assert "cache-exporter-app.json" not in out
    assert '"refresh": "5s"' in edited.read_text(encoding="utf-8")
    # Without --check the build repairs both.
    assert build.main([], directory=tmp_path) == 0
    assert build.main(["--check"], directory=tmp_path) == 0
    assert not (tmp_path / "old-dashboard.json").exists()


def test_json_files_are_canonical():
    for path in DASHBOARDS_DIR.glob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n", path.name
        assert path.stem == json.loads(text)["uid"], f"{path.name}: file name is not the uid"


# --- (b) dashboard-level rules ----------------------------------------------------------------------------

def test_stable_unique_uids_and_tags():
    assert set(DOCS) == UIDS
    for uid, doc in DOCS.items():
        assert doc["uid"] == uid
        assert "cache-exporter" in doc["tags"], uid
        assert doc["title"].startswith("Cache exporter / "), uid
        assert doc.get("description"), uid
    assert len({doc["title"] for doc in DOCS.values()}) == len(DOCS)


def _walk(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_no_inputs_and_no_hard_coded_datasources():
    for uid, doc in DOCS.items():
        for path, key, value in _walk(doc):
            assert key != "__inputs", f"{uid}{path}"
            assert key != "__requires", f"{uid}{path}"
            if key == "datasource" and value is not None:
                assert value == DATASOURCE, f"{uid}{path}: {value}"
        assert "${DS_" not in json.dumps(doc), uid


def _variables(doc: dict) -> dict[str, dict]:
    return {v["name"]: v for v in doc["templating"]["list"]}


def test_template_datasource_variable():
    for uid, doc in DOCS.items():
        datasources = [v for v in doc["templating"]["list"] if v["type"] == "datasource"]
        assert len(datasources) == 1, uid
        (ds,) = datasources
        assert ds["name"] == "datasource" and ds["label"] == "Data source" and ds["query"] == "prometheus", uid


def test_job_and_target_variables():
    for uid, doc in DOCS.items():
        variables = _variables(doc)
        assert list(variables)[:3] == ["datasource", "job", "target"], uid
        for name in ("job", "target"):
            var = variables[name]
            assert var["type"] == "query", (uid, name)
            assert var["datasource"] == DATASOURCE, (uid, name)
            assert var["multi"] and var["includeAll"] and var["allValue"] == ".*", (uid, name)
        assert variables["job"]["query"] == "label_values(cache_exporter_build_info, job)", uid
        target_query = variables["target"]["query"]
        assert target_query.startswith("label_values(cache_up{") and target_query.endswith(", target)"), uid
        assert 'job=~"$job"' in target_query, uid
        if uid in STORE_OF:  # a detail dashboard lists the targets of its store only
            assert f'store="{STORE_OF[uid]}"' in target_query, uid


def test_variables_refresh_on_time_range_change():
    for uid, doc in DOCS.items():
        for var in doc["templating"]["list"]:
            if var["type"] == "query":
                assert var["refresh"] == 2, (uid, var["name"])


def test_every_panel_has_datasource_targets_title_description_unit():
    for uid, doc in DOCS.items():
        for p in panels(doc):
            if p["type"] in NO_QUERY_PANELS:
                continue
            where = f"{uid}: panel {p.get('id')} {p.get('title')!r}"
            assert p.get("title"), where
            assert p.get("description"), where
            assert p.get("datasource") == DATASOURCE, where
            assert p.get("fieldConfig", {}).get("defaults", {}).get("unit"), where
            targets = p.get("targets") or []
            assert targets, where
            ref_ids = [t.get("refId") for t in targets]
            assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), where
            for t in targets:
                assert t.get("expr"), where
                assert t.get("datasource", DATASOURCE) == DATASOURCE, where


def test_panel_titles_unique_per_dashboard():
    for uid, doc in DOCS.items():
        titles = [p["title"] for p in panels(doc)]
        assert len(titles) == len(set(titles)), (uid, sorted(t for t in titles if titles.count(t) > 1))


def test_tables_name_every_column_and_sort_by_one():
    """Merged instant queries: each label of a query's outer ``by`` and each value has a named column."""
    for uid, doc in DOCS.items():
        for p in query_panels(doc):
            if p["type"] != "table":
                continue
            where = f"{uid}: {p['title']}"
            named = {o["matcher"]["options"]: {x["id"]: x["value"] for x in o["properties"]}
                     for o in p["fieldConfig"]["overrides"] if o["matcher"]["id"] == "byName"}
            assert all("displayName" in props for props in named.values()), where
            targets = p["targets"]
            for t in targets:
                assert t["format"] == "table" and t["instant"], where
                value = "Value" if len(targets) == 1 else f"Value #{t['refId']}"
                assert value in named, (where, value)
                by = re.search(r"\bby \(([^)]*)\)", t["expr"])
                assert by, (where, t["expr"])
                for label in (x.strip() for x in by.group(1).split(",")):
                    assert label in named, (where, label)
            if len(targets) > 1:
                assert p["transformations"][0]["id"] == "merge", where
            for sort in p["options"].get("sortBy", []):
                assert sort["displayName"] in {props["displayName"] for props in named.values()}, where


def test_panel_ids_unique_and_grid_without_overlaps():
    for uid, doc in DOCS.items():
        ids = [p["id"] for p in panels(doc)]
        assert len(ids) == len(set(ids)), uid
        boxes = []
        for p in doc["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, (uid, p["title"], g)
            for other, og in boxes:
                overlap = (g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"]
                           and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"])
                assert not overlap, (uid, p["title"], other)
            boxes.append((p["title"], g))


# --- (b) query rules ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("uid", "where", "expr"), ALL_EXPRS, ids=[f"{u}:{w}" for u, w, _ in ALL_EXPRS])
def test_query_lint(uid, where, expr):
    parsed = parse(expr)
    # $__rate_interval in every range (every rate/irate/increase has one; no other range is used).
    if set(parsed.calls) & COUNTER_FUNCS:
        assert parsed.ranges, expr
    for r in parsed.ranges:
        assert r == "$__rate_interval", f"range [{r}] in {expr!r}: use [$__rate_interval]"
    assert parsed.selectors, f"no selector in {expr!r}"
    for sel in parsed.selectors:
        labels = {label for label, _, _ in sel.matchers}
        # Counters only inside rate/irate/increase, never read raw.
        if sel.metric.endswith("_total"):
            assert sel.funcs and sel.funcs[-1] in COUNTER_FUNCS, f"counter {sel.metric} outside rate() in {expr!r}"
            assert sel.range == "$__rate_interval", f"counter {sel.metric} without [$__rate_interval]"
        else:
            assert sel.range is None or (sel.funcs and sel.funcs[-1] in COUNTER_FUNCS | {"avg_over_time"}), expr
        # job / target matchers on every selector.
        assert ("job", "=~", "$job") in sel.matchers, f"{sel.metric} without job=~\"$job\" in {expr!r}"
        assert ("target", "=~", "$target") in sel.matchers, f"{sel.metric} without target=~\"$target\" in {expr!r}"
        if sel.metric == "ALERTS":
            assert ("alertstate", "=", "firing") in sel.matchers, expr
            continue
        # The family exists, and its selector only uses labels it has.
        spec = FAMILIES.get(sel.metric)
        assert spec is not None, f"{sel.metric} is not a family the exporter exports ({uid}, {where})"
        known = {"job", "instance", "target", *spec.labels, *spec.optional_labels}
        assert labels <= known, f"{sel.metric} has no label(s) {labels - known} ({uid}, {where})"
        # Forecasts are +Inf when not growing: never shown raw (no Inf cells or axes). ``< +Inf``, a
        # comparison with a finite horizon (``< 3600``) or clamp_max keeps them out.
        if sel.metric.endswith("_seconds_until_full"):
            after = sel.followed_by
            assert after[:2] == ["<", "+"] and after[2] == "Inf" \
                or (len(after) > 1 and after[0] in ("<", "<=") and re.fullmatch(r"\d+(\.\d+)?", after[1])) \
                or (sel.funcs and sel.funcs[-1] == "clamp_max"), f"{sel.metric} unfiltered in {expr!r}"
    # Division only by a denominator guarded against 0 (no NaN/Inf, e.g. maxmemory 0).
    assert all(parsed.divisions_guarded), f"unguarded division in {expr!r}"


def test_no_panel_divides_by_maxmemory():
    """The peers' N/A/Inf panels: used / maxmemory with maxmemory 0. Ours use the ratio families."""
    for uid, where, expr in ALL_EXPRS:
        for limit in ("redis_memory_max_bytes", "redis_config_maxmemory", "cache_memory_limit_bytes",
                      "memcached_limit_bytes"):
            assert not re.search(r"/\s*\(?\s*(?:\w+\s*(?:by|without)\s*\([^)]*\)\s*)?\(?\s*" + limit, expr), \
                (uid, where, expr)


def test_variable_selectors_use_known_families():
    for uid, name, selector in queries.variable_selectors():
        for sel in parse(selector).selectors:
            assert sel.metric in FAMILIES or sel.metric in PROCESS_WIDE, (uid, name, sel.metric)


# --- (b) thresholds equal the alert constants -------------------------------------------------------------

def steps(config: dict) -> list[tuple[float | None, str]]:
    assert config["mode"] == "absolute"
    return [(s["value"], s["color"]) for s in config["steps"]]


def panel_steps(uid: str, title: str) -> list[tuple[float | None, str]]:
    return steps(panel(uid, title)["fieldConfig"]["defaults"]["thresholds"])


def column_steps(uid: str, title: str, column: str) -> list[tuple[float | None, str]]:
    for override in panel(uid, title)["fieldConfig"]["overrides"]:
        props = {p["id"]: p["value"] for p in override["properties"]}
        if props.get("displayName") == column:
            return steps(props["thresholds"])
    raise AssertionError(f"{uid}: {title}: no column {column!r}")


T = rules.TIME
TIME_UNTIL_FULL = [(None, "red"), (T["predict_critical_horizon"], "orange"), (T["predict_warning_horizon"], "blue"),
                   (T["predict_info_horizon"], "green")]
RESIDENT_UNTIL_FULL = [(None, "red"), (T["predict_critical_horizon"], "orange"),
                       (T["predict_warning_horizon"], "green")]
HEAP_UNTIL_FULL = [(None, "red"), (T["heap_critical_horizon"], "orange"), (T["heap_warning_horizon"], "green")]
RESIDENT = [(None, "green"), (rules.RESIDENT_WARNING_RATIO, "orange"), (rules.RESIDENT_CRITICAL_RATIO, "red")]
NO_LEVEL = [(None, "text")]  # a base colour only: no level claims an alert
REDIS, MEMCACHED, APP = "cache-exporter-redis", "cache-exporter-memcached", "cache-exporter-app"


def alert_rules(name: str) -> dict[str, str]:
    """severity -> expr of the rules ``name`` (alerts/build_rules.py, unscaled)."""
    return {r["labels"]["severity"]: r["expr"] for g in rules.build()["groups"] for r in g["rules"]
            if r.get("alert") == name}


def horizons(name: str, metric: str) -> dict[str, float]:
    """severity -> the horizon of the rules ``name``: the number ``metric`` is first compared with."""
    out = {}
    for severity, expr in alert_rules(name).items():
        m = re.search(re.escape(metric) + r"(?:\{[^}]*\})?[^<>\n]*< (\d+(?:\.\d+)?)\n", expr + "\n")
        assert m, (name, severity, expr)
        out[severity] = float(m.group(1))
    return out


def hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h"


def regexp_steps(uid: str, title: str) -> dict[str, list[tuple[float | None, str]]]:
    """The thresholds of a panel's byRegexp overrides, by regexp."""
    out = {}
    for override in panel(uid, title)["fieldConfig"]["overrides"]:
        if override["matcher"]["id"] == "byRegexp":
            props = {p["id"]: p["value"] for p in override["properties"]}
            out[override["matcher"]["options"]] = steps(props["thresholds"])
    return out


def columns(uid: str, title: str) -> list[tuple[str, dict, str | None]]:
    """(display name, properties, query expr or None for a label) of a table's columns, in order."""
    p = panel(uid, title)
    order = p["transformations"][-1]["options"]["indexByName"]
    exprs = {f"Value #{t['refId']}": t["expr"] for t in p["targets"]}
    if len(p["targets"]) == 1:
        exprs["Value"] = p["targets"][0]["expr"]
    named = {o["matcher"]["options"]: {x["id"]: x["value"] for x in o["properties"]}
             for o in p["fieldConfig"]["overrides"] if o["matcher"]["id"] == "byName"}
    return [(named[name]["displayName"], named[name], exprs.get(name)) for name in sorted(order, key=order.get)]


def column(uid: str, title: str, name: str) -> tuple[dict, str | None]:
    found = [(props, expr) for display, props, expr in columns(uid, title) if display == name]
    assert len(found) == 1, f"{uid}: {title}: {len(found)} columns {name!r}"
    return found[0]


def test_time_until_full_thresholds_are_the_exhaustion_alert_horizons():
    store = horizons("CacheMemoryExhaustionPredicted", "cache_memory_seconds_until_full")
    assert store == {"critical": 3600, "warning": 6 * 3600, "info": 7 * 86400}
    assert TIME_UNTIL_FULL == [(None, "red"), (store["critical"], "orange"), (store["warning"], "blue"),
                               (store["info"], "green")]
    resident = horizons("CacheResidentMemoryExhaustionPredicted", "cache_resident_memory_seconds_until_full")
    assert resident == {"critical": 3600, "warning": 6 * 3600}  # no info: no blue band
    assert RESIDENT_UNTIL_FULL == [(None, "red"), (resident["critical"], "orange"), (resident["warning"], "green")]
    heap = horizons("AppHeapExhaustionPredicted", "cache_memory_seconds_until_full")
    assert heap == {"critical": 3600, "warning": 4 * 3600}
    assert HEAP_UNTIL_FULL == [(None, "red"), (heap["critical"], "orange"), (heap["warning"], "green")]

    # Stores: the three horizons. Where resident memory or app heaps share a panel, their series have
    # their own alert's levels.
    assert panel_steps(OVERVIEW, "Runs out first: time until full") == TIME_UNTIL_FULL
    assert regexp_steps(OVERVIEW, "Runs out first: time until full") == {
        " · hard limit$": RESIDENT_UNTIL_FULL, " · heap limit$": HEAP_UNTIL_FULL}
    for uid in (OVERVIEW, REDIS, MEMCACHED):
        assert panel_steps(uid, "Time until full") == TIME_UNTIL_FULL
    for uid, title in ((OVERVIEW, "Targets"), (REDIS, "Instances"), (MEMCACHED, "Instances")):
        assert column_steps(uid, title, "Time until full") == TIME_UNTIL_FULL
    assert column_steps(OVERVIEW, "Targets", "Until OOM kill") == RESIDENT_UNTIL_FULL
    # App heaps: the heap horizons, on panels of their own; the app's hard limit beside them.
    assert panel_steps(APP, "Time until heap full") == HEAP_UNTIL_FULL
    assert column_steps(APP, "Apps", "Heap full in") == HEAP_UNTIL_FULL
    assert panel_steps(APP, "Time until OOM kill") == RESIDENT_UNTIL_FULL
    (heap_query,) = panel(APP, "Time until heap full")["targets"]
    assert 'cache_memory_seconds_until_full{job=~"$job", target=~"$target", store="app"}' in heap_query["expr"]
    (oom_query,) = panel(APP, "Time until OOM kill")["targets"]
    assert "cache_resident_memory_seconds_until_full" in oom_query["expr"]


def test_runs_out_first_names_the_limit_its_colours_follow():
    """The override regexps match the legend: every countdown is labelled with the limit it runs into."""
    bars = panel(OVERVIEW, "Runs out first: time until full")
    (target,) = bars["targets"]
    assert target["legendFormat"] == "{{target}} · {{limit}}"
    expr = " ".join(target["expr"].split())
    assert ('label_replace(cache_memory_seconds_until_full{job=~"$job", target=~"$target", store!="app"} < +Inf, '
            '"limit", "effective limit", "", "")') in expr
    assert ('label_replace(cache_memory_seconds_until_full{job=~"$job", target=~"$target", store="app"} < +Inf, '
            '"limit", "heap limit", "", "")') in expr
    assert ('label_replace(cache_resident_memory_seconds_until_full{job=~"$job", target=~"$target"} < +Inf, '
            '"limit", "hard limit", "", "")') in expr


def test_descriptions_state_the_alert_horizons():
    store_text = (f"critical under {hours(T['predict_critical_horizon'])}",
                  f"warning under {hours(T['predict_warning_horizon'])}",
                  f"to {T['predict_info_horizon'] / 86400:g} d",
                  f"at most {rules.PREDICT_EVIDENCE['critical']:g} x", f"at most {rules.PREDICT_EVIDENCE['info']:g} x")
    for uid, title in ((OVERVIEW, "Runs out first: time until full"), (OVERVIEW, "Time until full"),
                       (REDIS, "Time until full"), (MEMCACHED, "Time until full")):
        description = panel(uid, title)["description"]
        for text in store_text:
            assert text in description, (uid, title, text)
    heap_text = (f"critical under {hours(T['heap_critical_horizon'])} above "
                 f"{rules.PREDICT_CRITICAL_MIN_UTILIZATION:.0%}",
                 f"warning under {hours(T['heap_warning_horizon'])} above {rules.PREDICT_WARNING_MIN_UTILIZATION:.0%}")
    for uid, title in ((APP, "Time until heap full"), (APP, "Apps"), (OVERVIEW, "Runs out first: time until full")):
        for text in heap_text:
            assert text in panel(uid, title)["description"], (uid, title, text)
    resident_text = (f"critical under {hours(T['predict_critical_horizon'])}, warning under "
                     f"{hours(T['predict_warning_horizon'])}")
    assert resident_text in panel(APP, "Time until OOM kill")["description"]
    # The heap's warning horizon is said only of heaps, never of stores (it was the stores' once).
    heap_warning = f"under {hours(T['heap_warning_horizon'])}"
    for uid, doc in DOCS.items():
        for p in query_panels(doc):
            if heap_warning in p["description"]:
                assert "AppHeapExhaustionPredicted" in p["description"], (uid, p["title"])


def test_overview_counts_the_countdowns_per_horizon_as_the_rules_do():
    """One tile per CacheMemoryExhaustionPredicted severity: its rule's condition now (before ``for``)."""
    conditions = alert_rules("CacheMemoryExhaustionPredicted")
    tiles = {"critical": ("Full within 1 h", [(None, "green"), (1, "red")]),
             "warning": ("Full within 6 h", [(None, "green"), (1, "orange")]),
             "info": ("Full in 6 h – 7 d", [(None, "green"), (1, "blue")])}
    assert set(tiles) == set(conditions)
    bars = panel(OVERVIEW, "Runs out first: time until full")["gridPos"]
    for severity, (title, colours) in tiles.items():
        tile = panel(OVERVIEW, title)
        rule = conditions[severity]
        assert tile["type"] == "stat" and tile["gridPos"]["y"] == bars["y"] + bars["h"], title
        assert panel_steps(OVERVIEW, title) == colours
        (target,) = tile["targets"]
        expr = " ".join(target["expr"].split())
        assert expr.startswith("count( ") and expr.endswith(") or vector(0)"), expr  # 0, not "No data"
        # The horizon, and the lower bound of a band that a shorter horizon's alert has from there.
        horizon = re.search(r"< (\d+)\n", rule).group(1)
        assert f'cache_memory_seconds_until_full{{job=~"$job", target=~"$target", store!="app"}} < {horizon}' in expr
        beyond = re.search(r">= (\d+)\n", rule)
        assert (f"< {horizon} >= {beyond.group(1)})" in expr) if beyond else (">=" not in expr), (severity, expr)
        # The evidence: the countdown against how long the growth has been seen.
        evidence = re.search(r"<= ([\d.]+) \* max without \(instance, pod\) "
                             r"\(last_over_time\(cache_memory_forecast_basis_seconds", rule)
        if evidence:
            assert (f"<= {evidence.group(1)} * max by (job, target) (cache_memory_forecast_basis_seconds"
                    f'{{job=~"$job", target=~"$target", store!="app"}})') in expr, (severity, expr)
        else:
            assert "cache_memory_forecast_basis_seconds" not in expr, (severity, expr)
        # Stores that evict when full never count, as in the rule.
        assert "unless ignoring (instance, pod) cache_evicts_when_full == 1" in rule
        assert ("unless on (job, target) max by (job, target) (cache_evicts_when_full"
                '{job=~"$job", target=~"$target", store!="app"}) == 1') in expr
    assert rules.PREDICT_EVIDENCE == {"critical": 1.0, "warning": None, "info": 0.6}


@pytest.mark.parametrize(("uid", "title", "countdown"), [
    (OVERVIEW, "Targets", "Time until full"), (REDIS, "Instances", "Time until full"),
    (MEMCACHED, "Instances", "Time until full"), (APP, "Apps", "Heap full in")])
def test_growth_seen_for_is_beside_every_countdown_column(uid, title, countdown):
    """How much evidence is behind a countdown: cache_memory_forecast_basis_seconds, next to it."""
    names = [display for display, _, _ in columns(uid, title)]
    assert names[names.index(countdown) + 1] == "Growth seen for", names
    props, expr = column(uid, title, "Growth seen for")
    assert props["unit"] == "s"
    assert expr is not None and expr.startswith("max by (job, target) (cache_memory_forecast_basis_seconds{"), expr
    assert props["mappings"][0]["options"]["0"]["text"] == "not growing"


def test_resident_thresholds_are_the_alert_levels():
    assert panel_steps(OVERVIEW, "Fullest: resident memory, % of hard limit") == RESIDENT
    for uid in (OVERVIEW, REDIS, APP):
        assert panel_steps(uid, "Resident memory, % of hard limit") == RESIDENT
    assert column_steps(OVERVIEW, "Targets", "Resident / hard limit") == RESIDENT


def test_store_utilization_claims_no_alert_level():
    """No store alert has a level guard any more (the forecast asks for evidence instead), so memory used
    against the effective limit has no alarm colour; the guards are the app heap rules' only."""
    for severity, expr in alert_rules("CacheMemoryExhaustionPredicted").items():
        assert "cache_memory_utilization_ratio" not in expr, severity  # if a guard comes back, colour it here
    heap = alert_rules("AppHeapExhaustionPredicted")
    # The heap guards are against the effective limit (where the runtime may abort), not the nominal one.
    assert f"app_heap_effective_limit_bytes > {rules.PREDICT_WARNING_MIN_UTILIZATION:g}" in heap["warning"]
    assert f"app_heap_effective_limit_bytes > {rules.PREDICT_CRITICAL_MIN_UTILIZATION:g}" in heap["critical"]

    assert panel_steps(OVERVIEW, "Fullest: memory used, % of effective limit") == NO_LEVEL
    for uid in (OVERVIEW, REDIS, MEMCACHED):
        p = panel(uid, "Memory used, % of effective limit")
        assert "thresholds" not in p["fieldConfig"]["defaults"], uid
        assert "No alert depends on a store's level" in p["description"], uid
    for uid, title in ((OVERVIEW, "Targets"), (REDIS, "Instances"), (MEMCACHED, "Instances")):
        props, _ = column(uid, title, "Used / limit")
        assert "thresholds" not in props and "custom.cellOptions" not in props, uid
    guards = {rules.PREDICT_WARNING_MIN_UTILIZATION, rules.PREDICT_CRITICAL_MIN_UTILIZATION}
    for uid, doc in DOCS.items():
        for path, key, value in _walk(doc):
            if key in ("thresholds", "value") and isinstance(value, dict) and "steps" in value:
                assert not {s["value"] for s in value["steps"]} & guards, f"{uid}{path}: a store guard as a colour"
    # The overview, where app heaps are listed too, says where their guards apply.
    for title in ("Fullest: memory used, % of effective limit", "Memory used, % of effective limit"):
        assert "AppHeapExhaustionPredicted needs over 50% (warning) / 70% (critical)" in panel(
            OVERVIEW, title)["description"]


def test_store_specific_thresholds_are_the_alert_levels():
    assert panel_steps("cache-exporter-redis", "Fork memory risk") == [
        (None, "green"), (rules.FORK_WARNING_RATIO, "orange"), (rules.FORK_CRITICAL_RATIO, "red")]
    assert column_steps("cache-exporter-redis", "Persistence", "Fork risk") == panel_steps(
        "cache-exporter-redis", "Fork memory risk")
    assert panel_steps("cache-exporter-app", "Heap used, % of limit") == [(None, "green"), (V8_ABORT_RATIO, "red")]
    assert panel_steps("cache-exporter-app", "GC time") == [
        (None, "green"), (pytest.approx(1 - V8_LOW_MUTATOR_UTILIZATION), "red")]
    assert panel_steps("cache-exporter-memcached", "Calcified slab classes") == [(None, "green"), (1, "orange")]
    assert panel_steps(OVERVIEW, "Time since last successful poll") == [(None, "green"), (T["down_for"], "red")]
    assert panel_steps("cache-exporter-http-cache", "Error served from cache") == [(None, "green"), (1, "orange")]
    assert panel_steps("cache-exporter-http-cache", "Stale error after recovery") == [(None, "green"), (1, "red")]


def test_every_threshold_is_an_alert_constant():
    """No colour step of its own: each is an alert constant (or 0/1 for counts and flags)."""
    allowed = {float(v) for v in T.values()}
    allowed |= {float(v) for k, v in vars(rules).items() if k.isupper() and isinstance(v, int | float)}
    allowed |= {V8_ABORT_RATIO, round(1 - V8_LOW_MUTATOR_UTILIZATION, 6), 0.0, 1.0, 1e-9}
    checked = 0
    for uid, doc in DOCS.items():
        for path, key, value in _walk(doc):
            # Panels keep steps under "thresholds"; table-column overrides under {"id": "thresholds", "value"}.
            if key in ("thresholds", "value") and isinstance(value, dict) and "steps" in value:
                checked += 1
                for step in value["steps"][1:]:
                    assert float(step["value"]) in allowed, f"{uid}{path}: {step}"
    assert checked > 0


# --- (b) links -------------------------------------------------------------------------------------------

def test_overview_links_to_every_detail_dashboard_and_back():
    urls = {link.get("url") for link in DOCS[OVERVIEW]["links"]}
    for uid in DETAILS:
        assert f"/d/{uid}" in urls, uid
        back = DOCS[uid]["links"]
        assert any(link.get("url") == f"/d/{OVERVIEW}" for link in back), uid
    for uid, doc in DOCS.items():
        tagged = [lk for lk in doc["links"] if lk["type"] == "dashboards"]
        assert tagged and tagged[0]["tags"] == ["cache-exporter"] and tagged[0]["keepTime"], uid
        for link in doc["links"]:
            assert link["includeVars"] and link["keepTime"], (uid, link["title"])


def test_overview_data_links_open_the_targets_dashboard():
    text = json.dumps(panel(OVERVIEW, "Targets"))
    assert "/d/${__data.fields.dashboard}?var-target=${__data.fields.target}" in text
    bars = panel(OVERVIEW, "Runs out first: time until full")["fieldConfig"]["defaults"]["links"]
    assert bars[0]["url"].startswith("/d/${__field.labels.dashboard}?var-target=${__field.labels.target}")
    # The `dashboard` label the links use maps every store to its dashboard's uid.
    expr = panel(OVERVIEW, "Runs out first: time until full")["targets"][0]["expr"]
    assert '"dashboard", "cache-exporter-$1", "store", "(.+)"' in expr  # the stores whose uid is their name
    for uid, store in STORE_OF.items():
        assert uid == f"cache-exporter-{store}" or f'"dashboard", "{uid}", "store", "{store}"' in expr, uid


def test_overview_answers_which_target_runs_out_first():
    bars = panel(OVERVIEW, "Runs out first: time until full")
    assert bars["type"] == "bargauge" and bars["gridPos"]["y"] == 0 and bars["gridPos"]["x"] == 0
    (target,) = bars["targets"]
    assert target["instant"] and target["expr"].startswith("sort(")
    assert "cache_memory_seconds_until_full" in target["expr"] and "< +Inf" in target["expr"]
    assert bars["fieldConfig"]["defaults"]["unit"] == "s"
    table = panel(OVERVIEW, "Targets")
    assert table["options"]["sortBy"] == [{"desc": False, "displayName": "Time until full"}]


def test_overview_shows_firing_alerts_of_the_rule_file():
    rule_file = yaml.safe_load((REPO / "alerts" / "cache-exporter.rules.yml").read_text(encoding="utf-8"))
    names = {r["alert"] for g in rule_file["groups"] for r in g["rules"] if "alert" in r} - {"CacheWatchdog"}
    expr = panel(OVERVIEW, "Firing alerts")["targets"][0]["expr"]
    regex = re.search(r'alertname=~"([^"]+)"', expr).group(1)
    assert set(regex.split("|")) == names


# --- the queries module ------------------------------------------------------------------------------------

def test_panel_queries_substitutes_variables():
    rows = queries.panel_queries()
    assert {uid for uid, _, _ in rows} == UIDS
    assert len(rows) == sum(len(p["targets"]) for doc in DOCS.values() for p in query_panels(doc))
    for uid, title, expr in rows:
        assert "$job" not in expr and "$target" not in expr and "$__" not in expr and "$url" not in expr, expr
        assert title, uid
    custom = queries.panel_queries({"target": "redis-1", "$__rate_interval": "5m"})
    assert any('target=~"redis-1"' in e and "[5m]" in e for _, _, e in custom)
    assert any('"cache-exporter-$1"' in e for _, _, e in custom), "label_replace's $1 must survive"


# --- (c) promtool parses every expression ----------------------------------------------------------------

@pytest.mark.servers
def test_promtool_parses_every_expression(tmp_path):
    promtool = shutil.which("promtool")
    need(promtool is not None, "promtool not installed (Debian package prometheus)")
    exprs = ([e for _, _, e in queries.panel_queries()] + [e for _, _, e in queries.annotation_queries()]
             + [e for _, _, e in queries.variable_selectors()])
    rules_doc = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard_query_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump(rules_doc, sort_keys=False))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
