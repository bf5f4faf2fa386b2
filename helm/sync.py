#!/usr/bin/env python3
"""Keep the chart in step with its sources: ``python helm/sync.py`` (``--check`` only reports).

1. Copies ``alerts/cache-exporter.rules.yml`` to ``helm/cache-exporter/files/cache-exporter.rules.yml``
   and ``dashboards/*.json`` to ``helm/cache-exporter/files/dashboards/`` byte for byte (and removes
   chart copies whose source is gone). The rules file in ``alerts/`` stays the one source of truth;
   the chart cannot read files outside its directory, hence the copies. ``tests/test_helm.py`` fails
   when they differ.
2. Regenerates the values table of ``helm/cache-exporter/README.md`` from the ``# --`` comments of
   ``values.yaml`` (helm-docs style) and the types of ``values.schema.json``.

Exit status: 0 when everything is (now) in step; with ``--check``, 1 and a list of what is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "cache-exporter"
RULES_SOURCE = REPO / "alerts" / "cache-exporter.rules.yml"
RULES_COPY = CHART / "files" / "cache-exporter.rules.yml"
DASHBOARDS_SOURCE = REPO / "dashboards"
DASHBOARDS_COPY = CHART / "files" / "dashboards"
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
README = CHART / "README.md"
TABLE_START = "<!-- values-table:start -->"
TABLE_END = "<!-- values-table:end -->"


# --- copies -------------------------------------------------------------------------------------

def copies() -> dict[Path, Path]:
    """Chart copy -> source, for every file the chart embeds."""
    pairs = {RULES_COPY: RULES_SOURCE}
    for source in sorted(DASHBOARDS_SOURCE.glob("*.json")):
        pairs[DASHBOARDS_COPY / source.name] = source
    return pairs


def stale_copies() -> list[str]:
    problems = []
    pairs = copies()
    for copy, source in pairs.items():
        if not source.is_file():
            problems.append(f"{source.relative_to(REPO)} is missing")
        elif not copy.is_file() or copy.read_bytes() != source.read_bytes():
            problems.append(f"{copy.relative_to(REPO)} differs from {source.relative_to(REPO)}")
    for extra in sorted(DASHBOARDS_COPY.glob("*.json")):
        if extra not in pairs:
            problems.append(f"{extra.relative_to(REPO)} has no source in dashboards/")
    return problems


def write_copies() -> None:
    pairs = copies()
    DASHBOARDS_COPY.mkdir(parents=True, exist_ok=True)
    for copy, source in pairs.items():
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            copy.write_bytes(source.read_bytes())
    for extra in DASHBOARDS_COPY.glob("*.json"):
        if extra not in pairs:
            extra.unlink()


# --- values documentation -----------------------------------------------------------------------

class Doc(NamedTuple):
    path: str  # dotted key path, e.g. serviceMonitor.interval
    text: str


_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_][A-Za-z0-9_.\-/]*|\"[^\"]+\"):(\s|$)")
_COMMENT = re.compile(r"^(?P<indent> *)#(?P<text>.*)$")


def _lookup(data: Any, parts: list[str]) -> tuple[bool, Any]:
    node = data
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def values_docs(text: str | None = None) -> list[Doc]:
    """The `# --` comments of values.yaml, each attached to the key right below it.

    A doc starts with `# --`; further `#` lines at the same indentation continue it; a blank line
    or any other line ends it. Keys inside lists (the example config) are not chart keys.
    """
    text = VALUES.read_text() if text is None else text
    data = yaml.safe_load(text) or {}
    docs: list[Doc] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    pending_indent = -1
    for line in text.splitlines():
        comment = _COMMENT.match(line)
        if comment:
            body = comment["text"]
            if body.startswith(" --"):
                pending, pending_indent = [body[3:].strip()], len(comment["indent"])
            elif pending is not None and len(comment["indent"]) == pending_indent:
                pending.append(body.strip())
            else:
                pending = None
            continue
        key = _KEY.match(line)
        if not key:
            pending = None
            continue
        indent = len(key["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        name = key["key"].strip('"')
        parts = [k for _, k in stack] + [name]
        found, _ = _lookup(data, parts)
        if found:
            stack.append((indent, name))
            if pending is not None and pending_indent == indent:
                docs.append(Doc(".".join(parts), " ".join(p for p in pending if p)))
        pending = None
    return docs


def leaves(data: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves: scalars, lists and empty maps."""
    if isinstance(data, dict) and data:
        out: list[str] = []
        for key, value in data.items():
            out += leaves(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [prefix]


def undocumented(text: str | None = None) -> list[str]:
    """Leaves of values.yaml without a doc: each leaf needs its own `# --`, unless an ancestor is
    documented as a whole (a documented map none of whose keys is documented, like `config`)."""
    text = VALUES.read_text() if text is None else text
    documented = {d.path for d in values_docs(text)}
    missing = []
    for leaf in leaves(yaml.safe_load(text) or {}):
        if leaf in documented:
            continue
        parts = leaf.split(".")
        ancestors = [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
        owner = next((a for a in ancestors if a in documented), None)
        if owner is None or any(d.startswith(owner + ".") for d in documented):
            missing.append(leaf)
    return missing


def schema_node(schema: dict, path: str) -> dict | None:
    node = schema
    for part in path.split("."):
        props = node.get("properties", {})
        if part not in props:
            return None
        node = props[part]
    return node


def _type_of(node: dict | None, root: dict) -> str:
    if node is None:
        return "?"
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _type_of(target, root)
    if "type" in node:
        t = node["type"]
        return " or ".join(t) if isinstance(t, list) else t
    for combo in ("oneOf", "anyOf"):
        if combo in node:
            return " or ".join(_type_of(n, root) for n in node[combo])
    return "any"


def _default(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": "))
    if len(text) > 70:
        return "see `values.yaml`"
    return f"`{text}`"


def values_table() -> str:
    text = VALUES.read_text()
    data = yaml.safe_load(text)
    schema = json.loads(SCHEMA.read_text())
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for doc in values_docs(text):
        _, value = _lookup(data, doc.path.split("."))
        desc = doc.text.replace("|", "\\|")
        kind = _type_of(schema_node(schema, doc.path), schema)
        rows.append(f"| `{doc.path}` | {kind} | {_default(value)} | {desc} |")
    return "\n".join(rows) + "\n"


def readme_with_table(readme: str) -> str:
    start, end = readme.index(TABLE_START), readme.index(TABLE_END)
    return readme[: start + len(TABLE_START)] + "\n" + values_table() + readme[end:]


# --- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report what is stale; change nothing")
    args = parser.parse_args(argv)
    readme = README.read_text()
    if args.check:
        problems = stale_copies()
        if readme_with_table(readme) != readme:
            problems.append(f"{README.relative_to(REPO)}: the values table is stale")
        problems += [f"values.yaml: {leaf} has no `# --` doc" for leaf in undocumented()]
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python helm/sync.py", file=sys.stderr)
        return 1 if problems else 0
    write_copies()
    README.write_text(readme_with_table(readme))
    missing = undocumented()
    for leaf in missing:
        print(f"values.yaml: {leaf} has no `# --` doc", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
