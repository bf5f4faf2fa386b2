"""The config that redis_exporter-style flags (``--redis.addr``, ``--memcached.address``) stand for,
validated as the same targets in a file would be, with problems reworded in terms of the flags."""

from __future__ import annotations

import os
import re
from typing import Any

from exporter.config.checker import ConfigError
from exporter.config.loader import LoadResult, build_config

FLAGS = "command-line flags"
REDIS_ADDR_FLAG = "--redis.addr"
MEMCACHED_ADDRESS_FLAG = "--memcached.address"
# redis_exporter's names, so a command line moved over keeps working (its REDIS_PASSWORD too).
REDIS_PASSWORD_ENV = "REDIS_PASSWORD"
_FLAG_OF_KEY = {"password_file": "--redis.password-file", "password_env": REDIS_PASSWORD_ENV,
                "username": "--redis.user"}
# Config messages that name config keys, reworded for someone who wrote flags.
_FLAG_WORDING = (
    ("use username and password_env/password_file",
     f"use --redis.user and --redis.password-file (or {REDIS_PASSWORD_ENV})"),
    ("a username needs password_env or password_file", f"needs --redis.password-file (or {REDIS_PASSWORD_ENV})"),
)
_TARGET_PATH = re.compile(r"targets\[(\d+)\](?:\.([a-z_]+))?")


def _name_from_address(address: str, fallback: str) -> str:
    """``redis://10.0.0.5:6379/0`` -> ``10.0.0.5:6379/0``; a socket path stays a path.

    Anything that could carry a secret or would not pass as a name gets ``fallback``: the
    address check then says what is wrong with it, without quoting it."""
    name = address.split("://", 1)[-1].rstrip("/")
    if "@" in address or not name or len(name) > 200 or not name.isprintable():
        return fallback
    return name


def flags_config(redis_addrs: list[str], memcached_addrs: list[str], redis_password_file: str | None = None,
                 redis_user: str | None = None, environ: dict[str, str] | None = None) -> LoadResult:
    """The config that ``--redis.addr`` / ``--memcached.address`` stand for, validated exactly as
    the same targets in a file would be (one validation path).

    Raises ConfigError whose lines name the flag (``--redis.addr #2``), never the value: an
    address may hold a password."""
    env = os.environ if environ is None else environ
    password: dict[str, str] = {}
    if redis_password_file is not None:
        password["password_file"] = redis_password_file  # the flag wins over the environment
    elif env.get(REDIS_PASSWORD_ENV):
        password["password_env"] = REDIS_PASSWORD_ENV
    targets: list[dict[str, Any]] = []
    labels: list[str] = []
    for flag, kind, key, values in ((REDIS_ADDR_FLAG, "redis", "url", redis_addrs),
                                    (MEMCACHED_ADDRESS_FLAG, "memcached", "address", memcached_addrs)):
        for n, value in enumerate(values, 1):
            if kind == "redis" and "://" not in value:
                value = f"redis://{value}"  # redis_exporter takes a bare host:port too
            entry: dict[str, Any] = {"name": _name_from_address(value, f"{kind}-{n}"), "type": kind, key: value}
            if kind == "redis":
                entry.update(password)
                if redis_user is not None:
                    entry["username"] = redis_user
            targets.append(entry)
            labels.append(flag if len(values) == 1 else f"{flag} #{n}")

    def reword(text: str) -> str:
        def flag_of(match: re.Match[str]) -> str:
            index, config_key = int(match.group(1)), match.group(2)
            label = labels[index] if index < len(labels) else match.group(0)
            return _FLAG_OF_KEY.get(config_key or "", label)
        for config_words, flag_words in _FLAG_WORDING:
            text = text.replace(config_words, flag_words)
        return _TARGET_PATH.sub(flag_of, text)

    # dict.fromkeys: a problem with a flag shared by every target (--redis.user) is said once.
    try:
        loaded = build_config({"targets": targets}, FLAGS)
    except ConfigError as exc:
        problems = dict.fromkeys((reword(path), reword(msg)) for path, msg in exc.problems)
        raise ConfigError(FLAGS, list(problems)) from None
    return LoadResult(loaded.config, list(dict.fromkeys(reword(w) for w in loaded.warnings)))

