"""Redis Cluster discovery: every primary and replica of a cluster, asked of one of its nodes.

The seeds are asked in order until one answers ``CLUSTER SHARDS`` (Redis >= 7) or, where that
command is unknown or denied, ``CLUSTER NODES``. Each node becomes a ``Found`` labelled with its
``shard`` and ``role``. The shard is named by the lowest slot range its primary serves
(``"0-5460"``), which survives a failover (the promoted replica takes over the same slots); a shard
that serves no slot is named by its shard id, or its primary's node id where the server gives none.

Excluded: nodes the cluster marks ``fail`` (agreed failed), ``handshake`` (not yet a member) or
``noaddr`` (no known address), and in ``CLUSTER SHARDS`` those with ``health: failed``. A node only
suspected by the seed (``fail?``) or still loading is kept: the poll of the target tells the rest.

The connection helpers here (seed parsing, TLS, auth, error wording) are shared with
``redis_sentinel``. TLS follows ``exporter/sources/redis/connection.py``: a ``rediss://`` (or ``valkeys://``)
seed, or a bare ``host:port`` seed with a ``tls`` block, is reached over TLS with the context
``client_tls_context`` builds from that block (the system CAs when it is absent).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from exporter import errors as E
from exporter.discovery.base import DiscoveryError, Found
from exporter.netio import Guard, GuardedSocket, client_tls_context, open_stream
from exporter.targets import TLSConfig

DEFAULT_PORT = 6379
MESSAGE_LIMIT = 200  # a server's error text is quoted, never at length
# What one seed's answer may cost. redis-py reads whatever length a reply declares, for as long as
# each read comes within the timeout: a hostile or broken seed could stream without end. 10 000
# nodes is ten times Redis Cluster's recommended maximum, and their replies fit in the byte cap
# with room to spare (sizes per node in docs/discovery-redis.md).
MAX_NODES = 10_000
MAX_REPLY_BYTES = 16 * 2**20
DEADLINE_TIMEOUTS = 10  # a seed's whole exchange must end within this many timeouts


# --- shared with redis_sentinel -------------------------------------------------------------

@dataclass(frozen=True)
class Seed:
    """Where to ask: never holds credentials, so it is safe in a message."""

    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return join_host_port(self.host, self.port)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_seed(url: str, tls: TLSConfig | None, default_port: int = DEFAULT_PORT) -> Seed:
    """``redis://``, ``rediss://``, ``valkey(s)://`` or a bare ``host:port``. The URL is never
    echoed: its user part may hold a password."""
    text = url.strip()
    if "@" in text:  # as for a target's url: secrets come from password_env/password_file only
        raise DiscoveryError("credentials in a seed URL are not allowed; use username and password_env/password_file")
    if "://" in text:
        scheme, _, rest = text.partition("://")
        scheme = {"valkey": "redis", "valkeys": "rediss"}.get(scheme.lower(), scheme.lower())
        if scheme not in ("redis", "rediss"):
            raise DiscoveryError(f"seed scheme '{scheme[:20]}' is not supported; use redis:// or rediss://")
        use_tls = scheme == "rediss"
    else:
        rest, use_tls = text, tls is not None
    try:
        parts = urlsplit("//" + rest)
        host, port = parts.hostname, parts.port or default_port
    except ValueError:
        raise DiscoveryError("a seed address has an invalid port") from None
    if not host:
        raise DiscoveryError("a seed address has no host")
    return Seed(host, port, use_tls)


class _Connection(redis.Connection):
    """redis-py's connection opened by ``netio.open_stream``, the poller's own opener: the same TLS
    context (discovery and polling trust exactly the same certificates) and a ``Guard`` that caps
    the whole answer of a seed at ``MAX_REPLY_BYTES`` and its ``deadline``, whatever length its
    replies declare; the connect itself gets one ``socket_connect_timeout``."""

    tls_context: ssl.SSLContext | None = None
    server_name: str | None = None
    deadline: float = float("inf")

    def _connect(self) -> GuardedSocket:
        self.guard = Guard(MAX_REPLY_BYTES)
        connect_timeout = self.socket_connect_timeout
        self.guard.arm(self.deadline if connect_timeout is None
                       else min(self.deadline, time.monotonic() + connect_timeout))
        sock = open_stream(self.guard, (self.host, self.port), self.tls_context, self.server_name)
        self.guard.deadline = self.deadline
        sock.settimeout(self.socket_timeout)  # each read too, within the deadline
        return sock


def _too_costly(conn: redis.Connection) -> str | None:
    """What a seed's answer overran, if the connection's guard stopped it."""
    if getattr(getattr(conn, "guard", None), "tripped", None) == E.TOO_LARGE:
        return f"the answer is larger than {MAX_REPLY_BYTES // 2**20} MiB"
    # Past the deadline by the time the error arrives: the last read was cut to what was left of it.
    if time.monotonic() >= getattr(conn, "deadline", float("inf")):
        return f"no complete answer within {DEADLINE_TIMEOUTS} timeouts"
    return None


def describe(exc: BaseException, password: str | None) -> str:
    """An exception as a short message that never carries the password."""
    text = str(exc) or type(exc).__name__
    if password:
        text = text.replace(password, "***")
    return text[:MESSAGE_LIMIT]


def _no_password_set(exc: redis.exceptions.RedisError) -> bool:
    # Redis 6+ refuses AUTH when no password is configured; Redis < 6 says "no password is set".
    text = str(exc).lower()
    return "without any password configured" in text or "no password is set" in text


@contextmanager
def connect(seed: Seed, *, username: str | None, password: str | None, tls: TLSConfig | None,
            timeout: float) -> Iterator[redis.Connection]:
    """An open connection to ``seed``, authenticated if credentials are given and the server wants
    them (a server with no password configured is asked again without: one set of credentials
    can then serve both password-protected data nodes and open sentinels). Raises DiscoveryError."""
    context = None
    if seed.tls:
        try:
            context = client_tls_context(tls or TLSConfig())
        except (OSError, ValueError) as exc:
            raise DiscoveryError(f"cannot load TLS files: {describe(exc, password)}") from None

    deadline = time.monotonic() + DEADLINE_TIMEOUTS * timeout

    opened: list[_Connection] = []

    def attempt(user: str | None, secret: str | None) -> redis.Connection:
        conn = _Connection(host=seed.host, port=seed.port, username=user, password=secret,
                           socket_timeout=timeout, socket_connect_timeout=timeout,
                           retry=Retry(NoBackoff(), 0), health_check_interval=0, protocol=2,
                           driver_info=None)
        conn.tls_context = context
        conn.server_name = tls.server_name if tls else None
        conn.deadline = deadline
        opened.append(conn)
        conn.connect()
        return conn

    try:
        try:
            conn = attempt(username, password)
        except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as exc:
            if not (password and _no_password_set(exc)):
                raise
            conn = attempt(None, None)
    except redis.exceptions.AuthenticationError as exc:
        raise DiscoveryError(f"{seed}: authentication failed: {describe(exc, password)}") from None
    except (redis.exceptions.RedisError, OSError, UnicodeError) as exc:
        overrun = _too_costly(opened[-1]) if opened else None
        raise DiscoveryError(f"{seed}: {overrun or describe(exc, password)}") from None
    try:
        yield conn
    finally:
        try:
            conn.disconnect()
        except Exception:  # closing a broken socket must not hide the real outcome
            pass


def command(conn: redis.Connection, seed: Seed, password: str | None, *args: str) -> Any:
    """One command's reply. A server error reply is raised as ``redis.ResponseError`` for the
    caller to judge; anything else (no answer, a reply that is not RESP) is DiscoveryError."""
    try:
        conn.send_command(*args)
        return conn.read_response()
    except redis.exceptions.ResponseError:
        raise
    except (redis.exceptions.RedisError, OSError, UnicodeError, ValueError) as exc:
        raise DiscoveryError(f"{seed}: {' '.join(args[:2])}: {_too_costly(conn) or describe(exc, password)}") from None


class Malformed(Exception):
    """A reply of the wrong shape; turned into DiscoveryError naming the seed and command."""


def text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise Malformed(f"expected a string, got {type(value).__name__}")


def pairs(value: object) -> dict[str, Any]:
    """A RESP2 flat ``[key, value, key, value, ...]`` list as a dict."""
    if not isinstance(value, list) or len(value) % 2:
        raise Malformed("expected a list of field/value pairs")
    return {text(value[i]): value[i + 1] for i in range(0, len(value), 2)}


def port_number(value: object) -> int:
    try:
        port = int(text(value))
    except ValueError:
        raise Malformed("a port is not a number") from None
    if not 0 <= port <= 65535:
        raise Malformed(f"port {port} is out of range")
    return port


def ask_in_order(seeds: list[str], default_port: int, tls: TLSConfig | None, what: str,
                 ask: Any) -> list[Found]:
    """Call ``ask(seed)`` for each seed until one returns; every failure is kept for the message."""
    if not seeds:
        raise DiscoveryError(f"no {what} to ask")
    failures: list[str] = []
    for url in seeds:
        try:
            return ask(parse_seed(url, tls, default_port))
        except DiscoveryError as exc:
            failures.append(str(exc))
    if len(failures) == 1:
        raise DiscoveryError(failures[0])
    raise DiscoveryError(f"no {what} answered: " + "; ".join(failures))


# --- cluster ----------------------------------------------------------------------------

PRIMARY, REPLICA = "primary", "replica"
EXCLUDED_FLAGS = frozenset({"fail", "handshake", "noaddr"})


def discover(seed_urls: list[str], *, username: str | None, password: str | None,
             tls: TLSConfig | None, timeout: float) -> list[Found]:
    """Every usable primary and replica of the cluster the seeds belong to (see the module doc)."""

    def ask(seed: Seed) -> list[Found]:
        my_id = None
        with connect(seed, username=username, password=password, tls=tls, timeout=timeout) as conn:
            # Redis < 7 has no SHARDS; an ACL may allow NODES only. NODES decides.
            for how in ("CLUSTER SHARDS", "CLUSTER NODES"):
                try:
                    reply = command(conn, seed, password, *how.split())
                    break
                except redis.exceptions.ResponseError as exc:
                    if _not_cluster(exc):
                        raise DiscoveryError(f"{seed}: not a cluster node") from None
                    if how == "CLUSTER NODES":
                        raise DiscoveryError(f"{seed}: {how}: {describe(exc, password)}") from None
            if how == "CLUSTER SHARDS" and _has_unknown_address(reply):
                my_id = _my_id(conn, seed, password)
        try:
            nodes = (_from_shards(reply, seed, my_id) if how == "CLUSTER SHARDS"
                     else _from_nodes(text(reply), seed.host))
        except (Malformed, ValueError, TypeError, IndexError) as exc:
            raise DiscoveryError(f"{seed}: malformed {how} reply: {describe(exc, password)}") from None
        if not nodes:
            raise DiscoveryError(f"{seed}: {how} lists no usable node")
        if len(nodes) > MAX_NODES:
            raise DiscoveryError(f"{seed}: {how} lists {len(nodes)} nodes, more than {MAX_NODES}")
        return nodes

    return ask_in_order(seed_urls, DEFAULT_PORT, tls, "cluster seed", ask)


def _not_cluster(exc: redis.exceptions.ResponseError) -> bool:
    return "cluster support disabled" in str(exc).lower()


def _found(host: str, port: int, shard: str, role: str) -> Found:
    address = join_host_port(host, port)
    return Found(address=address, key=address, labels=(("shard", shard), ("role", role)))


def _dedupe(found: list[Found]) -> list[Found]:
    seen: dict[str, Found] = {}
    for f in found:
        seen.setdefault(f.key, f)
    return sorted(seen.values(), key=lambda f: (dict(f.labels)["shard"], dict(f.labels)["role"], f.key))


def _has_unknown_address(reply: object) -> bool:
    # Cheap look for a node with an empty ip: a node that has never met another does not know its own.
    # A malformed reply answers False here and is reported by the parser.
    if not isinstance(reply, list):
        return False
    try:
        return any(not text(pairs(node).get("ip", "?")) for shard in reply
                   for node in pairs(shard).get("nodes", ()))
    except (Malformed, TypeError, AttributeError):
        return False


def _my_id(conn: redis.Connection, seed: Seed, password: str | None) -> str | None:
    try:
        return text(command(conn, seed, password, "CLUSTER", "MYID"))
    except (redis.exceptions.ResponseError, Malformed):
        return None


def _from_shards(reply: object, seed: Seed, my_id: str | None) -> list[Found]:
    """``my_id``: the seed's own node id, whose empty ip (a node alone, that never met another) is
    the seed's host."""
    use_tls = seed.tls
    if not isinstance(reply, list):
        raise Malformed("expected a list of shards")
    out: list[Found] = []
    for raw in reply:
        shard = pairs(raw)
        slots = shard.get("slots", [])
        nodes = shard.get("nodes", [])
        if not isinstance(slots, list) or len(slots) % 2 or not isinstance(nodes, list):
            raise Malformed("a shard has no slot list or node list")
        ranges = sorted((int(text(slots[i])), int(text(slots[i + 1]))) for i in range(0, len(slots), 2))
        members = [pairs(n) for n in nodes]
        primary = next((m for m in members if text(m.get("role", "")) == "master"), None)
        if ranges:
            name = f"{ranges[0][0]}-{ranges[0][1]}"
        elif "shard-id" in shard or "id" in shard:
            name = text(shard.get("shard-id", shard.get("id")))
        elif primary is not None and "id" in primary:
            name = text(primary["id"])
        else:
            continue  # a shard with neither slots nor a primary: nothing stable to call it
        for m in members:
            if text(m.get("health", "online")) == "failed":
                continue
            host = next((h for h in (text(m.get(k, "")) for k in ("endpoint", "ip", "hostname"))
                         if h and h != "?"), None)
            if host is None and my_id is not None and text(m.get("id", "")) == my_id:
                host = seed.host
            ports = ("tls-port", "port") if use_tls else ("port", "tls-port")
            port = next((port_number(m[k]) for k in ports if k in m and port_number(m[k])), None)
            if host is None or port is None:
                continue
            role = PRIMARY if text(m.get("role", "")) == "master" else REPLICA
            out.append(_found(host, port, name, role))
    return _dedupe(out)


def _from_nodes(reply: str, seed_host: str) -> list[Found]:
    """``CLUSTER NODES``: ``<id> <ip:port@cport[,hostname]> <flags> <primary id> <ping> <pong>
    <epoch> <link> <slot>...``, one node per line. The seed (``myself``) with an empty ip, a node
    that never met another, is at ``seed_host``."""
    rows = []
    for line in reply.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 8:
            raise Malformed(f"a node line has {len(fields)} fields, expected at least 8")
        node_id, addr, flags, primary_id = fields[0], fields[1], set(fields[2].split(",")), fields[3]
        hostport = addr.split("@", 1)[0].split(",", 1)[0]
        host, sep, port_text = hostport.rpartition(":")
        if not sep:
            raise Malformed("a node address has no port")
        host = host.strip("[]")
        if not host and "myself" in flags:
            host = seed_host
        ranges = []
        for s in fields[8:]:
            if s.startswith("["):
                continue  # a slot being migrated or imported: still served by its owner
            lo, _, hi = s.partition("-")
            ranges.append((int(lo), int(hi or lo)))
        rows.append((node_id, host, port_number(port_text), flags, primary_id, sorted(ranges)))

    shard_of = {r[0]: (f"{r[5][0][0]}-{r[5][0][1]}" if r[5] else r[0]) for r in rows if "master" in r[3]}
    out: list[Found] = []
    for node_id, host, port, flags, primary_id, _ in rows:
        if flags & EXCLUDED_FLAGS or not host or host == "?" or not port:
            continue
        if "master" in flags:
            out.append(_found(host, port, shard_of[node_id], PRIMARY))
        elif "slave" in flags:
            out.append(_found(host, port, shard_of.get(primary_id, primary_id), REPLICA))
    return _dedupe(out)
