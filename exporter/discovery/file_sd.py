"""Prometheus ``file_sd`` files: JSON or YAML lists of ``{targets: [...], labels: {...}}``.

Files are globbed and re-read only when the set of files or one's modification time or size
changes, so a refresh every few seconds costs a ``stat`` per file.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import yaml

from exporter.discovery.base import DiscoveryError, Found

MAX_FILE_SIZE = 16 * 2**20  # a file_sd file lists addresses: far larger is a mistake, not a fleet

Signature = tuple[tuple[str, int, int], ...]


def signature(patterns: list[str]) -> Signature:
    """The matched files with their modification times and sizes: what "changed" means."""
    out = []
    for path in sorted({p for pattern in patterns for p in glob.glob(pattern)}):
        try:
            st = os.stat(path)
        except OSError:
            continue  # deleted between glob and stat: gone
        out.append((path, st.st_mtime_ns, st.st_size))
    return tuple(out)


def read(sig: Signature) -> list[Found]:
    """Every entry of every file in ``sig``; raises DiscoveryError naming the file and entry.

    The key of a node is its address: the same address listed twice is one target (the first
    listing, in file name order, wins), as it is one node."""
    found: dict[str, Found] = {}
    for path, _, _ in sig:
        for address, labels in _entries(path):
            found.setdefault(address, Found(address, address, labels))
    return list(found.values())


def _entries(path: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise DiscoveryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_SIZE:
        raise DiscoveryError(f"{path}: larger than {MAX_FILE_SIZE // 2**20} MiB")
    from exporter.config import ConfigError, load_yaml

    try:
        text = raw.decode("utf-8")
        # Prometheus decides by extension too; YAML is a superset of JSON but reports JSON errors worse.
        # The config file's YAML loader: duplicate keys refused, alias bombs refused before they are built.
        document = json.loads(text) if path.endswith(".json") else load_yaml(text, path)
    except ConfigError as exc:
        raise DiscoveryError(str(exc)) from None
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        kind = "JSON" if path.endswith(".json") else "YAML"
        raise DiscoveryError(f"{path}: not valid {kind}{line}: "
                             f"{getattr(exc, 'problem', None) or getattr(exc, 'msg', None) or type(exc).__name__}"
                             ) from None
    if document is None:
        return []  # an empty file lists no targets (a file being written is often empty for a moment)
    if not isinstance(document, list):
        raise DiscoveryError(f"{path}: expected a list of {{targets: [...], labels: {{...}}}} groups")
    out = []
    for i, group in enumerate(document):
        out.extend(_group(path, i, group))
    return out


def _group(path: str, i: int, group: Any) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    where = f"{path}: [{i}]"
    if not isinstance(group, dict) or not set(group) <= {"targets", "labels"}:
        raise DiscoveryError(f"{where}: expected a mapping with targets (a list) and optional labels")
    targets = group.get("targets")
    if not isinstance(targets, list) or not all(isinstance(t, str) and t.strip() for t in targets):
        raise DiscoveryError(f"{where}.targets: expected a list of host:port strings")
    labels = group.get("labels") or {}
    if not isinstance(labels, dict):
        raise DiscoveryError(f"{where}.labels: expected a mapping of label names to values")
    kept = []
    for name, value in labels.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise DiscoveryError(f"{where}.labels: label names and values must be strings")
        if name.startswith("__"):
            continue  # Prometheus' meta labels: dropped before the target exists, as Prometheus does
        kept.append((name, value))
    return [(t.strip(), tuple(sorted(kept))) for t in targets]
