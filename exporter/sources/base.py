"""The contract between the scheduler and a source: poll one target, return a Reading."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from exporter import errors as E
from exporter.errors import PollError
from exporter.netio import Guard, GuardedSocket
from exporter.secrets import SecretUnavailable
from exporter.snapshot import MemoryView, Samples
from exporter.targets import Credentials, Target

log = logging.getLogger(__name__)


def read_password(credentials: Credentials | None) -> str | None:
    """The target's password, read now; a missing secret is a counted ``config`` failure."""
    try:
        return credentials.password() if credentials is not None else None
    except SecretUnavailable as exc:
        raise PollError(E.CONFIG, str(exc)) from None


@dataclass(slots=True)
class Reading:
    """What one successful poll saw. The scheduler turns it into a timed Snapshot."""

    samples: Samples
    memory: MemoryView = field(default_factory=MemoryView)
    details: dict[str, object] = field(default_factory=dict)
    malformed_fields: int = 0  # fields present but unparseable; counted, not fatal
    section_errors: list[str] = field(default_factory=list)  # optional sections that failed


@dataclass(slots=True)
class Capability:
    """Whether an optional command or section works on this server; None = not probed yet.

    One that failed is skipped until ``reprobe_at`` (monotonic): the server may have been
    upgraded or its ACL changed since."""

    available: bool | None = None
    reprobe_at: float = 0.0

    def wanted(self, now: float) -> bool:
        return self.available is not False or now >= self.reprobe_at


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


class PersistentConnectionSource:
    """Polling over one persistent connection: the part every TCP source shares.

    Arms the per-poll guard, connects when there is no connection (reading the secret then),
    and on failure closes the connection and classifies the error. A down target gets one
    connection attempt per poll and no more: the scheduler's interval already paces retries,
    and any further wait would delay noticing that the server is back by more than an interval.
    Subclasses implement ``_connect`` (which sets ``self.conn``) and ``_poll_once``, and may
    extend ``_classify``; a connection without ``.sock`` and ``.close()`` overrides ``_socket``
    and ``close``. Only ``EXPECTED_ERRORS`` are classified: anything else is a bug in the
    source, and goes on to the scheduler, which logs its traceback.
    """

    store: ClassVar[str]
    up_family: ClassVar[str]
    EXPECTED_ERRORS: ClassVar[tuple[type[BaseException], ...]] = (OSError,)

    def __init__(self, target: Target) -> None:
        self.target = target
        self.guard = Guard(target.max_reply_size)
        self.connections_opened = 0
        self.conn: Any = None  # the persistent connection, None until (re)connected

    # -- for subclasses -------------------------------------------------------------------

    def _connect(self, password: str | None) -> None:
        raise NotImplementedError

    def _poll_once(self) -> Reading:
        raise NotImplementedError

    def _socket(self) -> GuardedSocket | None:
        return self.conn.sock if self.conn is not None else None

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def _classify(self, exc: BaseException) -> PollError:
        return PollError(E.classify_os_error(exc) or E.ERROR, E.describe(exc))

    # -- the shared flow ----------------------------------------------------------------

    def abort(self) -> None:
        """Called by the scheduler's watchdog, from another thread, at the poll's deadline."""
        self.guard.tripped = E.TIMEOUT  # the poll thread will see EOF: it was a timeout
        sock = self._socket()
        if sock is not None:
            sock.abort()

    def poll(self, deadline: float) -> Reading:
        self.guard.arm(deadline)
        reused = self.conn is not None
        try:
            return self._attempt()
        except PollError as err:
            if not (reused and err.reason == E.RESET and not self.guard.tripped
                    and time.monotonic() < self.guard.deadline):
                raise
            # The connection kept since the last poll was closed by the server: it restarted
            # (or dropped an idle client) in between. That is not this poll's failure: a server
            # that is up must not read as down for a whole interval. Once, on a new connection;
            # a server that resets every connection still fails here.
            log.debug("target %s: kept connection closed by the server (%s); reconnecting", self.target.name, err)
        return self._attempt()

    def _attempt(self) -> Reading:
        try:
            if self.conn is None:
                self._connect(read_password(getattr(self.target, "credentials", None)))
            return self._poll_once()
        except PollError as exc:
            err = exc
        except self.EXPECTED_ERRORS as exc:
            err = self._classify(exc)
        except BaseException:
            self.close()
            raise
        if self.guard.tripped and err.reason != self.guard.tripped:
            err = PollError(self.guard.tripped, err.detail)  # a limit fired; the rest is its echo
        self.close()
        raise err from None
