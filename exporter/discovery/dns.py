"""DNS discovery: A/AAAA records (one target per address) or SRV records (one per target:port).

A and AAAA go through the system resolver (``getaddrinfo``: /etc/hosts, nsswitch, the search
path, as everything else on the host), unless a ``nameserver`` is configured. SRV needs a DNS
client (the standard library has no SRV lookup): dnspython, which also serves A/AAAA when a
``nameserver`` is given.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from exporter.discovery.base import DiscoveryError, Found

if TYPE_CHECKING:  # dnspython is imported when a DNS template is first resolved
    import dns.resolver
    from dns.rdata import Rdata

RECORDS = ("A", "AAAA", "SRV")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def discover(names: list[str], record: str, port: int | None, nameserver: tuple[str, int] | None,
             timeout: float) -> list[Found]:
    """One Found per address (A/AAAA) or SRV target, labelled ``dns_name`` (the name queried).

    A name that has no record of the type is an error, as is one that does not exist: an empty
    answer is more often a broken resolver than a fleet of zero (the last good list is kept)."""
    found: dict[str, Found] = {}
    for name in names:
        if record == "SRV":
            pairs = _srv(name, nameserver, timeout)
        else:
            assert port is not None
            pairs = [(address, port) for address in _addresses(name, record, nameserver, timeout)]
        for host, p in pairs:
            address = _hostport(host, p)
            found.setdefault(address, Found(address, address, (("dns_name", name),)))
    return list(found.values())


def _resolver(nameserver: tuple[str, int] | None, timeout: float) -> dns.resolver.Resolver:
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=nameserver is None)
    if nameserver is not None:
        resolver.nameservers = [nameserver[0]]
        resolver.port = nameserver[1]
    resolver.lifetime = timeout
    return resolver


def _query(name: str, record: str, nameserver: tuple[str, int] | None, timeout: float) -> list[Rdata]:
    import dns.exception
    import dns.resolver

    try:
        return list(_resolver(nameserver, timeout).resolve(name, record, search=nameserver is None))
    except dns.resolver.NXDOMAIN:
        raise DiscoveryError(f"{name}: no such name (NXDOMAIN)") from None
    except dns.resolver.NoAnswer:
        raise DiscoveryError(f"{name}: no {record} records") from None
    except dns.resolver.LifetimeTimeout:
        raise DiscoveryError(f"{name}: no answer for {record} within {timeout:g}s") from None
    except (dns.exception.DNSException, OSError) as exc:
        raise DiscoveryError(f"{name}: {record} lookup failed: {type(exc).__name__}: {exc}") from None


def _srv(name: str, nameserver: tuple[str, int] | None, timeout: float) -> list[tuple[str, int]]:
    from dns.rdtypes.IN.SRV import SRV

    records = [r for r in _query(name, "SRV", nameserver, timeout) if isinstance(r, SRV)]
    # Sorted: the order of an answer changes from query to query; the targets must not.
    return sorted((str(r.target).rstrip("."), int(r.port)) for r in records)


def _addresses(name: str, record: str, nameserver: tuple[str, int] | None, timeout: float) -> list[str]:
    if nameserver is not None:
        from dns.rdtypes.IN.A import A
        from dns.rdtypes.IN.AAAA import AAAA

        return sorted({r.address for r in _query(name, record, nameserver, timeout) if isinstance(r, (A, AAAA))})
    family = socket.AF_INET if record == "A" else socket.AF_INET6
    try:
        infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DiscoveryError(f"{name}: no {record} records ({exc.strerror})") from None
    return sorted({str(info[4][0]) for info in infos})
