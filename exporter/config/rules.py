"""Rules between fields: each is checked after the fields it relates are read, and records its
problem at the YAML path of the field the operator should change."""

from __future__ import annotations

import os
from typing import Any

from exporter.config.checker import Checker, join
from exporter.targets import Credentials, Target, Template, TLSConfig
from exporter.units import format_duration

MEMORY_KEYS = ("memory_limit", "role", "acknowledge")  # about the memory a target holds


def timeout_within_interval(c: Checker, here: str, timeout: float, interval: float) -> None:
    if timeout > interval:
        c.error(here, f"({format_duration(timeout)}) must not exceed interval "
                      f"({format_duration(interval)}): polls would pile up")


def no_memory_keys(c: Checker, t: dict[str, Any], path: str, kind: str) -> None:
    """A probe of someone else's cache holds no memory: memory_limit, role, acknowledge mean nothing."""
    for key in MEMORY_KEYS:
        if key in t:
            c.error(join(path, key), f"does not apply to {kind} targets (they probe, they hold no memory)")


def unique_name(c: Checker, path: str, name: str, names: dict[str, int]) -> bool:
    """Whether ``name`` is new in ``names`` (target name -> index in targets); if not, say where it was."""
    if name in names:
        c.error(join(path, "name"), f"duplicate target name '{name}' (also targets[{names[name]}])")
        return False
    return True


def outside_template_namespaces(c: Checker, targets: list[Target], templates: list[Template],
                                names: dict[str, int]) -> None:
    for template in templates:
        for target in targets:
            # Discovered targets are named <template>/<key>: a static one must not take such a name.
            if target.name.startswith(template.name + "/"):
                c.error(join(join("targets", names[target.name]), "name"),
                        f"'{target.name}' is in the namespace of the discovery template '{template.name}' "
                        f"(its targets are named {template.name}/...); choose another name")


def credentials(c: Checker, path: str, creds: Credentials, username_required: bool) -> None:
    """One password source; a username only with a password; a missing secret is a warning only
    (secrets are often mounted after start: the target reports reason="config" until then)."""
    if creds.password_env and creds.password_file:
        c.error(join(path, "password_file"), "set either password_env or password_file, not both")
    elif creds.password_env and creds.password_env not in os.environ:
        c.warn(join(path, "password_env"), f"environment variable {creds.password_env} is not set; "
                                           "the target will report reason=\"config\" until it is")
    elif creds.password_file and not os.access(creds.password_file, os.R_OK):
        c.warn(join(path, "password_file"), f"{creds.password_file} is not readable; "
                                            "the target will report reason=\"config\" until it is")
    if creds.username and not (creds.password_env or creds.password_file):
        c.error(join(path, "username"), "a username needs password_env or password_file")
    if username_required and (creds.password_env or creds.password_file) and not creds.username:
        c.error(join(path, "username"),
                "memcached authentication (ASCII or SASL PLAIN) needs a username with the password")


def key_needs_cert(c: Checker, path: str, files: dict[str, str | None]) -> None:
    if files["key_file"] and not files["cert_file"]:
        c.error(join(path, "key_file"), "key_file needs cert_file")


def tls_needs_rediss(c: Checker, path: str, tls: TLSConfig | None, scheme: str) -> None:
    if tls is not None and scheme != "rediss":
        c.error(join(path, "tls"), f"TLS settings need a rediss:// URL (this target uses {scheme}://)")


def tls_needs_https(c: Checker, path: str, tls: TLSConfig | None, schemes: list[str]) -> None:
    """TLS settings with none of the target's URLs on https:// would never be used."""
    if tls is not None and schemes and "https" not in schemes:
        c.error(join(path, "tls"), "TLS settings need an https:// URL")


def no_tls_over_socket(c: Checker, path: str, tls: TLSConfig | None, socket_path: str | None) -> None:
    if tls is not None and socket_path:
        c.error(join(path, "tls"), "TLS is not used over a unix socket")


def managed_without_memory_limit(c: Checker, t: dict[str, Any], path: str) -> None:
    if "memory_limit" in t:
        c.error(join(path, "memory_limit"), "does not apply to a managed store: the provider owns the process "
                                            "and its OOM killer; set managed.data_limit to the service's "
                                            "data-storage limit instead")


def app_format(c: Checker, path: str, fmt: str, fields: tuple[tuple[str, str], ...],
               caches: tuple[Any, ...]) -> None:
    """fields and caches map a JSON body; a JSON body needs at least the heap."""
    if fmt == "json" and "heap_used" not in dict(fields):
        c.error(join(path, "fields"), "format: json needs fields.heap_used (a dotted path into the JSON body)")
    if fmt == "prometheus" and (fields or caches):
        c.error(join(path, "fields" if fields else "caches"), "fields and caches map a JSON body; "
                                                              "set format: json")


def prefix_interval(c: Checker, path: str, interval: float, common: dict[str, Any]) -> None:
    if interval < common["interval"]:
        c.error(join(path, "interval"), f"must not be shorter than the target's interval "
                                        f"({format_duration(common['interval'])})")


def prefix_max_time(c: Checker, path: str, max_time: float, common: dict[str, Any]) -> None:
    if max_time >= common["timeout"]:
        c.error(join(path, "max_time"), f"must be shorter than the target's timeout "
                                        f"({format_duration(common['timeout'])}): the dump runs inside a poll")
