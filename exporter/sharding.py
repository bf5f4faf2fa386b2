"""Sharding across replicas: which of M exporter processes polls a target.

Every replica reads the same target list and keeps the targets whose name hashes to its own
index, so each target is polled by exactly one replica and no series is exported twice.

The owner is a jump consistent hash (Lamping & Veach, 2014) of the first 8 bytes of the
SHA-256 of the target's name. Why jump hash and not ``hash % M``: growing from M to M+1
replicas moves only the ~1/(M+1) of the targets that the new replica takes over (all of them
to it), where a modulo moves ~M/(M+1) of them, each move restarting a target's forecast
history on another replica. Jump hash needs the replicas numbered 0..M-1 and grown or shrunk
at the end, which is exactly what a StatefulSet's ordinals are. SHA-256, not Python's
``hash()``: the owner must be the same in every process and every Python version.

``--shard auto`` takes the index from the pod name's trailing ``-<ordinal>``, as
kube-state-metrics does from its ``--pod`` name (its StatefulSet name plus ``-<ordinal>``);
the total comes from ``--total-shards`` (kube-state-metrics reads the StatefulSet's replicas
from the API; the exporter needs no API access, the chart passes the same number to both).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

_MASK64 = (1 << 64) - 1
_ORDINAL = re.compile(r"-(\d+)$")
POD_NAME_ENV = "POD_NAME"


def _key(name: str) -> int:
    import hashlib  # here: an unsharded daemon never hashes, and hashlib is ~0.6 MiB resident

    # surrogatepass: a name from a file with undecodable bytes still hashes (and the same way each time).
    return int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def jump_hash(key: int, buckets: int) -> int:
    """Lamping & Veach's jump consistent hash of a 64-bit ``key`` into ``range(buckets)``."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def owner(name: str, total: int) -> int:
    """The index (0..total-1) of the replica that polls the target called ``name``."""
    return jump_hash(_key(name), total)


T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This replica's place among ``total``: it polls the targets whose ``owner`` is ``index``."""

    index: int = 0
    total: int = 1

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ValueError(f"--total-shards must be at least 1, not {self.total}")
        if not 0 <= self.index < self.total:
            raise ValueError(f"--shard must be in 0..{self.total - 1} for --total-shards {self.total}, "
                             f"not {self.index}")

    @property
    def sharded(self) -> bool:
        return self.total > 1

    def owns(self, name: str) -> bool:
        return self.total == 1 or owner(name, self.total) == self.index

    def select(self, targets: Iterable[T], name: str = "name") -> tuple[T, ...]:
        """The targets (anything with a ``name`` attribute) this replica owns, in their order."""
        return tuple(t for t in targets if self.owns(getattr(t, name)))

    def __str__(self) -> str:
        return f"shard {self.index} of {self.total}"


def ordinal_from_pod_name(pod_name: str) -> int:
    """The StatefulSet ordinal at the end of a pod name (``cache-exporter-2`` -> 2)."""
    m = _ORDINAL.search(pod_name)
    if m is None:
        raise ValueError(f"--shard auto: the pod name {pod_name!r} does not end in -<ordinal> "
                         f"(a StatefulSet pod's does); pass --shard N, or set {POD_NAME_ENV}")
    return int(m.group(1))


def from_flags(shard: str | None, total: int | None, env: Mapping[str, str] | None = None,
               hostname: str | None = None) -> Shard:
    """The Shard that ``--shard`` and ``--total-shards`` ask for; ValueError says what is wrong.

    Neither flag: one replica polls everything. ``--total-shards M`` alone or with ``--shard
    auto``: the index from ``$POD_NAME``, else the hostname (a StatefulSet pod's hostname is its
    name); with M = 1 it is 0 wherever it runs. ``--shard N`` needs ``--total-shards``: a replica
    cannot guess how many others there are.
    """
    if shard is None and total is None:
        return Shard()
    if total is None:
        raise ValueError("--shard needs --total-shards M (how many replicas share the targets)")
    if total < 1:
        raise ValueError(f"--total-shards must be at least 1, not {total}")
    if shard is None or shard == "auto":
        if total == 1:
            return Shard()  # one shard: nothing to find out, and no need to run in a pod
        env = env if env is not None else {}
        pod_name = env.get(POD_NAME_ENV) or (hostname if hostname is not None else socket.gethostname())
        index = ordinal_from_pod_name(pod_name)
        if index >= total:
            raise ValueError(f"--shard auto: the pod name {pod_name!r} gives ordinal {index}, not below "
                             f"--total-shards {total} (more replicas than --total-shards?)")
        return Shard(index, total)
    try:
        index = int(shard, 10)
    except ValueError:
        raise ValueError(f"--shard must be a number (0..M-1) or 'auto', not {shard!r}") from None
    return Shard(index, total)
