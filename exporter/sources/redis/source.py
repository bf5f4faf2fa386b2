"""RedisSource: one persistent connection, one round trip per poll.

Each poll pipelines ``INFO ALL`` and, at most once a minute, ``CONFIG GET`` (settings the audit
reads and Redis 5 lacks in INFO): the settings kept, by name, where the last INFO said Redis 7
or later (which takes several names), else ``*`` (every setting, ~200 pairs). A new connection
also sends ``CLIENT SETNAME`` in the same round trip, unless the capability probes found it
unavailable (``capabilities``). A plain ``redis://`` poll that a server resets before any reply
gets one TLS handshake to tell a TLS-only port (``tls_required``) from a plain server dropping
clients (``reset``).
"""

from __future__ import annotations

import logging
import time

from exporter import errors as E
from exporter.errors import PollError
from exporter.sources.base import PersistentConnectionSource, Reading
from exporter.sources.redis.capabilities import Capabilities
from exporter.sources.redis.connection import AUTH_CODES, classify, new_connection, speaks_tls
from exporter.sources.redis.fork import ForkRisk
from exporter.sources.redis.info import config_dict, parse_info
from exporter.sources.redis.mapping import map_info
from exporter.sources.redis.prefixes import PrefixSamples, sample_prefixes
from exporter.sources.redis.resp import Connection, ProtocolError, ServerError, wrong_arity
from exporter.sources.redis.tables import CONFIG_KEYS, REDIS, REDIS_UP
from exporter.targets import RedisTarget

log = logging.getLogger("exporter.sources.redis")  # the package's name: one logger for the source

CLIENT_NAME = "cache-exporter"
CONFIG_REFRESH_SECONDS = 60.0
CONFIG_ALL = ("CONFIG", "GET", "*")
# Redis 7.0+: the settings kept, by name, in one CONFIG GET; a tenth of the reply of "*" to
# read, parse and free, once a minute per target.
CONFIG_KEPT = ("CONFIG", "GET", *sorted(CONFIG_KEYS))


class RedisSource(PersistentConnectionSource):
    """Polls one Redis/Valkey target over a persistent connection."""

    store = REDIS
    up_family = REDIS_UP
    EXPECTED_ERRORS = (OSError, ServerError, ProtocolError, UnicodeError)

    def __init__(self, target: RedisTarget) -> None:
        super().__init__(target)
        self.target: RedisTarget = target
        self.conn: Connection | None = None
        self.fresh_connection = False
        self.answered = False  # the current connection got a reply: the server speaks RESP in the clear
        self.caps = Capabilities(target.name)
        self.config_values: dict[str, str] = {}
        self.config_fetched_at = float("-inf")
        self.server_major = 0  # the major version the last INFO gave (0 before the first)
        self.config_by_name_refused = False  # CONFIG_KEPT was refused: "*" from then on
        self.fork = ForkRisk(target.forecast_window)
        self.prefix_samples: PrefixSamples | None = None
        self.prefix_due = 0.0

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.answered = conn.answered  # poll() reads it once the failed connection is closed
            conn.close()

    def _connect(self, password: str | None) -> None:
        conn = new_connection(self.target, password, self.guard)
        self.conn = conn  # before connecting: close() must reach a half-open connection
        self.answered = False
        conn.connect()
        self.connections_opened += 1
        self.fresh_connection = True

    def _poll_once(self) -> Reading:
        conn = self.conn
        assert conn is not None
        now = time.monotonic()
        commands: list[tuple[str, ...]] = []
        if self.fresh_connection and self.caps.wanted("client", now):
            commands.append(("CLIENT", "SETNAME", CLIENT_NAME))
        commands.append(("INFO", "ALL"))
        # CONFIG waits for the poll after a connect, so no poll sends more than 2 commands.
        want_config = (len(commands) == 1 and now - self.config_fetched_at >= CONFIG_REFRESH_SECONDS
                       and self.caps.wanted("config", now))
        config_command = CONFIG_KEPT if self.server_major >= 7 and not self.config_by_name_refused else CONFIG_ALL
        if want_config:
            commands.append(config_command)

        replies = conn.execute(commands)
        self.fresh_connection = False
        for reply in replies:
            # Not a missing capability: the connection may not run anything (AUTH needed, or lost).
            if isinstance(reply, ServerError) and reply.code in ("NOAUTH", "WRONGPASS"):
                raise reply

        by_name = dict(zip((c[0] for c in commands), replies, strict=True))
        if "CLIENT" in by_name:
            self.caps.note("client", by_name["CLIENT"], now)
        if want_config:
            reply = by_name["CONFIG"]
            refused_by_name = (config_command is CONFIG_KEPT and isinstance(reply, ServerError)
                               and reply.code not in AUTH_CODES)
            if refused_by_name:
                self.config_by_name_refused = True
            # An arity error only says it takes one name (a proxy, a fork that says 7.0): "*" at the
            # next poll, not a missing capability.
            if not (refused_by_name and wrong_arity(reply)) and self.caps.note("config", reply, now):
                self.config_values = config_dict(reply)
                self.config_fetched_at = now

        info_reply = by_name["INFO"]
        if isinstance(info_reply, ServerError):
            raise info_reply  # classify() words it ("INFO refused: ...") and gives its reason
        if not isinstance(info_reply, (bytes, str)):
            raise PollError(E.PROTOCOL, f"INFO returned {type(info_reply).__name__}, expected a bulk string")
        text = info_reply.decode("utf-8", "replace") if isinstance(info_reply, bytes) else info_reply
        info = parse_info(text)
        self.server_major = _major(info.fields["redis_version"])
        self.guard.remaining()  # past the deadline (a huge reply on a busy CPU): stop, do not map it too
        reading = map_info(info, self.target, self.config_values, time.time())
        if self.target.managed is None:  # a managed service's forks happen on hosts nobody can see
            self.fork.observe(info, reading, now)
        self.caps.add_to(reading.samples)
        view = self.target.prefixes
        if view is not None:
            if now >= self.prefix_due:
                self.prefix_due = now + view.interval
                deadline = min(self.guard.deadline - 0.05 * self.target.timeout, time.monotonic() + view.max_time)
                sampled = sample_prefixes(conn, view, deadline)
                if isinstance(sampled, str):
                    reading.section_errors.append("prefixes")
                    log.info("target %s: per-prefix view unavailable this time (%s); next try in %s s",
                             self.target.name, sampled, view.interval)
                else:
                    self.prefix_samples = sampled
            for family, value, labels in self.prefix_samples or ():
                reading.samples.add(family, value, labels)
        reading.details["config"] = dict(self.config_values)
        reading.details["capabilities"] = self.caps.details()
        reading.details["connections_opened"] = self.connections_opened
        return reading

    def poll(self, deadline: float) -> Reading:
        try:
            return super().poll(deadline)
        except PollError as err:
            # A TLS-only port (ElastiCache Serverless on 6379 and 6380) resets a plain-text client
            # without a word: "reset" would send the user after maxclients and proxies.
            if (err.reason in (E.RESET, E.PROTOCOL) and self.target.scheme == "redis" and not self.answered
                    and not self.guard.tripped and speaks_tls(self.target.host, self.target.port, deadline)):
                raise PollError(E.TLS_REQUIRED, f"{self.target.address} answers a TLS handshake but reset "
                                                "plain-text RESP; use a rediss:// URL") from None
            raise

    def _classify(self, exc: BaseException) -> PollError:
        return classify(exc)


def _major(version: str) -> int:
    """The major version of ``redis_version`` (``7.2.4`` -> 7); 0 when it is not a number."""
    head = version.partition(".")[0]
    return int(head) if head.isdigit() else 0
