"""Field tables: how a store's stat field becomes a metric (name, type, parser, first version).

Sources declare tables of ``Field`` built with ``gauge_field``/``counter_field``; declaring
a field also declares its metric family in the catalog.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from exporter import catalog
from exporter.snapshot import MAX_PLAUSIBLE_BYTES

Parser = Callable[[str], float]


def number(raw: str) -> float:
    return float(raw)


def finite(raw: str | None) -> float | None:
    """A finite number, or None (absent, unparseable, nan/inf): for the figures a source
    computes with itself, where one "inf" from a broken server must not break the poll."""
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def plausible_bytes(raw: str | float | None) -> float | None:
    """A byte count a source may compute with: finite and within +/- 1 EiB, else None. The
    sample of the same field is refused (and counted) by ``Samples.add``; this keeps the
    nonsense out of what is derived from it (1e308 - 1e308 = "0 bytes used")."""
    value = finite(raw) if not isinstance(raw, float) else (raw if math.isfinite(raw) else None)
    return value if value is not None and abs(value) <= MAX_PLAUSIBLE_BYTES else None


def status(raw: str) -> float:
    """ok/up/yes/on -> 1, err/down/no/off/fail -> 0 (redis_exporter's convention)."""
    value = raw.strip().lower()
    if value in ("ok", "up", "yes", "true", "on", "1"):
        return 1.0
    if value in ("err", "down", "no", "false", "off", "fail", "0"):
        return 0.0
    raise ValueError(raw)


def scaled(factor: float) -> Parser:
    return lambda raw: float(raw) * factor


def percent(raw: str) -> float:
    return float(raw.rstrip("%")) / 100.0


MICROSECONDS = scaled(1e-6)
MILLISECONDS = scaled(1e-3)


# metric -> the earliest server version in which some field gives it (the metrics reference shows it)
_SINCE: dict[str, str] = {}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@dataclass(frozen=True)
class Field:
    metric: str
    parse: Parser
    since: str  # the server version that introduced the field

    def __post_init__(self) -> None:
        known = _SINCE.get(self.metric)
        if known is None or _version(self.since) < _version(known):
            _SINCE[self.metric] = self.since


def since(metric: str) -> str | None:
    """The earliest server version that reports ``metric`` (None: not read from a field table)."""
    return _SINCE.get(metric)


def gauge_field(group: str, metric: str, help: str, since: str, parse: Parser = number,
                labels: tuple[str, ...] = ()) -> Field:
    catalog.gauge(metric, help, labels, group)
    return Field(metric, parse, since)


def counter_field(group: str, metric: str, help: str, since: str, parse: Parser = number,
                  labels: tuple[str, ...] = ()) -> Field:
    catalog.counter(metric, help, labels, group)
    return Field(metric, parse, since)
