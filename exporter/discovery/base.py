"""What every discovery kind returns, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass

from exporter import errors as E
from exporter.errors import PollError
from exporter.netio import Guard


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


def failure(exc: BaseException, guard: Guard) -> str:
    """A connection's failure in the words a poll's would get (``errors`` classifies both alike):
    ``connection refused``, ``timed out``, ``reply exceeded max_reply_size``, ... The detail is kept
    only where the reason alone does not say enough (TLS, anything unclassified)."""
    reason = guard.tripped or E.classify_os_error(exc) or E.ERROR
    return str(PollError(reason, E.describe(exc) if reason in (E.TLS, E.ERROR) else ""))
