"""ElastiCache-style memcached auto-discovery: ``config get cluster`` on the configuration endpoint.

The reply (text protocol) is ``CONFIG cluster 0 <length>\\r\\n<version>\\n<host|ip|port> ...\\n\\r\\nEND\\r\\n``.
Plain memcached answers ``ERROR``: it is no configuration endpoint, and saying so beats an
empty fleet.
"""

from __future__ import annotations

import ssl
import time

from exporter import errors as E
from exporter.discovery.base import DiscoveryError, Found, failure
from exporter.netio import Guard, GuardedSocket, open_stream

MAX_REPLY = 1 * 2**20


def discover(host: str, port: int, timeout: float, tls: ssl.SSLContext | None = None,
             server_name: str | None = None) -> list[Found]:
    """One Found per node of the cluster (key ``host:port``; address ``ip:port`` when the
    endpoint gives an IP, as the nodes' names may not resolve from here)."""
    endpoint = f"{host}:{port}"
    guard = Guard(MAX_REPLY)
    guard.arm(time.monotonic() + timeout)
    try:
        sock = open_stream(guard, (host, port), tls, server_name)
        try:
            sock.sendall(b"config get cluster\r\n")
            reply = _read_reply(sock)
        finally:
            sock.close()
    except OSError as exc:
        if guard.tripped == E.TOO_LARGE:
            raise DiscoveryError(f"{endpoint}: reply to config get cluster larger than 1 MiB") from None
        raise DiscoveryError(f"{endpoint}: config get cluster failed: {failure(exc, guard)}") from None
    return parse(reply, endpoint)


def _read_reply(sock: GuardedSocket) -> bytes:
    """Up to the reply's end; the guard bounds the wait (its deadline) and the size (MAX_REPLY)."""
    buf = b""
    while not (buf.endswith(b"END\r\n") or buf.endswith(b"ERROR\r\n") or
               (buf.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")) and buf.endswith(b"\r\n"))):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def parse(reply: bytes, endpoint: str) -> list[Found]:
    """The nodes in a ``config get cluster`` reply; DiscoveryError for anything else."""
    if reply.startswith(b"ERROR") or reply.startswith(b"CLIENT_ERROR") or reply.startswith(b"SERVER_ERROR"):
        raise DiscoveryError(f"{endpoint}: not a cluster configuration endpoint "
                             "(it answered 'config get cluster' with an error; plain memcached does)")
    head, _, rest = reply.partition(b"\r\n")
    parts = head.split()
    if len(parts) != 4 or parts[:2] != [b"CONFIG", b"cluster"] or not parts[3].isdigit():
        raise DiscoveryError(f"{endpoint}: unexpected reply to config get cluster")
    body = rest[:int(parts[3])]
    if len(body) != int(parts[3]) or not rest[int(parts[3]):].endswith(b"END\r\n"):
        raise DiscoveryError(f"{endpoint}: truncated reply to config get cluster")
    lines = body.decode("ascii", "replace").strip().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DiscoveryError(f"{endpoint}: config get cluster reply has no version and node list")
    found: dict[str, Found] = {}
    for node in lines[1].split():
        fields = node.split("|")
        if len(fields) != 3 or not fields[2].isdigit() or not 1 <= int(fields[2]) <= 65535 or not fields[0]:
            raise DiscoveryError(f"{endpoint}: malformed node {node[:100]!r} in config get cluster reply")
        name, ip, port = fields
        key = f"{name}:{port}"
        address = f"[{ip or name}]:{port}" if ":" in (ip or name) else f"{ip or name}:{port}"
        found.setdefault(key, Found(address, key))
    return list(found.values())
