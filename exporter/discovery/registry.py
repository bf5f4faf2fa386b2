"""Which function runs each discovery kind, and for which target types.

Modules are imported when a kind is first used, so a kind whose module is absent from this build
is a clear config error ("not available"), not an import error at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.discovery.base import DiscoveryError, Found

# What a refresh returns: the nodes, or None when nothing changed since the last refresh (file_sd).
Refresh = Callable[[Any, dict[str, Any]], "list[Found] | None"]


@dataclass(frozen=True)
class Kind:
    module: str
    types: tuple[str, ...]  # target types the kind can stand for
    default_refresh: float


KINDS: dict[str, Kind] = {
    "cluster": Kind("exporter.discovery.redis_cluster", ("redis",), 30.0),
    "sentinel": Kind("exporter.discovery.redis_sentinel", ("redis",), 30.0),
    "file_sd": Kind("exporter.discovery.file_sd", ("redis", "memcached", "app"), 5.0),
    "dns": Kind("exporter.discovery.dns", ("redis", "memcached", "app"), 30.0),
    "elasticache": Kind("exporter.discovery.elasticache", ("memcached",), 30.0),
}


def available(kind: str) -> bool:
    """True if the kind's module can be imported in this build."""
    try:
        importlib.import_module(KINDS[kind].module)
    except ImportError:
        return False
    return True


def refresh(template: Any, memo: dict[str, Any]) -> list[Found] | None:
    """Run ``template``'s discovery once (``memo`` is the kind's own state between refreshes)."""
    try:
        module = importlib.import_module(KINDS[template.kind].module)
    except ImportError:
        raise DiscoveryError(f"discovery kind {template.kind} not available in this build") from None
    return _RUNNERS[template.kind](module, template, memo)


def _redis(module: Any, template: Any, memo: dict[str, Any]) -> list[Found]:
    from exporter.secrets import SecretUnavailable

    probe = template.probe
    try:
        password = probe.credentials.password()
    except SecretUnavailable as exc:
        raise DiscoveryError(f"the password is not available: {exc}") from None
    kwargs: dict[str, Any] = {"username": probe.credentials.username, "password": password,
                              "tls": probe.tls, "timeout": template.timeout}
    if template.kind == "sentinel":
        kwargs["master_name"] = template.options.get("master_name")  # None: every monitored primary
    found: list[Found] = module.discover(list(template.options["seeds"]), **kwargs)
    return found


def _file_sd(module: Any, template: Any, memo: dict[str, Any]) -> list[Found] | None:
    sig = module.signature(template.options["files"])
    if memo.get("signature") == sig:
        return None
    # Remembered before reading: a broken file is reported once, not at every refresh until it changes.
    memo["signature"] = sig
    found: list[Found] = module.read(sig)
    return found


def _dns(module: Any, template: Any, memo: dict[str, Any]) -> list[Found]:
    o = template.options
    found: list[Found] = module.discover(o["names"], o["record"], o.get("port"), o.get("nameserver"),
                                         template.timeout)
    return found


def _elasticache(module: Any, template: Any, memo: dict[str, Any]) -> list[Found]:
    from exporter.netio import client_tls_context

    probe = template.probe
    try:
        tls = client_tls_context(probe.tls) if probe.tls is not None else None
    except (OSError, ValueError) as exc:
        raise DiscoveryError(f"cannot load TLS files: {exc}") from None
    found: list[Found] = module.discover(probe.host, probe.port, template.timeout, tls,
                                         probe.tls.server_name if probe.tls is not None else None)
    return found


_RUNNERS: dict[str, Callable[[Any, Any, dict[str, Any]], list[Found] | None]] = {
    "cluster": _redis, "sentinel": _redis, "file_sd": _file_sd, "dns": _dns, "elasticache": _elasticache,
}
