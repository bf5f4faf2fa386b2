"""Parsers of single YAML values, for ``Checker.take``: each returns the typed value or raises
ValueError whose text is the message shown after the value's YAML path."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from exporter.config.checker import kind_of
from exporter.units import format_duration, parse_duration, parse_size

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {kind_of(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {kind_of(value)}")
    return value


def at_least(parse: Callable[[Any], float], minimum: float, shown: str) -> Callable[[Any], Any]:
    def checked(value: Any) -> Any:
        parsed = parse(value)
        if parsed < minimum:
            raise ValueError(f"must be at least {shown}")
        return parsed
    return checked


def positive_duration(minimum: float) -> Callable[[Any], float]:
    return at_least(parse_duration, minimum, format_duration(minimum))


def positive_size(minimum: int) -> Callable[[Any], int]:
    return at_least(parse_size, minimum, f"{minimum} bytes")


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of: {', '.join(choices)}")
        return str(value)
    return parse


def int_between(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value
    return parse


def env_name(value: Any) -> str:
    name = string(value)
    if not _ENV_NAME.match(name):
        raise ValueError("must be an environment variable name such as REDIS_PASSWORD")
    return name


def target_name(value: Any) -> str:
    name = string(value)
    if len(name) > 200 or not name.isprintable():
        raise ValueError("must be at most 200 printable characters")
    return name


def iso_date(value: Any) -> datetime.date:
    # YAML reads an unquoted 2027-01-31 as a date, a quoted one as a string: accept both, nothing else.
    if isinstance(value, datetime.datetime):
        raise ValueError("expected a date (YYYY-MM-DD), not a date and time")
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a date as YYYY-MM-DD, got {kind_of(value)}")


def json_path(value: Any) -> str:
    text = string(value)
    if not re.fullmatch(r"[^.\s]+(\.[^.\s]+)*", text):
        raise ValueError("expected a dotted path into the JSON body, e.g. memory.heapUsed")
    return text
