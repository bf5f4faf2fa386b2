"""Per-key-prefix sums for the opt-in prefix views (memcached metadump, Redis SCAN samples).

The label is the key up to the first delimiter; keys without one are ``__none__``. Cardinality
is bounded twice: at most ``MAX_TRACKED_PREFIXES`` distinct prefixes are summed during one run
(later new ones go to ``__other__``), and only the top N by bytes are exported, the rest summed
as ``__other__``.
"""

from __future__ import annotations

from urllib.parse import unquote

OTHER_PREFIX, NO_PREFIX = "__other__", "__none__"
MAX_TRACKED_PREFIXES = 10_000
MAX_PREFIX_LENGTH = 128


class PrefixTally:
    """Sums a metadump's item sizes by key prefix, with a bounded number of distinct prefixes."""

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self.bytes: dict[str, float] = {}
        self.items: dict[str, int] = {}
        self.malformed = 0

    def add_line(self, line: str) -> None:
        """One memcached metadump line: ``key=<url-encoded> exp=.. la=.. cas=.. fetch=.. cls=.. size=N``."""
        fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
        key, size = fields.get("key"), fields.get("size", "")
        if key is None or not size.isdigit() or len(size) > 12:
            self.malformed += 1
            return
        self.add(unquote(key), int(size))

    def add(self, key: str, size: int) -> None:
        head, sep, _ = key.partition(self.delimiter)
        prefix = _label_safe(head) if sep else NO_PREFIX
        if prefix not in self.bytes and len(self.bytes) >= MAX_TRACKED_PREFIXES:
            prefix = OTHER_PREFIX
        self.bytes[prefix] = self.bytes.get(prefix, 0.0) + size
        self.items[prefix] = self.items.get(prefix, 0) + 1

    @property
    def counted(self) -> int:
        return sum(self.items.values())

    def top(self, n: int) -> list[tuple[str, float, int]]:
        """The ``n`` prefixes holding the most bytes, then everything else as ``__other__``."""
        ranked = sorted((p for p in self.bytes if p != OTHER_PREFIX), key=lambda p: (-self.bytes[p], p))
        out = [(p, self.bytes[p], self.items[p]) for p in ranked[:n]]
        rest = ranked[n:] + ([OTHER_PREFIX] if OTHER_PREFIX in self.bytes else [])
        if rest:
            out.append((OTHER_PREFIX, sum(self.bytes[p] for p in rest), sum(self.items[p] for p in rest)))
        return out


def _label_safe(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text[:MAX_PREFIX_LENGTH])
