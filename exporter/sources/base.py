"""The contract between the scheduler and a source: poll one target, return a Reading."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from exporter.snapshot import MemoryView, Samples
from exporter.targets import Target


@dataclass(slots=True)
class Reading:
    """What one successful poll saw. The scheduler turns it into a timed Snapshot."""

    samples: Samples
    memory: MemoryView = field(default_factory=MemoryView)
    details: dict[str, object] = field(default_factory=dict)
    malformed_fields: int = 0  # fields present but unparseable; counted, not fatal
    section_errors: list[str] = field(default_factory=list)  # optional sections that failed


class Source(Protocol):
    """One instance per target; owns that target's persistent connection.

    ``poll`` must return or raise ``PollError`` by ``deadline`` (a ``time.monotonic()``
    value) on its own; the scheduler's watchdog calls ``abort`` from another thread only as
    a last resort (e.g. a DNS lookup that ignores socket timeouts).
    """

    store: ClassVar[str]
    up_family: ClassVar[str]

    def __init__(self, target: Target) -> None: ...

    def poll(self, deadline: float) -> Reading: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...
