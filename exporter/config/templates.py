"""Discovery templates (``discover:``) and their expansion into targets.

A template is validated as a target (with a placeholder address where discovery supplies it);
``expand`` turns each discovered node into a target through the same checks as a target
written by hand.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from exporter.config.checker import Checker, TooManyProblems, join, kind_of
from exporter.config.kinds import KINDS, build_target
from exporter.config.sections import SCRAPE_LABELS
from exporter.config.urls import nameserver
from exporter.config.values import int_between, one_of, positive_duration, string
from exporter.labels import FAMILY_LABELS
from exporter.targets import AppTarget, GlobalConfig, MemcachedTarget, RedisTarget, Target, Template

_KIND_KEYS: dict[str, set[str]] = {
    "cluster": {"seeds"}, "sentinel": {"seeds", "master_name"}, "file_sd": {"files"},
    "dns": {"names", "record", "port", "nameserver"}, "elasticache": set(),
}
DISCOVERY_KEYS = {"discover", "refresh_interval"} | {k for keys in _KIND_KEYS.values() for k in keys}
_ADDRESS_KEY = {"redis": "url", "memcached": "address", "app": "url"}
# What a file_sd or DNS template without url/address is validated with (TEST-NET-1: never reached).
_PLACEHOLDER = {"redis": "redis://192.0.2.1:6379", "memcached": "192.0.2.1:11211", "app": "http://192.0.2.1/metrics"}
_SEEDED = ("cluster", "sentinel", "elasticache")  # kinds whose url/address is where discovery starts
# A discovered label whose name a metric family uses itself (role, from Redis Cluster and Sentinel)
# is exported with this prefix: two labels of one name in a series is no valid exposition.
DISCOVERED_PREFIX = "discovered_"


def template(c: Checker, node: dict[str, Any], path: str, glob: GlobalConfig) -> Template | None:
    from exporter.discovery import registry

    kind = node.get("discover")
    here = join(path, "discover")
    if not isinstance(kind, str) or kind not in registry.KINDS:
        c.error(here, f"unknown discovery kind {str(kind)[:40]!r}; supported: {', '.join(registry.KINDS)}")
        return None
    spec = registry.KINDS[kind]
    target_type = node.get("type")
    if isinstance(target_type, str) and target_type in KINDS and target_type not in spec.types:
        c.error(here, f"discover: {kind} finds {' or '.join(spec.types)} targets, not {target_type}")
        return None
    for key in sorted(DISCOVERY_KEYS - {"discover", "refresh_interval"} - _KIND_KEYS[kind]):
        if key in node:
            c.error(join(path, key), f"does not apply to discover: {kind}")
    if not registry.available(kind):
        c.error(here, f"discovery kind {kind} not available in this build")
        return None
    before = len(c.problems)
    refresh = c.take(node, "refresh_interval", path, positive_duration(0.1), spec.default_refresh)
    settings = {k: v for k, v in node.items() if k not in DISCOVERY_KEYS}
    address_key = _ADDRESS_KEY.get(str(target_type), "url")
    probe_node = dict(settings)
    if settings.get(address_key) is None:
        if kind in _SEEDED:
            what = "the configuration endpoint" if kind == "elasticache" else "a seed node"
            c.error(join(path, address_key), f"is required: {what} for discover: {kind}")
            return None
        probe_node[address_key] = _PLACEHOLDER.get(str(target_type), "")
    probe = build_target(c, probe_node, path, glob)
    if probe is None:
        return None
    options = _discovery_options(c, node, path, kind, probe)
    if len(c.problems) != before:
        return None
    return Template(name=probe.name, type=probe.type, kind=kind, refresh_interval=refresh, timeout=probe.timeout,
                    options=options, settings=settings, global_=glob, probe=probe)


def _string_list(c: Checker, node: dict[str, Any], key: str, path: str) -> list[str]:
    here = join(path, key)
    value = node.get(key)
    if value is None:
        c.error(here, "is required")
        return []
    if not isinstance(value, list) or not value:
        c.error(here, f"expected a non-empty list, got {kind_of(value)}")
        return []
    out = []
    for i, item in enumerate(value):
        try:
            out.append(string(item).strip())
        except ValueError as exc:
            c.error(join(here, i), str(exc))
    return out


def _discovery_options(c: Checker, node: dict[str, Any], path: str, kind: str, probe: Target) -> dict[str, Any]:
    from exporter.discovery.dns import RECORDS

    options: dict[str, Any] = {}
    if kind in ("cluster", "sentinel"):
        assert isinstance(probe, RedisTarget)
        if probe.scheme == "unix":
            c.error(join(path, "url"), f"discover: {kind} needs a redis:// or rediss:// seed, not a unix socket")
            return {}
        # As written, not probe.address: that has the data port (6379) filled in, and a Sentinel
        # seed without a port means 26379 to the sentinel kind.
        seeds = [str(node["url"]).strip()]
        for i, seed in enumerate(_string_list(c, node, "seeds", path) if "seeds" in node else []):
            if "@" in seed:
                c.error(join(join(path, "seeds"), i), "credentials in a seed are not allowed; "
                                                      "use username and password_env/password_file")
                continue
            url = seed if "://" in seed else f"{probe.scheme}://{seed}"
            if urlsplit(url).scheme not in (probe.scheme, {"redis": "valkey", "rediss": "valkeys"}[probe.scheme]):
                c.error(join(join(path, "seeds"), i), f"seeds use the url's scheme ({probe.scheme}://)")
                continue
            seeds.append(url)
        options["seeds"] = tuple(dict.fromkeys(seeds))
        if kind == "sentinel" and node.get("master_name") is not None:
            # Without it, every primary the sentinels monitor (SENTINEL MASTERS).
            options["master_name"] = c.take(node, "master_name", path, string)
        return options
    if kind == "file_sd":
        base = os.path.dirname(os.path.abspath(c.source)) if os.path.isfile(c.source) else ""
        # Relative globs are relative to the config file, as in Prometheus.
        return {"files": tuple(os.path.join(base, f) for f in _string_list(c, node, "files", path))}
    if kind == "dns":
        record = c.take(node, "record", path, one_of(RECORDS), "A")
        options["names"] = tuple(_string_list(c, node, "names", path))
        options["record"] = record
        if record == "SRV":
            if "port" in node:
                c.error(join(path, "port"), "does not apply to SRV records: each record carries its port")
        else:
            options["port"] = c.take(node, "port", path, int_between(1, 65535))
        if node.get("nameserver") is not None:
            options["nameserver"] = c.take(node, "nameserver", path, nameserver)
        return options
    if isinstance(probe, MemcachedTarget) and probe.path:  # elasticache
        c.error(join(path, "address"), "the configuration endpoint is host:port, not a unix socket")
    return options


def _with_address(template: Template, address: str) -> str:
    """The template's url/address with the discovered node's ``host:port`` in it."""
    probe = template.probe
    if isinstance(probe, RedisTarget):
        return f"{probe.scheme}://{address}" + (f"/{probe.db}" if probe.db else "")
    if isinstance(probe, AppTarget):
        return f"{probe.scheme}://{address}{probe.path}"
    return address


def expand(template: Template, found: list[Any]) -> tuple[Target, ...]:
    """One target per discovered node: the template's settings with the node's address, the name
    ``<template>/<key>`` and the node's labels, validated by the code that validates a target
    written by hand. Raises DiscoveryError (every node's problem, no secret) if any is invalid."""
    from exporter.discovery.base import DiscoveryError

    c = Checker(f"discovery {template.name}")
    reserved = FAMILY_LABELS | SCRAPE_LABELS
    address_key = _ADDRESS_KEY[template.type]
    out: list[Target] = []
    try:
        for f in found:
            node = dict(template.settings)
            node["name"] = f"{template.name}/{f.key}"
            node[address_key] = _with_address(template, f.address)
            labels = dict(template.settings.get("labels") or {})
            for name, value in f.labels:
                # file_sd labels are the operator's: a clash is their error, reported by sections.labels.
                if template.kind != "file_sd" and name in reserved:
                    name = DISCOVERED_PREFIX + name
                labels[name] = value
            node["labels"] = labels
            target = build_target(c, node, f"node {f.key}", template.global_)
            if target is not None:
                out.append(target)
    except TooManyProblems:
        pass
    except Exception as exc:  # a bug must cost this refresh, never the last good list or the thread
        raise DiscoveryError(f"cannot build targets: internal error {type(exc).__name__}") from None
    if c.problems:
        shown = "; ".join(f"{p}: {m}" if p else m for p, m in c.problems[:5])
        more = f" (and {len(c.problems) - 5} more)" if len(c.problems) > 5 else ""
        raise DiscoveryError(f"invalid discovered targets: {shown}{more}")
    return tuple(out)
