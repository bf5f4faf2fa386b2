"""Load a YAML config file into validated targets; every problem names file, YAML path and fix.

All problems are collected before failing, so one run of ``check-config`` lists them all.
Missing secrets (unset ``password_env``, unreadable ``password_file``) are warnings, not
errors: secrets are often mounted after start, and one target's missing secret must not
stop the others from being monitored — that target reports ``cache_up 0`` with
``reason="config"`` until the secret appears.

The modules, in the order a config goes through them:

- ``loader``: file, text or document to ``Config`` (``load_config``, ``parse_config``,
  ``build_config``), the built-in ``default_config``; ``flags``: the config the command-line
  flags stand for.
- ``yaml_safe``: the bounded YAML reader (duplicate keys, merge keys, aliases, nesting).
- ``checker``: problems recorded with their YAML paths (``Checker``, ``ConfigError``);
  ``values``: parsers of single values.
- ``kinds``: the target types and the fields every target shares; ``stores`` (redis,
  memcached, app) and ``probes`` (http_cache) build each type; ``sections``: the global
  section and the blocks several types share (labels, credentials, tls, acknowledge, prefixes).
- ``urls``: the address grammars; ``rules``: the rules between fields.
- ``templates``: discovery templates and ``expand``, which turns discovered nodes into targets.
"""

from __future__ import annotations

from exporter.config.checker import MAX_PROBLEMS, ConfigError
from exporter.config.flags import FLAGS, MEMCACHED_ADDRESS_FLAG, REDIS_ADDR_FLAG, REDIS_PASSWORD_ENV, flags_config
from exporter.config.kinds import COMMON_KEYS, KINDS, ROLES
from exporter.config.loader import (
    BUILTIN,
    MAX_CONFIG_SIZE,
    LoadResult,
    build_config,
    default_config,
    load_config,
    parse_config,
)
from exporter.config.probes import MAX_PROBE_URLS
from exporter.config.stores import APP_CACHE_COUNTERS, APP_JSON_FIELDS, APP_RUNTIMES, MANAGED_PROVIDERS
from exporter.config.templates import DISCOVERED_PREFIX, DISCOVERY_KEYS, expand
from exporter.config.yaml_safe import MAX_ALIAS_CHARS, MAX_ALIAS_NODES, MAX_NESTING, load_yaml

__all__ = [
    "APP_CACHE_COUNTERS", "APP_JSON_FIELDS", "APP_RUNTIMES", "BUILTIN", "COMMON_KEYS", "DISCOVERED_PREFIX",
    "DISCOVERY_KEYS", "FLAGS", "KINDS", "MANAGED_PROVIDERS", "MAX_ALIAS_CHARS", "MAX_ALIAS_NODES",
    "MAX_CONFIG_SIZE", "MAX_NESTING", "MAX_PROBE_URLS", "MAX_PROBLEMS", "MEMCACHED_ADDRESS_FLAG",
    "REDIS_ADDR_FLAG", "REDIS_PASSWORD_ENV", "ROLES", "ConfigError", "LoadResult", "build_config",
    "default_config", "expand", "flags_config", "load_config", "load_yaml", "parse_config",
]
