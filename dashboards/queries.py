"""Every PromQL expression of the committed dashboards, with the dashboard variables substituted.

Reads ``dashboards/*.json`` (what users import), needs only the standard library, and is what tests
use to run the dashboards' queries: promtool (tests/test_dashboards.py) and a real Prometheus
(the end-to-end test). Import it as ``dashboards.queries`` from the repository root, or as
``queries`` with ``dashboards/`` on ``sys.path``.

Variables are substituted in every form Grafana accepts: ``$name``, ``${name}``, ``${name:format}``
and ``[[name]]``. By default each query variable (``job``, ``target``, ``url``) becomes its All value
(``.*``) and Grafana's built-ins become fixed durations: ``$__rate_interval`` → ``1m``,
``$__interval`` → ``1m``, ``$__range`` → ``1h``. Names that are not variables (``$1`` in
``label_replace``) are left alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent

BUILTINS: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def dashboards(directory: Path = HERE) -> dict[str, dict]:
    """The committed dashboards by uid."""
    out = {}
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        out[doc["uid"]] = doc
    return out


def iter_panels(doc: dict) -> Iterator[dict]:
    """Every panel, including those inside (collapsed) rows, in order."""
    for panel in doc.get("panels", []):
        yield panel
        yield from panel.get("panels", []) or []


def defaults(doc: dict) -> dict[str, str]:
    """Grafana's built-ins plus each query/custom variable's All value (``.*`` if it has none)."""
    values = dict(BUILTINS)
    for var in doc.get("templating", {}).get("list", []):
        if var.get("type") in ("query", "custom", "textbox", "constant"):
            values[var["name"]] = var.get("allValue") or ".*"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace the variables named in ``values``; leave anything else (``$1``) as it is."""
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return values.get(name, m.group(0))
    return _VARIABLE.sub(repl, expr)


def _values(doc: dict, substitutions: dict[str, str] | None) -> dict[str, str]:
    values = defaults(doc)
    for key, value in (substitutions or {}).items():
        values[key.lstrip("$")] = value
    return values


def panel_queries(substitutions: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expr) for every query of every panel, variables substituted.

    ``substitutions`` maps variable names (``"job"``, ``"target"``, ``"__rate_interval"``; a leading
    ``$`` is accepted) to values, over the defaults described in the module docstring.
    """
    out = []
    for uid, doc in dashboards().items():
        values = _values(doc, substitutions)
        for panel in iter_panels(doc):
            for target in panel.get("targets", []) or []:
                if target.get("expr"):
                    out.append((uid, panel.get("title", ""), substitute(target["expr"], values)))
    return out


def annotation_queries(substitutions: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(dashboard uid, annotation name, expr) for every Prometheus annotation."""
    out = []
    for uid, doc in dashboards().items():
        values = _values(doc, substitutions)
        for ann in doc.get("annotations", {}).get("list", []):
            if ann.get("expr"):
                out.append((uid, ann.get("name", ""), substitute(ann["expr"], values)))
    return out


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*(?P<label>\w+)\s*\)\s*$", re.S)


def variable_selectors(substitutions: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(dashboard uid, variable name, series selector) of every ``label_values(selector, label)`` variable."""
    out = []
    for uid, doc in dashboards().items():
        values = _values(doc, substitutions)
        for var in doc.get("templating", {}).get("list", []):
            query = var.get("query")
            if var.get("type") == "query" and isinstance(query, str) and (m := _LABEL_VALUES.match(query)):
                out.append((uid, var["name"], substitute(m.group("selector"), values)))
    return out
