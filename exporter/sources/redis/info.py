"""The INFO parser: a reply split into plain fields, section names and composite lines
(``db0:``, ``cmdstat_*``, ``errorstat_*``, ``slaveN:``, each with its handler); and the
CONFIG GET reply reduced to the settings kept."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from exporter import errors as E
from exporter.errors import PollError
from exporter.snapshot import Samples
from exporter.sources.redis.tables import (
    CMD_CALLS,
    CMD_DURATION,
    CMD_FAILED,
    CMD_REJECTED,
    CONFIG_KEYS,
    DB_AVG_TTL,
    DB_KEYS,
    DB_KEYS_EXPIRING,
    ERRORS,
    SLAVE_LAG,
    SLAVE_OFFSET,
)


def _kv(raw: str) -> dict[str, str]:
    """``keys=1,expires=0,avg_ttl=0`` -> dict; tolerant of junk between commas."""
    out: dict[str, str] = {}
    for part in raw.split(","):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _keyspace(name: str, raw: str, out: Samples) -> None:
    kv = _kv(raw)
    labels = (("db", name),)
    out.add(DB_KEYS, float(kv["keys"]), labels)
    out.add(DB_KEYS_EXPIRING, float(kv.get("expires", "0")), labels)
    if "avg_ttl" in kv:
        out.add(DB_AVG_TTL, float(kv["avg_ttl"]) / 1000.0, labels)


def _cmdstat(name: str, raw: str, out: Samples) -> None:
    kv = _kv(raw)
    labels = (("cmd", name.removeprefix("cmdstat_")),)
    out.add(CMD_CALLS, float(kv["calls"]), labels)
    out.add(CMD_DURATION, float(kv.get("usec", "0")) / 1e6, labels)
    if "rejected_calls" in kv:  # 6.2+
        out.add(CMD_REJECTED, float(kv["rejected_calls"]), labels)
        out.add(CMD_FAILED, float(kv.get("failed_calls", "0")), labels)


def _errorstat(name: str, raw: str, out: Samples) -> None:
    out.add(ERRORS, float(_kv(raw)["count"]), (("err", name.removeprefix("errorstat_")),))


def _slave(name: str, raw: str, out: Samples) -> None:
    kv = _kv(raw)
    labels = (("slave_ip", kv.get("ip", "")), ("slave_port", kv.get("port", "")),
              ("slave_state", kv.get("state", "")))
    out.add(SLAVE_OFFSET, float(kv["offset"]), labels)
    if "lag" in kv:
        out.add(SLAVE_LAG, float(kv["lag"]), labels)


@dataclass(frozen=True)
class Composite:
    """A kind of INFO line whose value holds several fields (``db0:keys=1,expires=0``)."""

    pattern: str
    handler: Callable[[str, str, Samples], None]
    families: tuple[str, ...]  # what one line adds, for counting the lines skipped past the series cap


COMPOSITE_LINES: list[Composite] = [
    Composite(r"db\d+", _keyspace, (DB_KEYS, DB_KEYS_EXPIRING, DB_AVG_TTL)),
    Composite(r"cmdstat_.+", _cmdstat, (CMD_CALLS, CMD_DURATION, CMD_REJECTED, CMD_FAILED)),
    Composite(r"errorstat_.+", _errorstat, (ERRORS,)),
    Composite(r"slave\d+", _slave, (SLAVE_OFFSET, SLAVE_LAG)),
]
# One alternation, one match per line: group n is COMPOSITE_LINES[n - 1].
_COMPOSITE = re.compile("|".join(f"({c.pattern})" for c in COMPOSITE_LINES))
# The patterns' literal starts: the other ~150 lines of a reply skip the regex.
# (A pattern that began with a metacharacter would give "", which every line starts with: slower, still right.)
_COMPOSITE_STARTS = tuple(re.split(r"[\\.\[(]", c.pattern, maxsplit=1)[0] for c in COMPOSITE_LINES)


@dataclass
class Info:
    fields: dict[str, str]
    sections: set[str]
    composite: list[tuple[Composite, str, str]]


def parse_info(text: str) -> Info:
    """Split an INFO reply into plain fields, section names and composite lines."""
    fields: dict[str, str] = {}
    sections: set[str] = set()
    composite: list[tuple[Composite, str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            sections.add(line.lstrip("# ").lower())
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        kind = _COMPOSITE.fullmatch(key) if key.startswith(_COMPOSITE_STARTS) else None
        if kind is not None and kind.lastindex is not None:  # a match of the alternation has a group
            composite.append((COMPOSITE_LINES[kind.lastindex - 1], key, value))
        else:
            fields[key] = value
    if "used_memory" not in fields or "redis_version" not in fields:
        hint = " (a Sentinel has no memory section)" if fields.get("redis_mode") == "sentinel" else ""
        raise PollError(E.PROTOCOL, f"INFO reply lacks redis_version/used_memory{hint}")
    return Info(fields, sections, composite)


def config_dict(reply: object) -> dict[str, str]:
    """CONFIG GET reply (flat list in RESP2, map in RESP3) -> {name: value}."""
    def text(v: object) -> str:
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    if isinstance(reply, dict):
        pairs = list(reply.items())
    elif isinstance(reply, list):
        pairs = [(reply[i], reply[i + 1]) for i in range(0, len(reply) - 1, 2)]
    else:
        return {}
    return {key: text(v)[:1024] for k, v in pairs if (key := text(k)) in CONFIG_KEYS}
