"""Reading YAML safely: duplicate keys refused, merge keys resolved one fixed way, and documents
refused before they are built if aliases, nesting or an integer's length would make them costly."""

from __future__ import annotations

import sys
from typing import Any

import yaml

from exporter.config.checker import ConfigError

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
# A config nests 4 levels (targets[0].caches.users.hits). Deeper nesting costs PyYAML's scanner
# time quadratic in the depth of [ and { and its composer a Python stack frame per level, so it
# is refused as it is read.
MAX_NESTING = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_INT_TAG = "tag:yaml.org,2002:int"
_SATURATE = 2**62  # expanded counts stop growing here: an alias bomb must not cost big-int arithmetic


class TooManyDigits:
    """Stands in for an integer too long for Python to read (``sys.get_int_max_str_digits()``).

    Built instead of failing inside PyYAML, so that the document walk can report it with its
    YAML path rather than only a line number.
    """

    def __init__(self, digits: int, mark: yaml.Mark) -> None:
        self.digits = digits
        self.line = mark.line + 1

    def __repr__(self) -> str:
        return f"<a number with {self.digits} digits>"


class UniqueKeyLoader(yaml.SafeLoader):
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

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
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
                return TooManyDigits(digits, node.start_mark)
            raise


UniqueKeyLoader.add_constructor(_INT_TAG, UniqueKeyLoader.construct_yaml_int)


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


def load_yaml(text: str, source: str) -> Any:
    """The document in ``text``, refused before it is built if aliases would blow it up.

    Raises yaml.YAMLError for what is not YAML, ConfigError (naming ``source``) for what costs too much."""
    loader = UniqueKeyLoader(text)
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


def _shown(key: Any) -> str:
    """``repr`` of a key for a message, printable even if the key holds a surrogate or a newline."""
    if isinstance(key, int) and not isinstance(key, bool) and key.bit_length() > 10_000:
        return "(a very long number)"
    return ascii(key)[:200] if isinstance(key, str) and not key.isprintable() else repr(key)[:200]

