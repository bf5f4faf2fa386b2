"""Redis Sentinel discovery: the primary a set of sentinels monitors under one name, or every primary
they monitor, and the replicas of each.

The sentinels are asked in order until one answers ``SENTINEL MASTER <name>`` (without a name,
``SENTINEL MASTERS``) and, for each primary, ``SENTINEL REPLICAS <name>`` (``SENTINEL SLAVES``
before Redis 5). Labels: ``master_name`` and
``role`` (``primary``/``replica``). The primary is always listed, even while the sentinel holds it
subjectively or objectively down (its poll then says it is down, and a failover replaces it in the
next refresh); replicas flagged ``s_down``, ``o_down`` or ``disconnected`` are left out: the sentinel
itself cannot reach them, and they come back on the refresh after they recover.

The credentials are sent to the sentinel too; a sentinel with no password configured is asked again
without them (see ``redis_cluster.connect``), so one set serves password-protected data nodes
behind open sentinels. TLS is handled as for the cluster seeds (``rediss://`` or a ``tls`` block).
"""

from __future__ import annotations

import redis

from exporter.discovery.base import DiscoveryError, Found
from exporter.discovery.redis_cluster import (
    MAX_NODES,
    Malformed,
    Seed,
    ask_in_order,
    command,
    connect,
    describe,
    join_host_port,
    pairs,
    port_number,
    text,
)
from exporter.targets import TLSConfig

DEFAULT_PORT = 26379
PRIMARY, REPLICA = "primary", "replica"
UNREACHABLE_FLAGS = frozenset({"s_down", "o_down", "disconnected"})


def discover(seed_urls: list[str], *, master_name: str | None, username: str | None, password: str | None,
             tls: TLSConfig | None, timeout: float) -> list[Found]:
    """The primary monitored as ``master_name`` and its reachable replicas; with no ``master_name``,
    every primary the sentinel monitors (``SENTINEL MASTERS``) and the replicas of each (see the
    module doc)."""

    def ask(seed: Seed) -> list[Found]:
        with connect(seed, username=username, password=password, tls=tls, timeout=timeout) as conn:
            primaries: list[object]
            if master_name is not None:
                primaries = [_ask_sentinel(conn, seed, password, "MASTER", master_name)]
            else:
                masters = _ask_sentinel(conn, seed, password, "MASTERS")
                if not isinstance(masters, list):
                    raise DiscoveryError(f"{seed}: malformed SENTINEL reply: expected a list of masters")
                if not masters:
                    raise DiscoveryError(f"{seed}: the sentinel monitors no master")
                if len(masters) > MAX_NODES:
                    raise DiscoveryError(f"{seed}: the sentinel lists {len(masters)} masters, more than "
                                         f"{MAX_NODES}")
                primaries = masters
            groups = []
            subcommand = "REPLICAS"
            for primary in primaries:
                try:
                    name = master_name if master_name is not None else text(pairs(primary).get("name", ""))
                except Malformed as exc:
                    raise DiscoveryError(f"{seed}: malformed SENTINEL reply: {describe(exc, password)}") from None
                if not name:
                    raise DiscoveryError(f"{seed}: malformed SENTINEL reply: a master has no name")
                try:
                    replicas = command(conn, seed, password, "SENTINEL", subcommand, name)
                except redis.exceptions.ResponseError as exc:
                    if subcommand == "SLAVES":
                        raise DiscoveryError(f"{seed}: SENTINEL REPLICAS: {describe(exc, password)}") from None
                    subcommand = "SLAVES"  # before Redis 5 the subcommand was SLAVES
                    replicas = _ask_sentinel(conn, seed, password, subcommand, name)
                groups.append((name, primary, replicas))
        try:
            out: dict[str, Found] = {}
            for name, primary, replicas in groups:
                for found in _nodes(name, primary, replicas):
                    out.setdefault(found.key, found)  # one node under two names is one target
        except (Malformed, ValueError, TypeError) as exc:
            raise DiscoveryError(f"{seed}: malformed SENTINEL reply: {describe(exc, password)}") from None
        if len(out) > MAX_NODES:
            raise DiscoveryError(f"{seed}: the sentinel lists {len(out)} nodes, more than {MAX_NODES}")
        return list(out.values())

    return ask_in_order(seed_urls, DEFAULT_PORT, tls, "sentinel", ask)


def _ask_sentinel(conn: redis.Connection, seed: Seed, password: str | None, *args: str) -> object:
    """``SENTINEL <args>``, its error replies turned into the messages an operator can act on."""
    try:
        return command(conn, seed, password, "SENTINEL", *args)
    except redis.exceptions.ResponseError as exc:
        message = str(exc).lower()
        if "no such master" in message:
            raise DiscoveryError(f"{seed}: the sentinel monitors no master named '{args[-1]}'") from None
        if "unknown command" in message:
            raise DiscoveryError(f"{seed}: not a sentinel (it does not know SENTINEL)") from None
        raise DiscoveryError(f"{seed}: SENTINEL {args[0]}: {describe(exc, password)}") from None


def _address(fields: dict[str, object]) -> str | None:
    host = text(fields.get("ip", ""))
    port = port_number(fields.get("port", 0))
    if not host or host == "?" or not port:
        return None
    return join_host_port(host, port)


def _nodes(name: str, primary_reply: object, replicas_reply: object) -> list[Found]:
    primary = pairs(primary_reply)
    primary_address = _address(primary)
    if primary_address is None:
        raise Malformed("the master has no address")
    out = [Found(primary_address, primary_address, (("master_name", name), ("role", PRIMARY)))]
    if not isinstance(replicas_reply, list):
        raise Malformed("expected a list of replicas")
    for raw in replicas_reply:
        replica = pairs(raw)
        flags = set(text(replica.get("flags", "")).split(","))
        address = _address(replica)
        # Right after a failover the old primary can still be listed among the replicas.
        if flags & UNREACHABLE_FLAGS or address is None or address == primary_address:
            continue
        if all(f.key != address for f in out):
            out.append(Found(address, address, (("master_name", name), ("role", REPLICA))))
    return out
