"""Building blocks shared by every cache-exporter dashboard (grafana-foundation-sdk builders).

The conventions live here, once, so no dashboard can forget them:

- every panel goes through ``_panel``: datasource ``${datasource}`` (no hard-coded datasource uid,
  no ``__inputs``), a title, a description, a unit, and queries with ref ids A, B, C…;
- every query selector goes through ``sel``/``rate``: it carries ``job=~"$job", target=~"$target"``,
  and every ``rate()`` runs over ``$__rate_interval``;
- the variables ``datasource`` ("Data source"), ``job`` and ``target`` (multi-value, All = ``.*``,
  refreshed when the time range changes), the tag ``cache-exporter``, stable uids and the links
  between the overview and the detail dashboards;
- a ``Grid`` that places panels on Grafana's 24-column grid and numbers them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

TAG = "cache-exporter"
# Stable uids: links, provisioning and bookmarks depend on them. The keys are the `store` label values.
UID = {
    "overview": "cache-exporter-overview",
    "redis": "cache-exporter-redis",
    "memcached": "cache-exporter-memcached",
    "app": "cache-exporter-app",
    "http_cache": "cache-exporter-http-cache",
}
TITLE = {
    "overview": "Cache exporter / Fleet overview",
    "redis": "Cache exporter / Redis",
    "memcached": "Cache exporter / Memcached",
    "app": "Cache exporter / Application heap & cache",
    "http_cache": "Cache exporter / HTTP response cache",
}

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB_TARGET = 'job=~"$job", target=~"$target"'
RATE_INTERVAL = "$__rate_interval"
GRID_WIDTH = 24


# --- PromQL ---------------------------------------------------------------------------------------

def sel(metric: str, *matchers: str) -> str:
    """``metric{job=~"$job", target=~"$target", <matchers>}``."""
    return metric + "{" + ", ".join((JOB_TARGET, *matchers)) + "}"


def rate(metric: str, *matchers: str) -> str:
    """``rate(metric{job, target, matchers}[$__rate_interval])``: counters are only ever read this way."""
    return f"rate({sel(metric, *matchers)}[{RATE_INTERVAL}])"


def ratio_of_rates(numerator: str, denominator: str, by: str) -> str:
    """sum(numerator) / sum(denominator), both ``sum by (by)``; absent rather than NaN when nothing moved."""
    return f"sum by ({by}) ({numerator})\n/\n(sum by ({by}) ({denominator}) > 0)"


def hit_ratio(by: str, *matchers: str) -> str:
    """hits / (hits + misses) over ``$__rate_interval``, guarded against 0/0 (no lookups: no point)."""
    hits = rate("cache_hits_total", *matchers)
    misses = rate("cache_misses_total", *matchers)
    return (f"sum by ({by}) ({hits})\n/\n"
            f"(sum by ({by}) ({hits}) + sum by ({by}) ({misses}) > 0)")


def with_dashboard_label(expr: str) -> str:
    """Add label ``dashboard``: the uid of the detail dashboard of the series' ``store`` (for data links)."""
    out = f'label_replace({expr}, "dashboard", "cache-exporter-$1", "store", "(.+)")'
    for store, uid in sorted(UID.items()):
        if store != "overview" and uid != f"cache-exporter-{store}":
            out = f'label_replace({out}, "dashboard", "{uid}", "store", "{store}")'
    return out


@dataclass(frozen=True)
class Q:
    """One query: range (time series) by default; ``instant`` for bar gauges, ``table`` for tables."""

    expr: str
    legend: str = "{{target}}"
    instant: bool = False
    table: bool = False


def _target(q: Q, ref_id: str) -> prometheus.Dataquery:
    t = prometheus.Dataquery().expr(q.expr).ref_id(ref_id).datasource(DATASOURCE)
    if q.table:
        t.instant().format(pm.PromQueryFormat.TABLE)
    elif q.instant:
        t.instant().legend_format(q.legend)
    else:
        t.range().legend_format(q.legend)
    return t


# --- field config -----------------------------------------------------------------------------------

def thresholds(base: str, *steps: tuple[float, str]) -> dm.ThresholdsConfig:
    """Absolute thresholds: ``base`` colour below the first step; each step colours values >= it."""
    return dm.ThresholdsConfig(mode=dm.ThresholdsMode.ABSOLUTE,
                               steps=[dm.Threshold(value=None, color=base)]
                               + [dm.Threshold(value=v, color=c) for v, c in steps])


def _thresholds_builder(config: dm.ThresholdsConfig) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(config.mode).steps(config.steps)


def value_map(mapping: dict[str, tuple[str, str]], start: int = 0) -> dm.ValueMap:
    """Exact values to (text, colour)."""
    return dm.ValueMap(options={value: dm.ValueMappingResult(text=text, color=color, index=start + i)
                                for i, (value, (text, color)) in enumerate(mapping.items())})


def range_map(low: float, high: float, text: str, color: str, index: int = 0) -> dm.RangeMap:
    return dm.RangeMap(options=dm.DashboardRangeMapOptions(
        from_val=low, to=high, result=dm.ValueMappingResult(text=text, color=color, index=index)))


def data_link(title: str, url: str) -> db.DashboardLink:
    """A field data link (opens in the same tab)."""
    return db.DashboardLink(title).type(dm.DashboardLinkType.LINK).url(url).target_blank(False)


# Query parameters that carry the current data source, job selection and time range along.
CARRY = "${datasource:queryparam}&${job:queryparam}&${__url_time_range}"


def detail_url(dashboard: str, target: str) -> str:
    """URL of a detail dashboard for one target (``dashboard``/``target`` are data-link templates)."""
    return f"/d/{dashboard}?var-target={target}&{CARRY}"


# --- panels -------------------------------------------------------------------------------------------

def _panel(builder: cogbuilder.Builder, title: str, description: str, unit: str, queries: list[Q],
           *, thresholds_config: dm.ThresholdsConfig | None = None, mappings: list | None = None,
           min_value: float | None = None, max_value: float | None = None, decimals: int | None = None,
           no_value: str | None = None, links: list[db.DashboardLink] | None = None):
    """The one place every panel is made: datasource, title, description, unit, ref ids."""
    if not description or not unit or not queries:
        raise ValueError(f"panel {title!r}: a description, a unit and at least one query are required")
    b = builder.title(title).description(description).unit(unit).datasource(DATASOURCE)
    for i, q in enumerate(queries):
        b.with_target(_target(q, chr(ord("A") + i)))
    if thresholds_config is not None:
        b.thresholds(_thresholds_builder(thresholds_config))
    if mappings:
        b.mappings(mappings)
    if min_value is not None:
        b.min(min_value)
    if max_value is not None:
        b.max(max_value)
    if decimals is not None:
        b.decimals(decimals)
    if no_value is not None:
        b.no_value(no_value)
    if links:
        b.data_links(links)
    return b


def timeseries_panel(title: str, description: str, unit: str, queries: list[Q], *,
                     stack: bool = False, bars: bool = False, fill: int = 10,
                     calcs: tuple[str, ...] = ("lastNotNull", "max"), **kw) -> timeseries.Panel:
    """A time series; with thresholds, they are drawn as dashed lines (the alert levels)."""
    b = _panel(timeseries.Panel(), title, description, unit, queries, **kw)
    b.legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.TABLE)
             .placement(cm.LegendPlacement.BOTTOM).show_legend(True).calcs(list(calcs)))
    b.tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    b.line_width(1).fill_opacity(fill).show_points(cm.VisibilityMode.NEVER)
    b.draw_style(cm.GraphDrawStyle.BARS if bars else cm.GraphDrawStyle.LINE)
    if stack:
        b.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    if kw.get("thresholds_config") is not None:
        b.thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.DASHED))
    return b


def stat_panel(title: str, description: str, unit: str, queries: list[Q], *,
               color_mode: cm.BigValueColorMode = cm.BigValueColorMode.BACKGROUND,
               graph: bool = False, **kw) -> stat.Panel:
    """A single figure per series (last value), coloured by thresholds or mappings."""
    b = _panel(stat.Panel(), title, description, unit, queries, **kw)
    b.reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    b.color_mode(color_mode).graph_mode(cm.BigValueGraphMode.AREA if graph else cm.BigValueGraphMode.NONE)
    b.text_mode(cm.BigValueTextMode.AUTO).justify_mode(cm.BigValueJustifyMode.AUTO)
    b.orientation(cm.VizOrientation.AUTO)
    return b


def bargauge_panel(title: str, description: str, unit: str, queries: list[Q], **kw) -> bargauge.Panel:
    """Horizontal bars, one per series, in the order the (instant, sorted) query returns them."""
    b = _panel(bargauge.Panel(), title, description, unit, queries, **kw)
    b.reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    b.display_mode(cm.BarGaugeDisplayMode.BASIC).orientation(cm.VizOrientation.HORIZONTAL)
    b.value_mode(cm.BarGaugeValueMode.COLOR).show_unfilled(True).min_viz_height(16).min_viz_width(8)
    return b


@dataclass(frozen=True)
class Column:
    """One table column: a label (``field`` = label name) or a query's value (``field`` = its ref id)."""

    field: str
    title: str
    unit: str | None = None
    thresholds: dm.ThresholdsConfig | None = None
    mappings: tuple = ()
    cell: str | None = None  # "color-text", "color-background"
    links: tuple[db.DashboardLink, ...] = ()
    hidden: bool = False
    width: int | None = None
    decimals: int | None = None
    extra: tuple[tuple[str, object], ...] = field(default=())


def table_panel(title: str, description: str, unit: str, queries: list[Q], columns: list[Column], *,
                sort_by: str | None = None, descending: bool = False, **kw) -> table.Panel:
    """Instant queries merged into one row per series; ``columns`` orders, names and formats them.

    A query's value field is ``Value #<ref id>`` (or ``Value`` when the panel has one query); other
    fields (labels) keep their names. ``Time`` is dropped; the queries' ``by`` clauses decide which
    label columns exist, and every one of them should be listed here (name, order, format).
    """
    b = _panel(table.Panel(), title, description, unit, queries, **kw)
    refs = {chr(ord("A") + i) for i in range(len(queries))}

    def field_name(col: Column) -> str:
        if col.field in refs:
            return "Value" if len(queries) == 1 else f"Value #{col.field}"
        return col.field

    names = [field_name(c) for c in columns]
    if len(set(names)) != len(names):
        raise ValueError(f"table {title!r}: duplicate columns")
    if len(queries) > 1:
        b.with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
    b.with_transformation(dm.DataTransformerConfig(id_val="organize", options={
        "excludeByName": {"Time": True},
        "indexByName": {name: i for i, name in enumerate(names)},
        "renameByName": {},
    }))
    for col, name in zip(columns, names, strict=True):
        props = [dm.DynamicConfigValue(id_val="displayName", value=col.title)]
        if col.unit:
            props.append(dm.DynamicConfigValue(id_val="unit", value=col.unit))
        if col.decimals is not None:
            props.append(dm.DynamicConfigValue(id_val="decimals", value=col.decimals))
        if col.thresholds is not None:
            props.append(dm.DynamicConfigValue(id_val="thresholds", value=col.thresholds))
        if col.mappings:
            props.append(dm.DynamicConfigValue(id_val="mappings", value=list(col.mappings)))
        if col.cell:
            props.append(dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": col.cell}))
        if col.links:
            props.append(dm.DynamicConfigValue(id_val="links", value=[lk.build() for lk in col.links]))
        if col.hidden:
            props.append(dm.DynamicConfigValue(id_val="custom.hidden", value=True))
        if col.width:
            props.append(dm.DynamicConfigValue(id_val="custom.width", value=col.width))
        props += [dm.DynamicConfigValue(id_val=k, value=v) for k, v in col.extra]
        b.override_by_name(name, props)
    b.show_header(True).cell_height(cm.TableCellHeight.SM)
    b.footer(cb.TableFooterOptions().show(False).reducer(["sum"]).count_rows(False))
    if sort_by:
        b.sort_by([cb.TableSortByFieldState().display_name(sort_by).desc(descending)])
    return b


# --- variables, links, annotations ------------------------------------------------------------------

def query_variable(name: str, label: str, query: str, description: str) -> db.QueryVariable:
    """A multi-value query variable whose All is the regex ``.*``, refreshed on time range change."""
    return (db.QueryVariable(name).id(name).label(label).datasource(DATASOURCE).description(description).query(query)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*")
            .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"])))


def variables(target_selector: str, extra: list[cogbuilder.Builder] = ()) -> list[cogbuilder.Builder]:
    """``datasource``, ``job`` and ``target`` (+ ``extra``); ``target_selector`` limits targets to a store."""
    datasource = (db.DatasourceVariable("datasource").id("datasource").label("Data source").type("prometheus")
                  .description("The Prometheus that scrapes cache-exporter."))
    job = query_variable("job", "Job", "label_values(cache_exporter_build_info, job)",
                         "Prometheus job(s) scraping cache-exporter.")
    target = query_variable("target", "Target", f"label_values({target_selector}, target)",
                            "Targets: the `target` label, the target's name in cache-exporter's config.")
    return [datasource, job, target, *extra]


def dashboard_links(this: str) -> list[db.DashboardLink]:
    """Overview: one link per detail dashboard; details: a link back to the overview. Plus all by tag."""
    others = [k for k in UID if k != this] if this == "overview" else ["overview"]
    out = [db.DashboardLink(TITLE[k].split(" / ", 1)[1]).type(dm.DashboardLinkType.LINK).url(f"/d/{UID[k]}")
           .icon("dashboard").tooltip(f"Open {TITLE[k]}").include_vars(True).keep_time(True)
           .target_blank(False).as_dropdown(False).tags([])
           for k in others]
    out.append(db.DashboardLink("Cache exporter").type(dm.DashboardLinkType.DASHBOARDS).tags([TAG])
               .as_dropdown(True).include_vars(True).keep_time(True).target_blank(False)
               .icon("external link").tooltip("").url(""))
    return out


def alerts_annotation(alert_names: list[str]) -> db.AnnotationQuery:
    """Firing cache-exporter alerts as annotations on every time series."""
    return (db.AnnotationQuery().name("Firing cache alerts").datasource(DATASOURCE).enable(True).hide(False)
            .icon_color("red")
            .expr(firing_alerts(alert_names)))


def alert_regex(alert_names: list[str]) -> str:
    return "|".join(sorted(set(alert_names)))


def firing_alerts(alert_names: list[str], *matchers: str) -> str:
    """``ALERTS`` of our alert names that fire for $job/$target (alerts without a target label match All)."""
    return ("ALERTS{" + ", ".join(('alertstate="firing"', f'alertname=~"{alert_regex(alert_names)}"',
                                   JOB_TARGET, *matchers)) + "}")


# --- layout ------------------------------------------------------------------------------------------

class Grid:
    """Places panels left to right on the 24-column grid, wrapping lines; rows start a new line."""

    def __init__(self) -> None:
        self.items: list[cogbuilder.Builder] = []
        self._x = self._y = self._line = 0

    def _newline(self) -> None:
        if self._x:
            self._y += self._line
        self._x = self._line = 0

    def row(self, title: str) -> Grid:
        self._newline()
        self.items.append(db.Row(title).collapsed(False).id(len(self.items) + 1)
                          .grid_pos(dm.GridPos(h=1, w=GRID_WIDTH, x=0, y=self._y)))
        self._y += 1
        return self

    def add(self, panel: cogbuilder.Builder, w: int, h: int) -> Grid:
        if self._x + w > GRID_WIDTH:
            self._newline()
        panel.id(len(self.items) + 1).grid_pos(dm.GridPos(h=h, w=w, x=self._x, y=self._y))
        self.items.append(panel)
        self._x += w
        self._line = max(self._line, h)
        return self


def dashboard(key: str, description: str, target_selector: str, grid: Grid,
              alert_names: list[str], extra_variables: list[cogbuilder.Builder] = ()) -> dict:
    """The dashboard ``key`` (a ``UID`` key) as a JSON-ready dict."""
    b = (db.Dashboard(TITLE[key]).uid(UID[key]).description(description).tags([TAG])
         .editable().time("now-6h", "now").refresh("1m").timezone("browser")
         .tooltip(dm.DashboardCursorSync.CROSSHAIR).week_start("")
         .variables(variables(target_selector, extra_variables))
         .links(dashboard_links(key))
         .annotations([alerts_annotation(alert_names)]))
    for item in grid.items:
        if isinstance(item, db.Row):
            b.with_row(item)
        else:
            b.with_panel(item)
    return json.loads(json.dumps(b.build(), cls=JSONEncoder))


def render(doc: dict) -> str:
    """The committed form: pretty-printed, sorted keys, trailing newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def override_thresholds(panel: cogbuilder.Builder, regexp: str, config: dm.ThresholdsConfig) -> cogbuilder.Builder:
    """Other thresholds for the series whose display name matches ``regexp`` (e.g. another alert's levels)."""
    return panel.override_by_regexp(regexp, [dm.DynamicConfigValue(id_val="thresholds", value=config)])
