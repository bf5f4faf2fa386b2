"""From a file, YAML text or a parsed document to a validated ``Config``, and the built-in default.

Every entry point raises ConfigError and nothing else: whatever escapes the checks becomes one.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml

from exporter.config import rules, sections
from exporter.config.checker import MAX_PROBLEMS, Checker, ConfigError, TooManyProblems, join, kind_of
from exporter.config.kinds import build_target
from exporter.config.templates import template
from exporter.config.yaml_safe import TooManyDigits, load_yaml
from exporter.targets import DEFAULT_LISTEN, Config, Target, Template

MAX_CONFIG_SIZE = 1 * 2**20
BUILTIN = "<built-in default>"


@dataclass
class LoadResult:
    config: Config
    warnings: list[str] = field(default_factory=list)


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
            document = load_yaml(text, source)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(source, [(where, f"invalid YAML: {problem}")]) from None
        except RecursionError:
            raise ConfigError(source, [("", "invalid YAML: nesting too deep")]) from None
        return build_config(document, source)


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
    c = Checker(source)
    if document is None:
        raise ConfigError(source, [("", "config is empty; it needs a 'targets' list")])
    try:
        _check_values(c, document)
        if c.problems:
            raise ConfigError(source, c.problems)
        return _validate(c, document, source)
    except TooManyProblems:
        shown = c.problems[:MAX_PROBLEMS]
        raise ConfigError(source, [*shown, ("", f"more problems not shown (stopped after {MAX_PROBLEMS})")]) from None


def _validate(c: Checker, document: Any, source: str) -> LoadResult:
    top = c.mapping(document, "", {"global", "targets"})
    if top is None:
        raise ConfigError(source, c.problems)
    glob = sections.global_config(c, top.get("global"))
    targets: list[Target] = []
    templates: list[Template] = []
    raw_targets = top.get("targets")
    if not isinstance(raw_targets, list):
        c.error("targets", "is required and must be a list of targets"
                if raw_targets is None else f"expected a list, got {kind_of(raw_targets)}")
    elif not raw_targets:
        c.error("targets", "must list at least one target")
    else:
        names: dict[str, int] = {}
        for i, node in enumerate(raw_targets):
            here = join("targets", i)
            if isinstance(node, dict) and "discover" in node:
                found = template(c, node, here, glob)
                if found is not None and rules.unique_name(c, here, found.name, names):
                    names[found.name] = i
                    templates.append(found)
                continue
            target = build_target(c, node, here, glob)
            if target is not None and rules.unique_name(c, here, target.name, names):
                names[target.name] = i
                targets.append(target)
        rules.outside_template_namespaces(c, targets, templates, names)
    if c.problems:
        raise ConfigError(source, c.problems)
    return LoadResult(Config(tuple(targets), source, tuple(templates)), c.warnings)


def _check_values(c: Checker, document: Any) -> None:
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
                    c.error(join(path, _shown_key(key)), f"this key {problem}")
                else:
                    stack.append((value, join(path, str(key))))
        elif isinstance(node, (list, tuple, set, frozenset)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.extend((item, join(path, i)) for i, item in reversed(list(enumerate(node))))
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
    elif isinstance(value, TooManyDigits):
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


def default_config(listen: str = DEFAULT_LISTEN, self_scrape: bool = True) -> Config:
    """What runs without --config: the local stores and the exporter's own process (docs/configuration.md)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    # The address the exporter can reach itself on: loopback when it listens everywhere.
    own = "127.0.0.1" if host in ("", "0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    targets: list[dict[str, Any]] = [
        {"name": "redis", "type": "redis", "url": "redis://localhost:6379"},
        {"name": "memcached", "type": "memcached", "address": "localhost:11211"},
        {"name": "cache-exporter", "type": "app", "url": f"http://{own}:{port or '9611'}/metrics",
         "runtime": "python",
         # Its own process has no heap limit of its own, and the operator did not choose this target.
         "acknowledge": [{"check": "app_heap_limit_unknown",
                          "reason": "the exporter's own process (built-in default); "
                                    "give it memory_limit to watch it"}]},
    ]
    if not self_scrape:  # behind a web config (TLS, basic auth) a plain self-scrape would only fail
        targets = targets[:2]
    return build_config({"targets": targets}, BUILTIN).config
