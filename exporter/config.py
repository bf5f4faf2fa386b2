"""Load a YAML config file into validated targets; every problem names file, YAML path and fix.

All problems are collected before failing, so one run of ``check-config`` lists them all.
Missing secrets (unset ``password_env``, unreadable ``password_file``) are warnings, not
errors: secrets are often mounted after start, and one target's missing secret must not
stop the others from being monitored — that target reports ``cache_up 0`` with
``reason="config"`` until the secret appears.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

import exporter.sources  # noqa: F401  (declares every family, hence every reserved label)
from exporter import catalog
from exporter.targets import (
    DEFAULT_FORECAST_WINDOW,
    DEFAULT_INTERVAL,
    DEFAULT_LISTEN,
    DEFAULT_MAX_LABEL_VALUE_LENGTH,
    DEFAULT_MAX_REPLY_SIZE,
    DEFAULT_MAX_SERIES,
    DEFAULT_PROBE_INTERVAL,
    DEFAULT_TIMEOUT,
    EVICTS_AT_LIMIT,
    V8_YOUNG_GENERATION_RESERVE,
    Acknowledgement,
    AppTarget,
    Bypass,
    Config,
    Credentials,
    GlobalConfig,
    HttpCacheTarget,
    ManagedStore,
    MemcachedTarget,
    PrefixView,
    ProbeURL,
    RedisTarget,
    Target,
    Template,
    TLSConfig,
)
from exporter.units import UnitError, format_duration, parse_duration, parse_size

MAX_CONFIG_SIZE = 1 * 2**20
BUILTIN = "<built-in default>"
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Prometheus overwrites these at scrape time (or renames ours to exported_*): refuse them.
_SCRAPE_LABELS = {"job", "instance"}
_MISSING = object()


class ConfigError(Exception):
    """One or more problems with a config; ``str()`` has one ``file: path: problem`` line each."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.source}: {path}: {msg}" if path else f"{self.source}: {msg}"
                for path, msg in self.problems]


@dataclass
class LoadResult:
    config: Config
    warnings: list[str] = field(default_factory=list)


class _TooManyProblems(Exception):
    """Raised by ``_Checker.error`` past MAX_PROBLEMS: nobody reads the rest, and aliases can make
    one problem repeat thousands of times (each a difflib lookup or a str() of the value)."""


class _Checker:
    """Walks the YAML tree, recording problems with their YAML paths."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[tuple[str, str]] = []
        self.warnings: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append((path, message))
        if len(self.problems) > MAX_PROBLEMS:
            raise _TooManyProblems

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{self.source}: {path}: {message}")

    def mapping(self, node: Any, path: str, allowed: set[str]) -> dict[str, Any] | None:
        if node is None:
            return {}
        if not isinstance(node, dict):
            self.error(path, f"expected a mapping, got {_kind(node)}")
            return None
        for key in node:
            if not isinstance(key, str):
                self.error(path, f"keys must be strings, got {_kind(key)}")
            elif key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.error(_join(path, key), f"unknown key{suggestion}; allowed: {', '.join(sorted(allowed))}")
        return node

    def take(self, node: dict[str, Any], key: str, path: str, parse: Callable[[Any], Any],
             default: Any = _MISSING) -> Any:
        here = _join(path, key)
        if key not in node or node[key] is None:
            if default is _MISSING:
                self.error(here, "is required")
                return None
            return default
        try:
            return parse(node[key])
        except (UnitError, ValueError, TypeError) as exc:
            self.error(here, str(exc))
            return default if default is not _MISSING else None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(node: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "nothing"}.get(type(node), type(node).__name__)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_kind(value)}")
    return value


def _at_least(parse: Callable[[Any], float], minimum: float, shown: str) -> Callable[[Any], Any]:
    def checked(value: Any) -> Any:
        parsed = parse(value)
        if parsed < minimum:
            raise ValueError(f"must be at least {shown}")
        return parsed
    return checked


def _positive_duration(minimum: float) -> Callable[[Any], float]:
    return _at_least(parse_duration, minimum, format_duration(minimum))


def _positive_size(minimum: int) -> Callable[[Any], int]:
    return _at_least(parse_size, minimum, f"{minimum} bytes")


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of: {', '.join(choices)}")
        return value
    return parse


def _env_name(value: Any) -> str:
    name = _string(value)
    if not _ENV_NAME.match(name):
        raise ValueError("must be an environment variable name such as REDIS_PASSWORD")
    return name


# Aliases let a few hundred bytes of YAML stand for billions of nodes ("billion laughs").
# PyYAML builds each anchored node once and shares it, but everything that walks the
# document afterwards (our checks, str() in a message) pays for the expanded size. So the
# node graph is measured before anything is built: aliases may add at most this many nodes,
# and this many characters of scalars, to what the file spells out. Without aliases a
# document is bounded by MAX_CONFIG_SIZE instead. Real configs use aliases for shared
# defaults (`<<: *defaults`): 1000 targets merging a 20-node, 500-character block add 20,000
# nodes and 0.5 MB; the limits leave 5x and 8x headroom, and checking the largest document
# they admit takes well under a second.
MAX_ALIAS_NODES = 100_000
MAX_ALIAS_CHARS = 4 * 2**20
MAX_PROBLEMS = 100  # stop looking after this many
# A config nests 4 levels (targets[0].caches.users.hits). Deeper nesting costs PyYAML's scanner
# time quadratic in the depth of [ and { (a 6 kB line of "[" took a second) and its composer a
# Python stack frame per level, so it is refused as it is read.
MAX_NESTING = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_INT_TAG = "tag:yaml.org,2002:int"
_SATURATE = 2**62  # expanded counts stop growing here: an alias bomb must not cost big-int arithmetic


class _TooManyDigits:
    """Stands in for an integer too long for Python to read (``sys.get_int_max_str_digits()``).

    Built instead of failing inside PyYAML, so that the document walk can report it with its
    YAML path rather than only a line number.
    """

    def __init__(self, digits: int, mark: yaml.Mark) -> None:
        self.digits = digits
        self.line = mark.line + 1

    def __repr__(self) -> str:
        return f"<a number with {self.digits} digits>"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last,
    and that reports any value it cannot build as a YAML error at the value's line."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._flattened: set[yaml.MappingNode] = set()
        self._depth = 0

    def fetch_flow_collection_start(self, TokenClass: type) -> None:  # noqa: N803 - PyYAML's name
        if self.flow_level >= MAX_NESTING:
            raise yaml.scanner.ScannerError(None, None, f"nested deeper than {MAX_NESTING} levels", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_NESTING} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Check ``node``'s own keys for duplicates, then resolve its merge keys (``<<: *t``).

        Replaces PyYAML's version, which checks nothing, and in which the precedence among
        merged mappings depends on the PyYAML release (6.0.4 lets the later one win). YAML's
        merge key type: a key written in the mapping wins over a merged one, and of
        ``<<: [*a, *b]`` the earlier mapping wins. Only keys written in the same mapping are
        duplicates. Runs once per node: PyYAML calls it for each mapping it builds and for each
        mapping merged into another, in no fixed order, and it rewrites ``node.value`` to
        include the merged pairs.
        """
        if node in self._flattened:
            return
        self._flattened.add(node)
        own: list[tuple[yaml.Node, yaml.Node]] = []
        merged: list[yaml.MappingNode] = []
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"expected a mapping or a list of mappings to merge, but found {source.id}",
                            source.start_mark)
                    self.flatten_mapping(source)
                    merged.append(source)
                continue
            if key_node.tag == _VALUE_TAG:  # the `=` key: PyYAML reads it as the string "="
                key_node.tag = "tag:yaml.org,2002:str"
            own.append((key_node, value_node))
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node)
                if isinstance(key, (str, int, float, bool)):
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {_shown(key)}", key_node.start_mark)
                    seen.add(key)
        if merged:
            # The mapping is built from these pairs in order, a later pair replacing an earlier.
            node.value = [pair for source in reversed(merged) for pair in source.value] + own

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception:
            # e.g. `!!int ""` (IndexError), `2001-02-30` (ValueError), `!!bool maybe` (KeyError).
            # The value is not quoted: it may be a secret.
            kind = node.tag.rsplit(":", 1)[-1] if node.tag.startswith("tag:yaml.org,2002:") else node.tag
            raise yaml.constructor.ConstructorError(
                None, None, f"this value cannot be read as {kind[:40]}", node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            digits = sum(ch.isdigit() for ch in node.value)
            if digits > sys.get_int_max_str_digits() > 0:
                return _TooManyDigits(digits, node.start_mark)
            raise


_UniqueKeyLoader.add_constructor(_INT_TAG, _UniqueKeyLoader.construct_yaml_int)


def _check_expansion(root: yaml.Node) -> tuple[str, str] | None:
    """Where and why the node graph under ``root`` is refused (a cycle, or aliases adding too
    much), or None.

    Linear in the distinct nodes and edges: each node's expanded size is computed once,
    from its children's, and remembered by identity.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded scalar characters)
    open_: set[int] = set()  # nodes whose children are being measured: the path from the root
    distinct_nodes = distinct_chars = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            nodes, chars = 1, 0
            for child in _children(node):
                child_nodes, child_chars = sizes[id(child)]
                nodes += child_nodes
                chars += child_chars
            sizes[key] = (min(nodes, _SATURATE), min(chars, _SATURATE))
            open_.discard(key)
            continue
        if key in sizes:
            continue
        if key in open_:
            mark = node.start_mark
            return (f"line {mark.line + 1}, column {mark.column + 1}",
                    "an alias inside this anchored node refers to the node itself (a recursive alias); "
                    "a config cannot be recursive")
        if isinstance(node, yaml.ScalarNode):
            distinct_nodes += 1
            distinct_chars += len(node.value)
            sizes[key] = (1, len(node.value))
            continue
        distinct_nodes += 1
        open_.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    nodes, chars = sizes[id(root)]
    if nodes - distinct_nodes > MAX_ALIAS_NODES:
        return "", f"the YAML expands to more than {MAX_ALIAS_NODES} extra nodes through aliases (an alias bomb?)"
    if chars - distinct_chars > MAX_ALIAS_CHARS:
        return "", (f"the YAML expands to more than {MAX_ALIAS_CHARS // 2**20} MiB of extra text through aliases "
                    "(an alias bomb?)")
    return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_config(path: str) -> LoadResult:
    """Read and validate ``path``; raises ConfigError (with every problem) on failure, nothing else."""
    with _only_config_errors(path):
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_CONFIG_SIZE + 1)
        except OSError as exc:
            raise ConfigError(path, [("", f"cannot read config file: {exc.strerror or exc}")]) from None
        if len(raw) > MAX_CONFIG_SIZE:
            raise ConfigError(path, [("", "config file is larger than 1 MiB")])
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(path, [("", f"config file is not UTF-8 (byte {exc.start})")]) from None
        return parse_config(text, path)


def parse_config(text: str, source: str) -> LoadResult:
    """Validate YAML text; ``source`` names it in messages. Raises ConfigError, nothing else."""
    with _only_config_errors(source):
        try:
            document = _load_yaml(text, source)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(source, [(where, f"invalid YAML: {problem}")]) from None
        except RecursionError:
            raise ConfigError(source, [("", "invalid YAML: nesting too deep")]) from None
        return build_config(document, source)


def _load_yaml(text: str, source: str) -> Any:
    """The document in ``text``, refused before it is built if aliases would blow it up."""
    loader = _UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        problem = _check_expansion(root)
        if problem:
            raise ConfigError(source, [problem])
        return loader.construct_document(root)
    finally:
        loader.dispose()


@contextmanager
def _only_config_errors(source: str) -> Iterator[None]:
    """The last line of defence: whatever escapes the checks becomes a ConfigError.

    A bug here must cost one rejected config, never a crashed reload or a traceback from
    ``check-config``. The message names the exception type and the code line, never the
    exception text: that may quote a value from the file, and a value may be a secret.
    """
    try:
        yield
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(source, [("", "nesting too deep")]) from None
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
        raise ConfigError(source, [("", f"cannot be loaded: internal error {type(exc).__name__}{where} "
                                        "(please report this)")]) from None


def build_config(document: Any, source: str) -> LoadResult:
    """Validate an already-parsed document (used by tests and the built-in default).

    Raises ConfigError, nothing else."""
    with _only_config_errors(source):
        return _build_config(document, source)


def _build_config(document: Any, source: str) -> LoadResult:
    c = _Checker(source)
    if document is None:
        raise ConfigError(source, [("", "config is empty; it needs a 'targets' list")])
    try:
        _check_values(c, document)
        if c.problems:
            raise ConfigError(source, c.problems)
        return _validate(c, document, source)
    except _TooManyProblems:
        shown = c.problems[:MAX_PROBLEMS]
        raise ConfigError(source, [*shown, ("", f"more problems not shown (stopped after {MAX_PROBLEMS})")]) from None


def _validate(c: _Checker, document: Any, source: str) -> LoadResult:
    top = c.mapping(document, "", {"global", "targets"})
    if top is None:
        raise ConfigError(source, c.problems)
    glob = _global(c, top.get("global"))
    targets: list[Target] = []
    templates: list[Template] = []
    raw_targets = top.get("targets")
    if not isinstance(raw_targets, list):
        c.error("targets", "is required and must be a list of targets"
                if raw_targets is None else f"expected a list, got {_kind(raw_targets)}")
    elif not raw_targets:
        c.error("targets", "must list at least one target")
    else:
        names: dict[str, int] = {}
        for i, node in enumerate(raw_targets):
            if isinstance(node, dict) and "discover" in node:
                template = _template(c, node, _join("targets", i), glob)
                if template is not None:
                    if template.name in names:
                        c.error(_join(_join("targets", i), "name"), f"duplicate target name '{template.name}' "
                                                                    f"(also targets[{names[template.name]}])")
                    else:
                        names[template.name] = i
                        templates.append(template)
                continue
            target = _target(c, node, _join("targets", i), glob)
            if target is None:
                continue
            if target.name in names:
                c.error(_join(_join("targets", i), "name"),
                        f"duplicate target name '{target.name}' (also targets[{names[target.name]}])")
                continue
            names[target.name] = i
            targets.append(target)
        for template in templates:
            for target in targets:
                # Discovered targets are named <template>/<key>: a static one must not take such a name.
                if target.name.startswith(template.name + "/"):
                    c.error(_join(_join("targets", names[target.name]), "name"),
                            f"'{target.name}' is in the namespace of the discovery template '{template.name}' "
                            f"(its targets are named {template.name}/...); choose another name")
    if c.problems:
        raise ConfigError(source, c.problems)
    return LoadResult(Config(glob, tuple(targets), source, tuple(templates)), c.warnings)


def _check_values(c: _Checker, document: Any) -> None:
    """Refuse, at their YAML paths, values no later check or renderer should ever see.

    Strings with NUL (the OS refuses it in a path, Prometheus in a label) or with characters
    that have no UTF-8 form (unpaired surrogates, from YAML's "\\ud800" escape); integers too
    long for Python to print. Keys too. Each distinct object is looked at once, so an object
    shared through aliases costs one visit; the first path it is found at names it.
    """
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if id(node) in seen:
                continue
            seen.add(id(node))
            items = list(node.items())
            for key, value in reversed(items):  # reversed: problems come out in document order
                problem = _bad_value(key, seen)
                if problem:
                    c.error(_join(path, _shown_key(key)), f"this key {problem}")
                else:
                    stack.append((value, _join(path, str(key))))
        elif isinstance(node, (list, tuple, set, frozenset)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            items = list(node)
            stack.extend((item, _join(path, i)) for i, item in reversed(list(enumerate(items))))
        else:
            problem = _bad_value(node, seen)
            if problem:
                c.error(path, problem)


def _bad_value(value: Any, seen: set[int]) -> str | None:
    """What is wrong with a scalar (None if nothing); ``seen`` remembers strings found clean."""
    if isinstance(value, str):
        if id(value) in seen or value.isascii() and "\0" not in value:
            return None
        if "\0" in value:
            return "contains a NUL character (\\0)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"contains U+{ord(value[exc.start]):04X}, which is not a character (an unpaired surrogate); "
                    "it cannot be written as UTF-8")
        seen.add(id(value))
    elif isinstance(value, _TooManyDigits):
        return (f"is a number with too many digits ({value.digits}; at most {sys.get_int_max_str_digits()} "
                f"can be read), on line {value.line}")
    elif isinstance(value, int) and value.bit_length() > 10_000:
        try:
            str(value)
        except ValueError:
            return f"is a number with too many digits; at most {sys.get_int_max_str_digits()} can be read"
    return None


def _shown_key(key: Any) -> str:
    """A bad key for a YAML path, what cannot be printed escaped (keys are names, not secrets)."""
    if isinstance(key, str):
        text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in key[:60])
        return text + ("..." if len(key) > 60 else "")
    return "<a number>"


def _shown(key: Any) -> str:
    """``repr`` of a key for a message, printable even if the key holds a surrogate or a newline."""
    if isinstance(key, int) and not isinstance(key, bool) and key.bit_length() > 10_000:
        return "(a very long number)"
    return ascii(key)[:200] if isinstance(key, str) and not key.isprintable() else repr(key)[:200]


def _int_between(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value
    return parse


# What one poll of a target may produce; global defaults, per-target overrides.
_LIMIT_KEYS: dict[str, Callable[[Any], int]] = {
    "max_series": _int_between(100, 1_000_000),
    "max_label_value_length": _int_between(64, 65_536),
}


def _global(c: _Checker, node: Any) -> GlobalConfig:
    g = c.mapping(node, "global", {"interval", "timeout", "labels", "forecast_window",
                                   "reconnect_backoff_max", "max_reply_size", *_LIMIT_KEYS})
    if g is None:
        return GlobalConfig()
    if "reconnect_backoff_max" in g:
        c.warn("global.reconnect_backoff_max", "is no longer used and can be removed: a target that is down "
                                               "gets one connection attempt per poll, so it is seen again "
                                               "within one interval of coming back")
    interval = c.take(g, "interval", "global", _positive_duration(0.1), DEFAULT_INTERVAL)
    timeout = c.take(g, "timeout", "global", _positive_duration(0.05), min(DEFAULT_TIMEOUT, interval))
    if timeout > interval:
        c.error("global.timeout", f"({format_duration(timeout)}) must not exceed interval "
                                  f"({format_duration(interval)}): polls would pile up")
    return GlobalConfig(
        interval=interval,
        timeout=timeout,
        labels=_labels(c, g.get("labels"), "global.labels"),
        forecast_window=c.take(g, "forecast_window", "global", _positive_duration(60), DEFAULT_FORECAST_WINDOW),
        max_reply_size=c.take(g, "max_reply_size", "global", _positive_size(64 * 1024), DEFAULT_MAX_REPLY_SIZE),
        max_series=c.take(g, "max_series", "global", _LIMIT_KEYS["max_series"], DEFAULT_MAX_SERIES),
        max_label_value_length=c.take(g, "max_label_value_length", "global", _LIMIT_KEYS["max_label_value_length"],
                                      DEFAULT_MAX_LABEL_VALUE_LENGTH),
    )


def _labels(c: _Checker, node: Any, path: str) -> tuple[tuple[str, str], ...]:
    if node is None:
        return ()
    if not isinstance(node, dict):
        c.error(path, f"expected a mapping of label names to values, got {_kind(node)}")
        return ()
    reserved = catalog.label_names()
    out: list[tuple[str, str]] = []
    for name, value in node.items():
        here = _join(path, str(name))
        if not isinstance(name, str) or not _LABEL_NAME.match(name) or name.startswith("__"):
            c.error(here, "label names must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __")
        elif name in _SCRAPE_LABELS:
            c.error(here, f"'{name}' is set by Prometheus at scrape time; choose another label name")
        elif name in reserved:
            c.error(here, f"'{name}' is already a label of some cache-exporter metric; choose another name")
        elif isinstance(value, (dict, list)) or value is None:
            c.error(here, f"label values must be strings, got {_kind(value)}")
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if len(text) > 1024:
                c.error(here, "label value is longer than 1024 characters")
            else:
                out.append((name, text))
    return tuple(sorted(out))


_MEMORY_KEYS = ("memory_limit", "role", "acknowledge")  # about the memory a target holds
_COMMON_KEYS = {"name", "type", "labels", "interval", "timeout", *_MEMORY_KEYS, *_LIMIT_KEYS}
ROLES = ("cache", "database")
_CREDENTIAL_KEYS = {"username", "password_env", "password_file"}
TargetBuilder = Callable[["_Checker", dict[str, Any], str, dict[str, Any]], Target | None]


@dataclass(frozen=True)
class _Kind:
    """What one target type adds to the common keys, and how its target is built."""

    keys: frozenset[str]
    build: TargetBuilder
    # False for a probe of someone else's cache: memory_limit and role mean nothing there.
    holds_memory: bool = True
    default_interval: float | None = None  # None: global.interval


MAX_PROBE_URLS = 50  # each URL is a label value: keep the series count bounded
APP_RUNTIMES = ("auto", "nodejs", "nodejs-otel", "jvm", "go", "python", "process")
APP_JSON_FIELDS = ("heap_used", "heap_limit", "gc_seconds", "resident")
APP_CACHE_COUNTERS = ("hits", "misses", "evictions", "items", "errors")


def _target(c: _Checker, node: Any, path: str, glob: GlobalConfig) -> Target | None:
    if not isinstance(node, dict):
        c.error(path, f"expected a mapping describing a target, got {_kind(node)}")
        return None
    kind = node.get("type")
    if not isinstance(kind, str) or kind not in _KINDS:
        c.error(_join(path, "type"), "is required" if kind is None else
                f"unknown target type {kind!r}; supported: {', '.join(sorted(_KINDS))}")
        return None
    spec = _KINDS[kind]
    t = c.mapping(node, path, _COMMON_KEYS | spec.keys)
    if t is None:
        return None
    before = len(c.problems)
    name = c.take(t, "name", path, _target_name)
    if not spec.holds_memory:
        for key in _MEMORY_KEYS:
            if key in t:
                c.error(_join(path, key), f"does not apply to {kind} targets (they probe, they hold no memory)")
    interval = c.take(t, "interval", path, _positive_duration(0.1), spec.default_interval or glob.interval)
    timeout = c.take(t, "timeout", path, _positive_duration(0.05), min(glob.timeout, interval))
    if timeout > interval:
        c.error(_join(path, "timeout"), f"({format_duration(timeout)}) must not exceed interval "
                                        f"({format_duration(interval)}): polls would pile up")
    labels = dict(glob.labels)
    labels.update(_labels(c, t.get("labels"), _join(path, "labels")))
    common = dict(
        name=name, type=kind, interval=interval, timeout=timeout, labels=tuple(sorted(labels.items())),
        memory_limit=c.take(t, "memory_limit", path, _positive_size(1), None) if spec.holds_memory else None,
        max_reply_size=glob.max_reply_size, forecast_window=glob.forecast_window,
        **{key: c.take(t, key, path, parse, getattr(glob, key)) for key, parse in _LIMIT_KEYS.items()},
        role=c.take(t, "role", path, _one_of(ROLES), None) if spec.holds_memory else None,
    )
    target = spec.build(c, t, path, common)
    if target is not None and "acknowledge" in t:
        target = dataclasses.replace(target, acknowledge=_acknowledge(c, t["acknowledge"],
                                                                      _join(path, "acknowledge"), type(target)))
    return target if len(c.problems) == before else None


ACK_KEYS = {"check", "reason", "until"}


def _acknowledge(c: _Checker, node: Any, path: str, target_type: type) -> tuple[Acknowledgement, ...]:
    """``acknowledge: [check, {check: ..., reason: ..., until: YYYY-MM-DD}]``, checked against the
    audit checks that exist for this target type, so a typo cannot silence nothing (or the wrong thing)."""
    from exporter.audit import checks_for

    if node is None:
        return ()
    if not isinstance(node, list):
        c.error(path, f"expected a list of audit check names (or mappings with check, reason, until), "
                      f"got {_kind(node)}")
        return ()
    known = checks_for(target_type)
    out: list[Acknowledgement] = []
    seen: set[str] = set()
    for i, item in enumerate(node):
        here = _join(path, i)
        entry = {"check": item} if isinstance(item, str) else c.mapping(item, here, ACK_KEYS)
        if entry is None:
            continue
        check = c.take(entry, "check", here, _string)
        if check is None:
            continue
        if check not in known:
            hint = difflib.get_close_matches(check, known, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            c.error(_join(here, "check") if isinstance(item, dict) else here,
                    f"unknown audit check {check[:80]!r}{suggestion}; checks for this target type: "
                    f"{', '.join(known) or 'none'}")
            continue
        if check in seen:
            c.error(here, f"{check} is acknowledged twice")
            continue
        seen.add(check)
        reason = c.take(entry, "reason", here, _string, None)
        if reason is not None and (len(reason) > 500 or not reason.isprintable()):
            c.error(_join(here, "reason"), "must be at most 500 printable characters on one line")
            reason = None
        until = c.take(entry, "until", here, _date, None)
        out.append(Acknowledgement(check, reason, until))
    return tuple(out)


def _date(value: Any) -> datetime.date:
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
    raise ValueError(f"expected a date as YYYY-MM-DD, got {_kind(value)}")


def _target_name(value: Any) -> str:
    name = _string(value)
    if len(name) > 200 or not name.isprintable():
        raise ValueError("must be at most 200 printable characters")
    return name


def _redis_target(c: _Checker, t: dict[str, Any], path: str, common: dict[str, Any]) -> Target | None:
    url = c.take(t, "url", path, _string)
    if url is None:
        return None
    here = _join(path, "url")
    # Checked before anything parses the URL: a password containing '/', '?' or '#' ends
    # the host part early, and urlsplit's port errors would then echo part of the password.
    if "@" in url:
        c.error(here, "credentials in the URL are not allowed; use username and password_env/password_file")
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # Never echo the URL or urlsplit's message: they may contain a secret.
        c.error(here, "not a valid URL; the port must be a number from 1 to 65535")
        return None
    scheme = {"valkey": "redis", "valkeys": "rediss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("redis", "rediss", "unix"):
        c.error(here, f"scheme '{parts.scheme[:20]}' is not supported; use redis://, rediss:// or unix://")
        return None
    if port is not None and not 1 <= port <= 65535:
        c.error(here, "the port must be a number from 1 to 65535")
        return None
    db = 0
    query = parse_qs(parts.query)
    if scheme == "unix":
        if not parts.path:
            c.error(here, "unix:// needs a socket path, e.g. unix:///run/redis/redis.sock")
            return None
        db_text = query.pop("db", ["0"])[0]
    else:
        if not parts.hostname:
            c.error(here, "needs a host, e.g. redis://10.0.0.5:6379")
            return None
        db_text = parts.path.strip("/") or "0"
    if query:
        c.error(here, f"unsupported URL parameters: {', '.join(sorted(query))}")
    if not re.fullmatch(r"[0-9]{1,6}", db_text):
        c.error(here, "the database must be a number, e.g. redis://host:6379/0")
    else:
        db = int(db_text)

    tls = _tls(c, t.get("tls"), _join(path, "tls"))
    if tls is not None and scheme != "rediss":
        c.error(_join(path, "tls"), f"TLS settings need a rediss:// URL (this target uses {scheme}://)")

    creds = _credentials(c, t, path, username_required=False)
    managed = _managed(c, t, path, common) if "managed" in t else None

    return RedisTarget(
        **common,
        scheme=scheme,
        host=parts.hostname or "",
        port=6379 if port is None else port,
        path=parts.path if scheme == "unix" else None,
        db=db,
        credentials=creds,
        tls=tls,
        managed=managed,
        prefixes=_prefix_view(c, t.get("prefixes"), _join(path, "prefixes"), common, "redis")
        if "prefixes" in t else None,
    )


# Provider -> what it does at its data limit when the config does not say (None: follow the
# server's maxmemory-policy). ElastiCache Serverless reports maxmemory 0 and evicts keys that
# have a TTL when it reaches its maximum data storage.
MANAGED_PROVIDERS: dict[str, str | None] = {
    "elasticache-serverless": "ttl",
    "elasticache": None,
    "memorystore": None,
    "azure-cache": None,
    "redis-cloud": None,
    "other": None,
}


def _managed(c: _Checker, t: dict[str, Any], path: str, common: dict[str, Any]) -> ManagedStore | None:
    here = _join(path, "managed")
    m = c.mapping(t["managed"], here, {"provider", "data_limit", "evicts_at_limit"})
    if m is None:
        return None
    if "memory_limit" in t:
        c.error(_join(path, "memory_limit"), "does not apply to a managed store: the provider owns the process "
                                             "and its OOM killer; set managed.data_limit to the service's "
                                             "data-storage limit instead")
    provider = c.take(m, "provider", here, _one_of(tuple(MANAGED_PROVIDERS)))
    if provider is None:
        return None
    evicts = c.take(m, "evicts_at_limit", here, _one_of(EVICTS_AT_LIMIT), MANAGED_PROVIDERS[provider])
    return ManagedStore(
        provider=provider,
        data_limit=c.take(m, "data_limit", here, _positive_size(2**20), None),
        evicts_at_limit=evicts,
    )


def _credentials(c: _Checker, t: dict[str, Any], path: str, username_required: bool) -> Credentials:
    creds = Credentials(
        username=c.take(t, "username", path, _string, None),
        password_env=c.take(t, "password_env", path, _env_name, None),
        password_file=c.take(t, "password_file", path, _string, None),
    )
    if creds.password_env and creds.password_file:
        c.error(_join(path, "password_file"), "set either password_env or password_file, not both")
    elif creds.password_env and creds.password_env not in os.environ:
        c.warn(_join(path, "password_env"), f"environment variable {creds.password_env} is not set; "
                                            "the target will report reason=\"config\" until it is")
    elif creds.password_file and not os.access(creds.password_file, os.R_OK):
        c.warn(_join(path, "password_file"), f"{creds.password_file} is not readable; "
                                             "the target will report reason=\"config\" until it is")
    if creds.username and not (creds.password_env or creds.password_file):
        c.error(_join(path, "username"), "a username needs password_env or password_file")
    if username_required and (creds.password_env or creds.password_file) and not creds.username:
        c.error(_join(path, "username"),
                "memcached authentication (ASCII or SASL PLAIN) needs a username with the password")
    return creds


_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?$")


def _memcached_target(c: _Checker, t: dict[str, Any], path: str, common: dict[str, Any]) -> Target | None:
    address = c.take(t, "address", path, _string)
    if address is None:
        return None
    here = _join(path, "address")
    host, port, socket_path = "", 11211, None
    if address.startswith("/") or address.startswith("unix:"):
        socket_path = address.removeprefix("unix://").removeprefix("unix:")
        if not socket_path.startswith("/"):
            c.error(here, "a unix socket address must be an absolute path, e.g. /run/memcached/memcached.sock")
            return None
    else:
        match = _HOST_PORT.match(address)
        if match is None:
            c.error(here, "expected host:port (e.g. 10.0.0.7:11211, [::1]:11211) or a unix socket path")
            return None
        host = match.group("v6") or match.group("host")
        if match.group("port"):
            port = int(match.group("port"))
            if not 1 <= port <= 65535:
                c.error(here, "the port must be a number from 1 to 65535")
                return None
    tls = _tls(c, t.get("tls"), _join(path, "tls")) if "tls" in t else None
    if "tls" in t and tls is None and t.get("tls") is None:
        tls = TLSConfig()  # `tls: {}` or a bare `tls:` turns TLS on with the system CAs
    if tls is not None and socket_path:
        c.error(_join(path, "tls"), "TLS is not used over a unix socket")
    return MemcachedTarget(
        **common,
        host=host,
        port=port,
        path=socket_path,
        credentials=_credentials(c, t, path, username_required=True),
        tls=tls,
        slabs=c.take(t, "slabs", path, _boolean, True),
        prefixes=_prefix_view(c, t.get("prefixes"), _join(path, "prefixes"), common) if "prefixes" in t else None,
    )


MAX_PREFIXES_TOP = 200  # each prefix is a label value


MAX_PREFIX_SAMPLE = 100_000


def _prefix_view(c: _Checker, node: Any, path: str, common: dict[str, Any], store: str = "memcached",
                 ) -> PrefixView | None:
    budget = "max_bytes" if store == "memcached" else "max_keys"
    p = c.mapping(node, path, {"delimiter", "top", "interval", "max_time", budget})
    if p is None:
        return None
    delimiter = c.take(p, "delimiter", path, _string, ":")
    if delimiter is not None and not 1 <= len(delimiter) <= 8:
        c.error(_join(path, "delimiter"), "must be 1 to 8 characters, e.g. ':'")
    interval = c.take(p, "interval", path, _positive_duration(1.0), max(300.0, common["interval"]))
    if interval < common["interval"]:
        c.error(_join(path, "interval"), f"must not be shorter than the target's interval "
                                         f"({format_duration(common['interval'])})")
    max_time = c.take(p, "max_time", path, _positive_duration(0.05), min(2.0, common["timeout"] / 2))
    if max_time >= common["timeout"]:
        c.error(_join(path, "max_time"), f"must be shorter than the target's timeout "
                                         f"({format_duration(common['timeout'])}): the dump runs inside a poll")
    return PrefixView(delimiter=delimiter or ":", top=c.take(p, "top", path, _int_between(1, MAX_PREFIXES_TOP), 20),
                      interval=interval, max_time=max_time,
                      max_bytes=c.take(p, "max_bytes", path, _positive_size(64 * 1024), 64 * 2**20),
                      max_keys=c.take(p, "max_keys", path, _int_between(1, MAX_PREFIX_SAMPLE), 1000))


def _http_url(c: _Checker, url: str, here: str, default_path: str = "/") -> ProbeURL | None:
    """An http(s) URL with a host, or None after recording why not."""
    # Checked before anything parses the URL: see _redis_target.
    if "@" in url:
        c.error(here, "credentials in the URL are not allowed; use username and password_env/password_file")
        return None
    try:
        return ProbeURL.parse(url, default_path)
    except ValueError as exc:
        c.error(here, str(exc))
        return None


def _app_target(c: _Checker, t: dict[str, Any], path: str, common: dict[str, Any]) -> Target | None:
    url = c.take(t, "url", path, _string)
    if url is None:
        return None
    parts = _http_url(c, url, _join(path, "url"), "/metrics")
    if parts is None:
        return None
    request_path = parts.path
    tls = _tls(c, t.get("tls"), _join(path, "tls"))
    if tls is not None and parts.scheme != "https":
        c.error(_join(path, "tls"), "TLS settings need an https:// URL")
    fmt = c.take(t, "format", path, _one_of(("prometheus", "json")), "prometheus")
    fields = _app_fields(c, t.get("fields"), _join(path, "fields"))
    caches = _app_caches(c, t.get("caches"), _join(path, "caches"))
    if fmt == "json" and "heap_used" not in dict(fields):
        c.error(_join(path, "fields"), "format: json needs fields.heap_used (a dotted path into the JSON body)")
    if fmt == "prometheus" and (fields or caches):
        c.error(_join(path, "fields" if fields else "caches"), "fields and caches map a JSON body; "
                                                               "set format: json")
    return AppTarget(
        **common,
        scheme=parts.scheme,
        host=parts.host,
        port=parts.port,
        path=request_path,
        format=fmt,
        runtime=c.take(t, "runtime", path, _one_of(APP_RUNTIMES), "auto"),
        heap_limit=c.take(t, "heap_limit", path, _positive_size(1), None),
        young_generation_reserve=c.take(t, "young_generation_reserve", path, _positive_size(0),
                                        V8_YOUNG_GENERATION_RESERVE),
        credentials=_credentials(c, t, path, username_required=False),
        tls=tls,
        fields=fields,
        caches=caches,
    )


def _json_path(value: Any) -> str:
    text = _string(value)
    if not re.fullmatch(r"[^.\s]+(\.[^.\s]+)*", text):
        raise ValueError("expected a dotted path into the JSON body, e.g. memory.heapUsed")
    return text


def _app_fields(c: _Checker, node: Any, path: str) -> tuple[tuple[str, str], ...]:
    m = c.mapping(node, path, set(APP_JSON_FIELDS))
    if not m:
        return ()
    return tuple(sorted((k, c.take(m, k, path, _json_path)) for k in m if k in APP_JSON_FIELDS))


def _app_caches(c: _Checker, node: Any, path: str) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    if node is None:
        return ()
    if not isinstance(node, dict):
        c.error(path, f"expected a mapping of cache names to counter paths, got {_kind(node)}")
        return ()
    out = []
    for name, counters in node.items():
        here = _join(path, str(name))
        m = c.mapping(counters, here, set(APP_CACHE_COUNTERS))
        if not m:
            c.error(here, f"map at least one of: {', '.join(APP_CACHE_COUNTERS)}")
            continue
        out.append((str(name), tuple(sorted((k, c.take(m, k, here, _json_path)) for k in m
                                            if k in APP_CACHE_COUNTERS))))
    return tuple(sorted(out))


def _tls(c: _Checker, node: Any, path: str) -> TLSConfig | None:
    if node is None:
        return None
    t = c.mapping(node, path, {"ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"})
    if t is None:
        return None
    files = {}
    for key in ("ca_file", "cert_file", "key_file"):
        value = c.take(t, key, path, _string, None)
        if value is not None and not os.access(value, os.R_OK):
            c.error(_join(path, key), f"{value} does not exist or is not readable")
        files[key] = value
    if files["key_file"] and not files["cert_file"]:
        c.error(_join(path, "key_file"), "key_file needs cert_file")
    return TLSConfig(
        **files,
        server_name=c.take(t, "server_name", path, _string, None),
        insecure_skip_verify=c.take(t, "insecure_skip_verify", path, _boolean, False),
    )


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_QUERY_NAME = re.compile(r"^[A-Za-z0-9_.~-]+$")
_STATUS_CLASS = re.compile(r"^([1-5])xx$")
_STATUS_RANGE = re.compile(r"^([1-5][0-9]{2})-([1-5][0-9]{2})$")


def _status_ranges(value: Any) -> tuple[tuple[int, int], ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("list at least one status, e.g. [5xx, 429]")
    out = []
    for item in items:
        text = str(item).strip().lower() if not isinstance(item, bool) else ""
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            out.append((item, item))
        elif m := _STATUS_CLASS.match(text):
            out.append((int(m.group(1)) * 100, int(m.group(1)) * 100 + 99))
        elif (m := _STATUS_RANGE.match(text)) and int(m.group(1)) <= int(m.group(2)):
            out.append((int(m.group(1)), int(m.group(2))))
        else:
            raise ValueError(f"{str(item)[:40]!r} is not a status: use a code (404), a class (5xx) "
                             "or a range (500-504)")
    return tuple(sorted(set(out)))


def _header_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"header values must be strings, got {_kind(value)}")
    text = str(value)
    if any(ch in text for ch in "\r\n\0") or len(text) > 8192:
        raise ValueError("header values must be one line of at most 8192 characters")
    return text


def _headers(c: _Checker, node: Any, path: str) -> tuple[tuple[str, str], ...]:
    if node is None:
        return ()
    if not isinstance(node, dict):
        c.error(path, f"expected a mapping of header names to values, got {_kind(node)}")
        return ()
    out = []
    for name, value in node.items():
        here = _join(path, str(name))
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            c.error(here, "not a valid header name")
        elif name.lower() in ("authorization", "proxy-authorization"):
            c.error(here, "secrets do not belong in the config: use username and password_env/password_file")
        else:
            try:
                out.append((name, _header_value(value)))
            except ValueError as exc:
                c.error(here, str(exc))
    return tuple(out)


def _bypass(c: _Checker, node: Any, path: str) -> Bypass | None:
    b = c.mapping(node, path, {"query_param", "header", "origin_url"})
    if not b:
        return None
    if len(b) != 1:
        c.error(path, "choose one of query_param, header or origin_url")
        return None
    if "query_param" in b:
        name = c.take(b, "query_param", path, _string)
        if name is not None and not _QUERY_NAME.match(name):
            c.error(_join(path, "query_param"), "use a plain parameter name such as cache_bust")
            return None
        return Bypass(query_param=name) if name else None
    if "header" in b:
        before = len(c.problems)
        headers = _headers(c, b["header"], _join(path, "header"))
        if len(headers) != 1:
            if len(c.problems) == before:
                c.error(_join(path, "header"), "expected one header, e.g. {X-Cache-Bypass: \"1\"}")
            return None
        return Bypass(header=headers[0])
    url = c.take(b, "origin_url", path, _string)
    origin = _http_url(c, url, _join(path, "origin_url")) if url else None
    return Bypass(origin=origin) if origin else None


def _probe_urls(c: _Checker, t: dict[str, Any], path: str) -> tuple[ProbeURL, ...]:
    has_url, has_urls = t.get("url") is not None, t.get("urls") is not None
    if has_url == has_urls:
        c.error(path, "set either url (optionally with paths) or urls")
        return ()
    listed = t["urls"] if has_urls else t.get("paths")
    if isinstance(listed, list) and len(listed) > MAX_PROBE_URLS:  # before parsing thousands of them
        c.error(path, f"{len(listed)} URLs; at most {MAX_PROBE_URLS} per target (each is a label value)")
        return ()
    found: list[ProbeURL] = []
    if has_urls:
        if not isinstance(t["urls"], list) or not t["urls"]:
            c.error(_join(path, "urls"), "expected a non-empty list of URLs")
            return ()
        if "paths" in t:
            c.error(_join(path, "paths"), "paths go with a single url, not with urls")
        for i, item in enumerate(t["urls"]):
            here = _join(_join(path, "urls"), i)
            if not isinstance(item, str) or not item.strip():
                c.error(here, f"expected a URL, got {_kind(item)}")
            elif (probe := _http_url(c, item, here)) is not None:
                found.append(probe)
    else:
        base = c.take(t, "url", path, _string)
        probe = _http_url(c, base, _join(path, "url")) if base else None
        if probe is None:
            return ()
        paths = t.get("paths")
        if paths is None:
            found.append(probe)
        elif not isinstance(paths, list) or not paths:
            c.error(_join(path, "paths"), "expected a non-empty list of paths such as /api/health")
        else:
            root = base.split("?", 1)[0].split("#", 1)[0].rstrip("/")
            for i, item in enumerate(paths):
                here = _join(_join(path, "paths"), i)
                if not isinstance(item, str) or not item.startswith("/"):
                    c.error(here, "a path must start with /")
                elif (joined := _http_url(c, root + item, here)) is not None:
                    found.append(joined)
    if len(found) > MAX_PROBE_URLS:
        c.error(path, f"{len(found)} URLs; at most {MAX_PROBE_URLS} per target (each is a label value)")
    if len({p.url for p in found}) != len(found):
        c.error(path, "the same URL is listed twice")
    return tuple(found)


def _http_cache_target(c: _Checker, t: dict[str, Any], path: str, common: dict[str, Any]) -> Target | None:
    urls = _probe_urls(c, t, path)
    tls = _tls(c, t.get("tls"), _join(path, "tls"))
    if tls is not None and urls and not any(u.scheme == "https" for u in urls):
        c.error(_join(path, "tls"), "TLS settings need an https:// URL")
    bypass = _bypass(c, t.get("bypass"), _join(path, "bypass"))
    request_timeout = common["timeout"]
    requests = max(1, len(urls)) * (2 if bypass else 1)
    common = {**common, "timeout": request_timeout * requests + 1.0}
    return HttpCacheTarget(
        **common,
        urls=urls,
        method=c.take(t, "method", path, _one_of(("GET", "HEAD")), "GET"),
        headers=_headers(c, t.get("headers"), _join(path, "headers")),
        error_statuses=c.take(t, "error_statuses", path, _status_ranges, ((500, 599),)),
        bypass=bypass,
        max_redirects=c.take(t, "max_redirects", path, _int_between(0, 10), 0),
        request_timeout=request_timeout,
        max_header_bytes=c.take(t, "max_header_bytes", path, _positive_size(1024), 64 * 1024),
        credentials=_credentials(c, t, path, username_required=False),
        tls=tls,
    )


_KINDS: dict[str, _Kind] = {
    "redis": _Kind(frozenset({"url", "tls", "managed", "prefixes"} | _CREDENTIAL_KEYS), _redis_target),
    "memcached": _Kind(frozenset({"address", "tls", "slabs", "prefixes"} | _CREDENTIAL_KEYS), _memcached_target),
    "app": _Kind(frozenset({"url", "format", "runtime", "heap_limit", "young_generation_reserve", "tls", "fields",
                            "caches"} | _CREDENTIAL_KEYS), _app_target),
    # A probe has its own cadence: a cached error shows within a TTL, not within a store's poll.
    "http_cache": _Kind(frozenset({"url", "urls", "paths", "method", "headers", "error_statuses", "bypass",
                                   "max_redirects", "max_header_bytes", "tls"} | _CREDENTIAL_KEYS),
                        _http_cache_target, holds_memory=False, default_interval=DEFAULT_PROBE_INTERVAL),
}


def default_config(listen: str = DEFAULT_LISTEN, self_scrape: bool = True) -> Config:
    """What runs without --config: the local stores and the exporter's own process (docs/configuration.md)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    # The address the exporter can reach itself on: loopback when it listens everywhere.
    own = "127.0.0.1" if host in ("", "0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    document = {"targets": [
        {"name": "redis", "type": "redis", "url": "redis://localhost:6379"},
        {"name": "memcached", "type": "memcached", "address": "localhost:11211"},
        {"name": "cache-exporter", "type": "app", "url": f"http://{own}:{port or '9611'}/metrics",
         "runtime": "python",
         # Its own process has no heap limit of its own, and the operator did not choose this target.
         "acknowledge": [{"check": "app_heap_limit_unknown",
                          "reason": "the exporter's own process (built-in default); "
                                    "give it memory_limit to watch it"}]},
    ]}
    if not self_scrape:  # behind a web config (TLS, basic auth) a plain self-scrape would only fail
        document["targets"] = document["targets"][:2]
    return build_config(document, BUILTIN).config


FLAGS = "command-line flags"
REDIS_ADDR_FLAG = "--redis.addr"
MEMCACHED_ADDRESS_FLAG = "--memcached.address"
# redis_exporter's names, so a command line moved over keeps working (its REDIS_PASSWORD too).
REDIS_PASSWORD_ENV = "REDIS_PASSWORD"
_FLAG_OF_KEY = {"password_file": "--redis.password-file", "password_env": REDIS_PASSWORD_ENV,
                "username": "--redis.user"}
# Config messages that name config keys, reworded for someone who wrote flags.
_FLAG_WORDING = (
    ("use username and password_env/password_file",
     f"use --redis.user and --redis.password-file (or {REDIS_PASSWORD_ENV})"),
    ("a username needs password_env or password_file", f"needs --redis.password-file (or {REDIS_PASSWORD_ENV})"),
)
_TARGET_PATH = re.compile(r"targets\[(\d+)\](?:\.([a-z_]+))?")


def _name_from_address(address: str, fallback: str) -> str:
    """``redis://10.0.0.5:6379/0`` -> ``10.0.0.5:6379/0``; a socket path stays a path.

    Anything that could carry a secret or would not pass as a name gets ``fallback``: the
    address check then says what is wrong with it, without quoting it."""
    name = address.split("://", 1)[-1].rstrip("/")
    if "@" in address or not name or len(name) > 200 or not name.isprintable():
        return fallback
    return name


def flags_config(redis_addrs: list[str], memcached_addrs: list[str], redis_password_file: str | None = None,
                 redis_user: str | None = None, environ: dict[str, str] | None = None) -> LoadResult:
    """The config that ``--redis.addr`` / ``--memcached.address`` stand for, validated exactly as
    the same targets in a file would be (one validation path).

    Raises ConfigError whose lines name the flag (``--redis.addr #2``), never the value: an
    address may hold a password."""
    env = os.environ if environ is None else environ
    password: dict[str, str] = {}
    if redis_password_file is not None:
        password["password_file"] = redis_password_file  # the flag wins over the environment
    elif env.get(REDIS_PASSWORD_ENV):
        password["password_env"] = REDIS_PASSWORD_ENV
    targets: list[dict[str, Any]] = []
    labels: list[str] = []
    for flag, kind, key, values in ((REDIS_ADDR_FLAG, "redis", "url", redis_addrs),
                                    (MEMCACHED_ADDRESS_FLAG, "memcached", "address", memcached_addrs)):
        for n, value in enumerate(values, 1):
            if kind == "redis" and "://" not in value:
                value = f"redis://{value}"  # redis_exporter takes a bare host:port too
            entry: dict[str, Any] = {"name": _name_from_address(value, f"{kind}-{n}"), "type": kind, key: value}
            if kind == "redis":
                entry.update(password)
                if redis_user is not None:
                    entry["username"] = redis_user
            targets.append(entry)
            labels.append(flag if len(values) == 1 else f"{flag} #{n}")

    def reword(text: str) -> str:
        def flag(match: re.Match[str]) -> str:
            index, key = int(match.group(1)), match.group(2)
            label = labels[index] if index < len(labels) else match.group(0)
            return _FLAG_OF_KEY.get(key or "", label)
        for config_words, flag_words in _FLAG_WORDING:
            text = text.replace(config_words, flag_words)
        return _TARGET_PATH.sub(flag, text)

    # dict.fromkeys: a problem with a flag shared by every target (--redis.user) is said once.
    try:
        loaded = build_config({"targets": targets}, FLAGS)
    except ConfigError as exc:
        problems = dict.fromkeys((reword(path), reword(msg)) for path, msg in exc.problems)
        raise ConfigError(FLAGS, list(problems)) from None
    return LoadResult(loaded.config, list(dict.fromkeys(reword(w) for w in loaded.warnings)))


# -- discovery templates ------------------------------------------------------------------------

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


def _template(c: _Checker, node: dict[str, Any], path: str, glob: GlobalConfig) -> Template | None:
    from exporter.discovery import registry

    kind = node.get("discover")
    here = _join(path, "discover")
    if not isinstance(kind, str) or kind not in registry.KINDS:
        c.error(here, f"unknown discovery kind {str(kind)[:40]!r}; supported: {', '.join(registry.KINDS)}")
        return None
    spec = registry.KINDS[kind]
    target_type = node.get("type")
    if isinstance(target_type, str) and target_type in _KINDS and target_type not in spec.types:
        c.error(here, f"discover: {kind} finds {' or '.join(spec.types)} targets, not {target_type}")
        return None
    for key in sorted(DISCOVERY_KEYS - {"discover", "refresh_interval"} - _KIND_KEYS[kind]):
        if key in node:
            c.error(_join(path, key), f"does not apply to discover: {kind}")
    if not registry.available(kind):
        c.error(here, f"discovery kind {kind} not available in this build")
        return None
    before = len(c.problems)
    refresh = c.take(node, "refresh_interval", path, _positive_duration(0.1), spec.default_refresh)
    settings = {k: v for k, v in node.items() if k not in DISCOVERY_KEYS}
    address_key = _ADDRESS_KEY.get(str(target_type), "url")
    probe_node = dict(settings)
    if settings.get(address_key) is None:
        if kind in _SEEDED:
            what = "the configuration endpoint" if kind == "elasticache" else "a seed node"
            c.error(_join(path, address_key), f"is required: {what} for discover: {kind}")
            return None
        probe_node[address_key] = _PLACEHOLDER.get(str(target_type), "")
    probe = _target(c, probe_node, path, glob)
    if probe is None:
        return None
    options = _discovery_options(c, node, path, kind, probe)
    if len(c.problems) != before:
        return None
    return Template(name=probe.name, type=probe.type, kind=kind, refresh_interval=refresh, timeout=probe.timeout,
                    options=options, settings=settings, global_=glob, probe=probe)


def _string_list(c: _Checker, node: dict[str, Any], key: str, path: str) -> list[str]:
    here = _join(path, key)
    value = node.get(key)
    if value is None:
        c.error(here, "is required")
        return []
    if not isinstance(value, list) or not value:
        c.error(here, f"expected a non-empty list, got {_kind(value)}")
        return []
    out = []
    for i, item in enumerate(value):
        try:
            out.append(_string(item).strip())
        except ValueError as exc:
            c.error(_join(here, i), str(exc))
    return out


def _discovery_options(c: _Checker, node: dict[str, Any], path: str, kind: str, probe: Target) -> dict[str, Any]:
    from exporter.discovery.dns import RECORDS

    if kind in ("cluster", "sentinel"):
        assert isinstance(probe, RedisTarget)
        if probe.scheme == "unix":
            c.error(_join(path, "url"), f"discover: {kind} needs a redis:// or rediss:// seed, not a unix socket")
            return {}
        # As written, not probe.address: that has the data port (6379) filled in, and a Sentinel
        # seed without a port means 26379 to the sentinel kind.
        seeds = [str(node["url"]).strip()]
        for i, seed in enumerate(_string_list(c, node, "seeds", path) if "seeds" in node else []):
            if "@" in seed:
                c.error(_join(_join(path, "seeds"), i), "credentials in a seed are not allowed; "
                                                        "use username and password_env/password_file")
                continue
            url = seed if "://" in seed else f"{probe.scheme}://{seed}"
            if urlsplit(url).scheme not in (probe.scheme, {"redis": "valkey", "rediss": "valkeys"}[probe.scheme]):
                c.error(_join(_join(path, "seeds"), i), f"seeds use the url's scheme ({probe.scheme}://)")
                continue
            seeds.append(url)
        options: dict[str, Any] = {"seeds": tuple(dict.fromkeys(seeds))}
        if kind == "sentinel" and node.get("master_name") is not None:
            # Without it, every primary the sentinels monitor (SENTINEL MASTERS).
            options["master_name"] = c.take(node, "master_name", path, _string)
        return options
    if kind == "file_sd":
        base = os.path.dirname(os.path.abspath(c.source)) if os.path.isfile(c.source) else ""
        # Relative globs are relative to the config file, as in Prometheus.
        return {"files": tuple(os.path.join(base, f) for f in _string_list(c, node, "files", path))}
    if kind == "dns":
        record = c.take(node, "record", path, _one_of(RECORDS), "A")
        options = {"names": tuple(_string_list(c, node, "names", path)), "record": record}
        if record == "SRV":
            if "port" in node:
                c.error(_join(path, "port"), "does not apply to SRV records: each record carries its port")
        else:
            options["port"] = c.take(node, "port", path, _int_between(1, 65535))
        if node.get("nameserver") is not None:
            options["nameserver"] = c.take(node, "nameserver", path, _nameserver)
        return options
    if isinstance(probe, MemcachedTarget) and probe.path:  # elasticache
        c.error(_join(path, "address"), "the configuration endpoint is host:port, not a unix socket")
    return {}


def _nameserver(value: Any) -> tuple[str, int]:
    import ipaddress

    text = _string(value).strip()
    match = _HOST_PORT.match(text)
    host = (match.group("v6") or match.group("host")) if match else ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("expected an IP address with an optional port, e.g. 10.96.0.10 or 127.0.0.1:5353") from None
    port = int(match.group("port")) if match and match.group("port") else 53
    if not 1 <= port <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    return host, port


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

    c = _Checker(f"discovery {template.name}")
    reserved = catalog.label_names() | _SCRAPE_LABELS
    address_key = _ADDRESS_KEY[template.type]
    out: list[Target] = []
    try:
        for f in found:
            node = dict(template.settings)
            node["name"] = f"{template.name}/{f.key}"
            node[address_key] = _with_address(template, f.address)
            labels = dict(template.settings.get("labels") or {})
            for name, value in f.labels:
                # file_sd labels are the operator's: a clash is their error, reported by _labels.
                if template.kind != "file_sd" and name in reserved:
                    name = DISCOVERED_PREFIX + name
                labels[name] = value
            node["labels"] = labels
            target = _target(c, node, f"node {f.key}", template.global_)
            if target is not None:
                out.append(target)
    except _TooManyProblems:
        pass
    except Exception as exc:  # a bug must cost this refresh, never the last good list or the thread
        raise DiscoveryError(f"cannot build targets: internal error {type(exc).__name__}") from None
    if c.problems:
        shown = "; ".join(f"{p}: {m}" if p else m for p, m in c.problems[:5])
        more = f" (and {len(c.problems) - 5} more)" if len(c.problems) > 5 else ""
        raise DiscoveryError(f"invalid discovered targets: {shown}{more}")
    return tuple(out)
