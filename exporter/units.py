"""Parse the human-friendly sizes and durations that config files use.

Sizes accept IEC (``KiB``, ``MiB``, ``GiB``, ``TiB``), Kubernetes (``Ki``, ``Mi``, ``Gi``,
``Ti``) and SI (``KB``/``K``, ``MB``/``M``, ``GB``/``G``, ``TB``/``T``) suffixes, because
users paste limits from all three worlds (``redis.conf`` says ``2gb``, a pod spec says
``2Gi``). Redis itself treats ``gb`` as 1024**3; we follow the unit as written so that
``2GB`` means 2e9 and ``2GiB`` means 2*1024**3, and say so in docs/configuration.md.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 10**3, "kb": 10**3, "ki": 2**10, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mi": 2**20, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gi": 2**30, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "ti": 2**40, "tib": 2**40,
}

_DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}

MAX_SIZE = 2**60  # 1 EiB: anything larger is a typo, not a memory limit
MAX_DURATION = 10 * 365 * 86400.0

_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")


class UnitError(ValueError):
    """A value that is not a valid size or duration; the message says what is accepted."""


def parse_size(value: object) -> int:
    """Return a byte count for ``2GiB``, ``512Mi``, ``1.5GB``, ``1048576`` or an int."""
    if isinstance(value, bool):
        raise UnitError("expected a size such as 2GiB, 512MiB or a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise UnitError("a size cannot be negative")
        return _bounded_size(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise UnitError("a size must be a finite, non-negative number")
        return _bounded_size(int(value))
    if not isinstance(value, str):
        raise UnitError("expected a size such as 2GiB, 512MiB or a number of bytes")
    match = _NUMBER_UNIT.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise UnitError(
            "expected a size such as 2GiB, 512MiB, 2Gi, 1GB or a number of bytes"
        )
    # Decimal keeps "8.2MB" exactly 8200000 and large integers exact (floats do neither).
    return _bounded_size(int(Decimal(match.group(1)) * _SIZE_UNITS[unit]))


def _bounded_size(size: int) -> int:
    if size > MAX_SIZE:
        raise UnitError("a size must be at most 1 EiB")
    return size


def parse_duration(value: object) -> float:
    """Return seconds for ``15s``, ``500ms``, ``1m30s``, ``1h``, or a plain number of seconds."""
    if isinstance(value, bool):
        raise UnitError("expected a duration such as 15s, 500ms, 1m or 1h")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds) or seconds < 0:
            raise UnitError("a duration must be a finite, non-negative number of seconds")
        return _bounded_duration(seconds)
    if not isinstance(value, str):
        raise UnitError("expected a duration such as 15s, 500ms, 1m or 1h")
    text = value.strip()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", text):
        return _bounded_duration(float(Decimal(text)))
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UnitError("expected a duration such as 15s, 500ms, 1m30s or 1h")
    try:
        total = sum(Decimal(number) * Decimal(str(_DURATION_UNITS[unit])) for number, unit in parts)
    except InvalidOperation:
        raise UnitError("expected a duration such as 15s, 500ms, 1m30s or 1h") from None
    return _bounded_duration(float(total))


def _bounded_duration(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise UnitError("a duration must be at most 10 years")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds compactly for logs and /targets (``15s``, ``1.5s``, ``2m``)."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:g}s"
