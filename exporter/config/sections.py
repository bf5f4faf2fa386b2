"""The parts of a config that several target types share: the global section and the static
labels, credentials, tls, acknowledge and prefixes blocks of a target."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from exporter.config import rules
from exporter.config.checker import Checker, close_match, join, kind_of
from exporter.config.values import boolean, env_name, int_between, iso_date, positive_duration, positive_size, string
from exporter.labels import FAMILY_LABELS
from exporter.targets import (
    DEFAULT_FORECAST_WINDOW,
    DEFAULT_INTERVAL,
    DEFAULT_MAX_LABEL_VALUE_LENGTH,
    DEFAULT_MAX_REPLY_SIZE,
    DEFAULT_MAX_SERIES,
    DEFAULT_TIMEOUT,
    Acknowledgement,
    Credentials,
    GlobalConfig,
    PrefixView,
    TLSConfig,
)

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Prometheus overwrites these at scrape time (or renames ours to exported_*): refuse them.
SCRAPE_LABELS = frozenset({"job", "instance"})
# What one poll of a target may produce; global defaults, per-target overrides.
LIMIT_KEYS: dict[str, Callable[[Any], int]] = {
    "max_series": int_between(100, 1_000_000),
    "max_label_value_length": int_between(64, 65_536),
}
ACK_KEYS = {"check", "reason", "until"}
MAX_PREFIXES_TOP = 200  # each prefix is a label value
MAX_PREFIX_SAMPLE = 100_000


def global_config(c: Checker, node: Any) -> GlobalConfig:
    g = c.mapping(node, "global", {"interval", "timeout", "labels", "forecast_window",
                                   "reconnect_backoff_max", "max_reply_size", *LIMIT_KEYS})
    if g is None:
        return GlobalConfig()
    if "reconnect_backoff_max" in g:
        c.warn("global.reconnect_backoff_max", "is no longer used and can be removed: a target that is down "
                                               "gets one connection attempt per poll, so it is seen again "
                                               "within one interval of coming back")
    interval = c.take(g, "interval", "global", positive_duration(0.1), DEFAULT_INTERVAL)
    timeout = c.take(g, "timeout", "global", positive_duration(0.05), min(DEFAULT_TIMEOUT, interval))
    rules.timeout_within_interval(c, "global.timeout", timeout, interval)
    return GlobalConfig(
        interval=interval,
        timeout=timeout,
        labels=labels(c, g.get("labels"), "global.labels"),
        forecast_window=c.take(g, "forecast_window", "global", positive_duration(60), DEFAULT_FORECAST_WINDOW),
        max_reply_size=c.take(g, "max_reply_size", "global", positive_size(64 * 1024), DEFAULT_MAX_REPLY_SIZE),
        max_series=c.take(g, "max_series", "global", LIMIT_KEYS["max_series"], DEFAULT_MAX_SERIES),
        max_label_value_length=c.take(g, "max_label_value_length", "global", LIMIT_KEYS["max_label_value_length"],
                                      DEFAULT_MAX_LABEL_VALUE_LENGTH),
    )


def labels(c: Checker, node: Any, path: str) -> tuple[tuple[str, str], ...]:
    """Static labels, sorted; none may be a label some family uses itself (exporter.labels)."""
    if node is None:
        return ()
    if not isinstance(node, dict):
        c.error(path, f"expected a mapping of label names to values, got {kind_of(node)}")
        return ()
    out: list[tuple[str, str]] = []
    for name, value in node.items():
        here = join(path, str(name))
        if not isinstance(name, str) or not _LABEL_NAME.match(name) or name.startswith("__"):
            c.error(here, "label names must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __")
        elif name in SCRAPE_LABELS:
            c.error(here, f"'{name}' is set by Prometheus at scrape time; choose another label name")
        elif name in FAMILY_LABELS:
            c.error(here, f"'{name}' is already a label of some cache-exporter metric; choose another name")
        elif isinstance(value, (dict, list)) or value is None:
            c.error(here, f"label values must be strings, got {kind_of(value)}")
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if len(text) > 1024:
                c.error(here, "label value is longer than 1024 characters")
            else:
                out.append((name, text))
    return tuple(sorted(out))


def credentials(c: Checker, t: dict[str, Any], path: str, username_required: bool) -> Credentials:
    creds = Credentials(
        username=c.take(t, "username", path, string, None),
        password_env=c.take(t, "password_env", path, env_name, None),
        password_file=c.take(t, "password_file", path, string, None),
    )
    rules.credentials(c, path, creds, username_required)
    return creds


def tls(c: Checker, node: Any, path: str) -> TLSConfig | None:
    if node is None:
        return None
    t = c.mapping(node, path, {"ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"})
    if t is None:
        return None
    files: dict[str, str | None] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        value = c.take(t, key, path, string, None)
        if value is not None and not os.access(value, os.R_OK):
            c.error(join(path, key), f"{value} does not exist or is not readable")
        files[key] = value
    rules.key_needs_cert(c, path, files)
    return TLSConfig(
        ca_file=files["ca_file"],
        cert_file=files["cert_file"],
        key_file=files["key_file"],
        server_name=c.take(t, "server_name", path, string, None),
        insecure_skip_verify=c.take(t, "insecure_skip_verify", path, boolean, False),
    )


def acknowledge(c: Checker, node: Any, path: str, target_type: type) -> tuple[Acknowledgement, ...]:
    """``acknowledge: [check, {check: ..., reason: ..., until: YYYY-MM-DD}]``, checked against the
    audit checks that exist for this target type, so a typo cannot silence nothing (or the wrong thing)."""
    from exporter.audit import checks_for

    if node is None:
        return ()
    if not isinstance(node, list):
        c.error(path, f"expected a list of audit check names (or mappings with check, reason, until), "
                      f"got {kind_of(node)}")
        return ()
    known = checks_for(target_type)
    out: list[Acknowledgement] = []
    seen: set[str] = set()
    for i, item in enumerate(node):
        here = join(path, i)
        entry = {"check": item} if isinstance(item, str) else c.mapping(item, here, ACK_KEYS)
        if entry is None:
            continue
        check = c.take(entry, "check", here, string)
        if check is None:
            continue
        if check not in known:
            hint = close_match(check, known)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            c.error(join(here, "check") if isinstance(item, dict) else here,
                    f"unknown audit check {check[:80]!r}{suggestion}; checks for this target type: "
                    f"{', '.join(known) or 'none'}")
            continue
        if check in seen:
            c.error(here, f"{check} is acknowledged twice")
            continue
        seen.add(check)
        reason = c.take(entry, "reason", here, string, None)
        if reason is not None and (len(reason) > 500 or not reason.isprintable()):
            c.error(join(here, "reason"), "must be at most 500 printable characters on one line")
            reason = None
        until = c.take(entry, "until", here, iso_date, None)
        out.append(Acknowledgement(check, reason, until))
    return tuple(out)


def prefix_view(c: Checker, node: Any, path: str, common: dict[str, Any], store: str = "memcached",
                ) -> PrefixView | None:
    budget = "max_bytes" if store == "memcached" else "max_keys"
    p = c.mapping(node, path, {"delimiter", "top", "interval", "max_time", budget})
    if p is None:
        return None
    delimiter = c.take(p, "delimiter", path, string, ":")
    if delimiter is not None and not 1 <= len(delimiter) <= 8:
        c.error(join(path, "delimiter"), "must be 1 to 8 characters, e.g. ':'")
    interval = c.take(p, "interval", path, positive_duration(1.0), max(300.0, common["interval"]))
    rules.prefix_interval(c, path, interval, common)
    max_time = c.take(p, "max_time", path, positive_duration(0.05), min(2.0, common["timeout"] / 2))
    rules.prefix_max_time(c, path, max_time, common)
    return PrefixView(delimiter=delimiter or ":", top=c.take(p, "top", path, int_between(1, MAX_PREFIXES_TOP), 20),
                      interval=interval, max_time=max_time,
                      max_bytes=c.take(p, "max_bytes", path, positive_size(64 * 1024), 64 * 2**20),
                      max_keys=c.take(p, "max_keys", path, int_between(1, MAX_PREFIX_SAMPLE), 1000))
