"""What every discovery kind returns, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass


class DiscoveryError(Exception):
    """Discovery could not produce a list (seed unreachable, bad file, no DNS answer): the caller
    keeps the last good list and counts the failure. The message never carries a secret."""


@dataclass(frozen=True)
class Found:
    """One discovered node. ``address`` is what the template's own ``url``/``address`` would hold
    (``host:port``; the template's scheme and credentials apply), ``labels`` are added to the
    template's (e.g. ``shard``, ``role``), ``key`` is stable across refreshes for the same node and
    unique within one discovery (it becomes part of the target's name)."""

    address: str
    key: str
    labels: tuple[tuple[str, str], ...] = ()
