"""Capability probes: optional commands (CONFIG, CLIENT) that a server may have renamed away
or denied by ACL (ElastiCache, Memorystore, least-privilege users). One is switched off after
its first error reply, logged once, re-probed hourly: no error counts, no log spam;
``redis_capability{capability}`` says which work."""

from __future__ import annotations

import logging

from exporter.snapshot import Samples
from exporter.sources.base import Capability
from exporter.sources.redis.resp import ServerError
from exporter.sources.redis.tables import CAPABILITY

log = logging.getLogger("exporter.sources.redis")

CAPABILITY_REPROBE_SECONDS = 3600.0


class Capabilities:
    """What one target's server allows, by command name (``config``, ``client``)."""

    def __init__(self, target_name: str) -> None:
        self.target_name = target_name
        self.by_name = {"config": Capability(), "client": Capability()}

    def wanted(self, name: str, now: float) -> bool:
        return self.by_name[name].wanted(now)

    def note(self, name: str, reply: object, now: float) -> bool:
        """Record whether ``reply`` (a reply, or the ServerError read instead) shows the
        command works; returns that."""
        cap = self.by_name[name]
        ok = not isinstance(reply, ServerError)
        if not ok and cap.available is not False:
            # Once per target: a disabled command is a fact about the server, not an error.
            text = reply.text if isinstance(reply, ServerError) else str(reply)
            log.info("target %s: %s is unavailable (%s); skipping it, re-checking hourly",
                     self.target_name, name.upper(), text.split("\n")[0][:120])
        cap.available = ok
        if not ok:
            cap.reprobe_at = now + CAPABILITY_REPROBE_SECONDS
        return ok

    def add_to(self, samples: Samples) -> None:
        for name, cap in self.by_name.items():
            if cap.available is not None:
                samples.add(CAPABILITY, int(cap.available), (("capability", name),))

    def details(self) -> dict[str, bool | None]:
        return {name: cap.available for name, cap in self.by_name.items()}
