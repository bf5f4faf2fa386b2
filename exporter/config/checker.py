"""How a config is checked: each problem is recorded with its YAML path, and all are reported at once.

A field is read with ``Checker.take(node, key, path, parse, default)``: ``parse`` (see ``values``)
turns the YAML value into the typed one or raises ValueError with the message; ``take`` records
that message at ``path.key`` and goes on, so one run of ``check-config`` lists every problem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.units import UnitError

MAX_PROBLEMS = 100  # stop looking after this many
MISSING: Any = object()  # ``take`` without a default: the key is required


class ConfigError(Exception):
    """One or more problems with a config; ``str()`` has one ``file: path: problem`` line each."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.source}: {path}: {msg}" if path else f"{self.source}: {msg}"
                for path, msg in self.problems]


class TooManyProblems(Exception):
    """Raised by ``Checker.error`` past MAX_PROBLEMS: nobody reads the rest, and aliases can make
    one problem repeat thousands of times (each a difflib lookup or a str() of the value)."""


class Checker:
    """Walks the YAML tree, recording problems with their YAML paths."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[tuple[str, str]] = []
        self.warnings: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append((path, message))
        if len(self.problems) > MAX_PROBLEMS:
            raise TooManyProblems

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{self.source}: {path}: {message}")

    def mapping(self, node: Any, path: str, allowed: set[str]) -> dict[str, Any] | None:
        if node is None:
            return {}
        if not isinstance(node, dict):
            self.error(path, f"expected a mapping, got {kind_of(node)}")
            return None
        for key in node:
            if not isinstance(key, str):
                self.error(path, f"keys must be strings, got {kind_of(key)}")
            elif key not in allowed:
                hint = close_match(key, sorted(allowed))
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.error(join(path, key), f"unknown key{suggestion}; allowed: {', '.join(sorted(allowed))}")
        return node

    def take(self, node: dict[str, Any], key: str, path: str, parse: Callable[[Any], Any],
             default: Any = MISSING) -> Any:
        here = join(path, key)
        if key not in node or node[key] is None:
            if default is MISSING:
                self.error(here, "is required")
                return None
            return default
        try:
            return parse(node[key])
        except (UnitError, ValueError, TypeError) as exc:
            self.error(here, str(exc))
            return default if default is not MISSING else None


def close_match(word: str, choices: list[str]) -> list[str]:
    """The closest of ``choices`` to a misspelt ``word`` (``difflib``, imported only when a
    config has such a mistake), as a list of at most one."""
    import difflib

    return difflib.get_close_matches(word, choices, n=1)


def join(path: str, key: str | int) -> str:
    """The YAML path of ``key`` under ``path``: ``targets[0].url``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def kind_of(node: Any) -> str:
    """What a YAML value is, in the words of a message: ``expected a mapping, got a list``."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "nothing"}.get(type(node), type(node).__name__)
