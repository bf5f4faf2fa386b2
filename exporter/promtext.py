"""Read the few families we need out of an application's Prometheus text body, fast and bounded.

prometheus_client's parser is pure Python (~10-30 k samples/s) and stops at the first bad
line. App endpoints can carry tens of thousands of samples we do not care about, so lines are
first filtered by metric name with string operations only; the survivors are parsed one by one,
so a malformed line costs one counted sample, not the poll.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from exporter import errors as E
from exporter.errors import PollError

MAX_KEPT_LINES = 20_000
_SUFFIXES = ("", "_total", "_sum", "_count", "_bucket", "_created", "_info")

Labels = dict[str, str]


@dataclass
class Parsed:
    """Samples by sample name (``name_total``, ``name_sum``, ... kept as written)."""

    samples: dict[str, list[tuple[Labels, float]]] = field(default_factory=lambda: defaultdict(list))
    malformed: int = 0

    def has(self, name: str) -> bool:
        return name in self.samples

    def sum(self, name: str, where: Labels | None = None, exclude: dict[str, set[str]] | None = None,
            positive: bool = False) -> float | None:
        """Sum of a sample name's values (optionally filtered); None if no sample matched."""
        total, seen = 0.0, False
        for labels, value in self.samples.get(name, ()):
            if where and any(labels.get(k) != v for k, v in where.items()):
                continue
            if exclude and any(labels.get(k) in vs for k, vs in exclude.items()):
                continue
            if positive and value <= 0:
                continue
            total += value
            seen = True
        return total if seen else None

    def first(self, *names: str) -> float | None:
        """The first sample's value (whatever its labels) of the first of ``names`` that has any sample."""
        for name in names:
            values = self.samples.get(name)
            if values:
                return values[0][1]
        return None


def wanted_names(families: set[str]) -> set[str]:
    return {family + suffix for family in families for suffix in _SUFFIXES}


def _sample_name(line: str) -> str:
    end = len(line)
    for sep in ("{", " ", "\t"):
        i = line.find(sep)
        if 0 <= i < end:
            end = i
    return line[:end]


def parse(body: str, families: set[str]) -> Parsed:
    """Parse the samples of ``families``; raises PollError (too_large) past MAX_KEPT_LINES of them."""
    names = wanted_names(families)
    out = Parsed()
    kept = 0
    for line in body.splitlines():
        if not line or line[0] == "#":
            continue
        name = _sample_name(line)
        if name not in names:
            continue
        kept += 1
        if kept > MAX_KEPT_LINES:
            raise PollError(E.TOO_LARGE, f"more than {MAX_KEPT_LINES} samples of the wanted families")
        try:
            for family in text_string_to_metric_families(line + "\n"):
                for sample in family.samples:
                    if not math.isfinite(sample.value):
                        continue  # NaN/Inf are never a memory figure we can use
                    out.samples[sample.name].append((dict(sample.labels), sample.value))
        except (ValueError, IndexError, KeyError, TypeError):
            out.malformed += 1
    return out


def looks_like_prometheus(body: str) -> bool:
    """False for what is clearly not the text format (HTML error pages, JSON)."""
    head = body.lstrip()[:1]
    return head not in ("<", "{", "[")
