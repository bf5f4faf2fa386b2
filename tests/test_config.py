"""exporter.config, the check-config / run CLI on config files, and exporter.secrets."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import importlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from exporter import __version__, audit, catalog, labels, secrets
from exporter.config import (
    BUILTIN,
    FLAGS,
    ConfigError,
    LoadResult,
    build_config,
    default_config,
    flags_config,
    load_config,
    parse_config,
    sections,
)
from exporter.config.checker import Checker
from exporter.errors import AUTH, PollError
from exporter.http import Endpoints, make_server
from exporter.secrets import RedactingFilter, SecretUnavailable, read_password, redact, remember
from exporter.targets import (
    DEFAULT_FORECAST_WINDOW,
    DEFAULT_INTERVAL,
    DEFAULT_MAX_LABEL_VALUE_LENGTH,
    DEFAULT_MAX_REPLY_SIZE,
    DEFAULT_MAX_SERIES,
    DEFAULT_TIMEOUT,
    AppTarget,
    Config,
    Credentials,
    GlobalConfig,
    MemcachedTarget,
    RedisTarget,
    Target,
    TLSConfig,
)

REPO = Path(__file__).resolve().parent.parent
GiB, MiB = 2**30, 2**20
UNSET_VAR = "CE_TEST_SURELY_UNSET_PASSWORD_VAR"


@pytest.fixture(autouse=True)
def _isolated_secrets(monkeypatch):
    """Secrets remembered by one test must not leak into another's redaction set."""
    monkeypatch.setattr(secrets, "_known", frozenset())
    monkeypatch.setattr(secrets, "_public", frozenset())
    monkeypatch.setattr(secrets, "_pattern", None)
    monkeypatch.delenv(UNSET_VAR, raising=False)


# --- helpers ------------------------------------------------------------------------------

def target(**over: object) -> dict:
    """A valid redis target; keys set to None in ``over`` are removed."""
    t: dict[str, object] = {"name": "cache", "type": "redis", "url": "redis://10.0.0.5:6379"}
    for key, value in over.items():
        if value is None:
            t.pop(key, None)
        else:
            t[key] = value
    return t


def doc(*targets: dict, **glob: object) -> dict:
    d: dict[str, object] = {"targets": list(targets) or [target()]}
    if glob:
        d["global"] = glob
    return d


def named(config: Config, name: str) -> Target | None:
    """The target called ``name``; only tests look a target up by name."""
    return next((t for t in config.targets if t.name == name), None)


def global_of(document: dict) -> GlobalConfig:
    """What the loader makes of a document's global section (a Config keeps only the targets,
    each with the global values it inherits)."""
    c = Checker("test")
    glob = sections.global_config(c, document.get("global"))
    assert c.problems == []
    return glob


def write(tmp_path: Path, content: str | bytes | dict, name: str = "cache.yml") -> Path:
    path = tmp_path / name
    if isinstance(content, dict):
        content = yaml.safe_dump(content, sort_keys=False)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def load_error(path: Path | str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    return info.value


def message_for(exc: ConfigError, yaml_path: str) -> str:
    """The problem recorded at ``yaml_path``; fails with all problems listed if there is none."""
    found = [msg for p, msg in exc.problems if p == yaml_path]
    assert found, f"no problem at {yaml_path!r}; problems: {exc.problems}"
    return found[0]


def touch(path: Path, text: str = "x") -> str:
    path.write_text(text)
    return str(path)


# --- a full valid config ------------------------------------------------------------------

@pytest.fixture
def full_config(tmp_path, monkeypatch):
    monkeypatch.setenv("CE_MAIN_PASSWORD", "main-pass-not-used")
    ca = touch(tmp_path / "ca.pem")
    cert = touch(tmp_path / "client.pem")
    key = touch(tmp_path / "client.key")
    pwfile = touch(tmp_path / "password.txt", "pw\n")
    text = f"""\
global:
  interval: 30s
  timeout: 4s
  labels:
    env: prod
    team: cache
  forecast_window: 2h
  max_reply_size: 32MiB
  max_series: 5000
targets:
  - name: main
    type: redis
    url: redis://10.0.0.5:6380/3
    username: exporter
    password_env: CE_MAIN_PASSWORD
    labels:
      team: payments
      shard: 1
      canary: false
    memory_limit: 2GiB
    interval: 10s
    timeout: 2s
    max_label_value_length: 256
  - name: secure
    type: redis
    url: rediss://cache.example.com:6390
    password_file: {pwfile}
    tls:
      ca_file: {ca}
      cert_file: {cert}
      key_file: {key}
      server_name: cache.internal
      insecure_skip_verify: true
    memory_limit: 512Mi
  - name: sock
    type: redis
    url: unix:///run/redis/redis.sock?db=2
  - name: valkey
    type: redis
    url: valkey://valkey.local
    memory_limit: 1GB
    interval: 2s
  - name: valkey-tls
    type: redis
    url: valkeys://vk.local:6400/1
"""
    path = write(tmp_path, text, "full.yml")
    return path, {"ca": ca, "cert": cert, "key": key, "pwfile": pwfile}


def test_full_config_global_section(full_config):
    path, _ = full_config
    loaded = load_config(str(path))
    assert isinstance(loaded, LoadResult)
    assert loaded.warnings == []
    assert isinstance(loaded.config, Config)
    assert loaded.config.source == str(path)
    assert global_of(yaml.safe_load(path.read_text())) == GlobalConfig(
        interval=30.0, timeout=4.0, labels=(("env", "prod"), ("team", "cache")),
        forecast_window=7200.0, max_reply_size=32 * MiB, max_series=5000)
    assert [t.name for t in loaded.config.targets] == ["main", "secure", "sock", "valkey", "valkey-tls"]


def test_full_config_tcp_target_with_overrides(full_config):
    path, _ = full_config
    main = named(load_config(str(path)).config, "main")
    assert main == RedisTarget(
        name="main", type="redis", interval=10.0, timeout=2.0,
        # global labels merged with the target's; the target wins on 'team'; sorted by name
        labels=(("canary", "false"), ("env", "prod"), ("shard", "1"), ("team", "payments")),
        memory_limit=2 * GiB, max_reply_size=32 * MiB, forecast_window=7200.0, max_series=5000,
        max_label_value_length=256,
        scheme="redis", host="10.0.0.5", port=6380, path=None, db=3,
        credentials=Credentials(username="exporter", password_env="CE_MAIN_PASSWORD", password_file=None),
        tls=None)
    assert main.address == "redis://10.0.0.5:6380"


def test_full_config_tls_target_inherits_global(full_config):
    path, files = full_config
    secure = named(load_config(str(path)).config, "secure")
    assert isinstance(secure, RedisTarget)
    assert (secure.scheme, secure.host, secure.port, secure.db) == ("rediss", "cache.example.com", 6390, 0)
    assert (secure.interval, secure.timeout) == (30.0, 4.0)
    assert secure.labels == (("env", "prod"), ("team", "cache"))
    assert secure.memory_limit == 512 * MiB
    assert secure.credentials == Credentials(username=None, password_env=None, password_file=files["pwfile"])
    assert secure.tls == TLSConfig(ca_file=files["ca"], cert_file=files["cert"], key_file=files["key"],
                                   server_name="cache.internal", insecure_skip_verify=True)
    assert secure.address == "rediss://cache.example.com:6390"


def test_full_config_unix_target(full_config):
    path, _ = full_config
    sock = named(load_config(str(path)).config, "sock")
    assert isinstance(sock, RedisTarget)
    assert sock.scheme == "unix"
    assert sock.path == "/run/redis/redis.sock"
    assert sock.db == 2
    assert sock.host == ""
    assert sock.memory_limit is None
    assert sock.credentials == Credentials()
    assert sock.tls is None
    assert sock.address == "unix:///run/redis/redis.sock"


def test_full_config_valkey_schemes_map_to_redis(full_config):
    path, _ = full_config
    config = load_config(str(path)).config
    valkey = named(config, "valkey")
    assert (valkey.type, valkey.scheme, valkey.host, valkey.port, valkey.db) == (
        "redis", "redis", "valkey.local", 6379, 0)
    assert valkey.memory_limit == 10**9
    # per-target interval below the global timeout: timeout defaults to the interval
    assert (valkey.interval, valkey.timeout) == (2.0, 2.0)
    vtls = named(config, "valkey-tls")
    assert (vtls.scheme, vtls.host, vtls.port, vtls.db) == ("rediss", "vk.local", 6400, 1)
    assert named(config, "nope") is None


def test_minimal_config_uses_defaults():
    text = "targets:\n  - {name: r, type: redis, url: 'redis://db'}\n"
    loaded = parse_config(text, "min.yml")
    assert loaded.warnings == []
    glob = global_of(yaml.safe_load(text))
    assert glob == GlobalConfig()
    assert glob == GlobalConfig(DEFAULT_INTERVAL, DEFAULT_TIMEOUT, (), DEFAULT_FORECAST_WINDOW,
                                DEFAULT_MAX_REPLY_SIZE, DEFAULT_MAX_SERIES, DEFAULT_MAX_LABEL_VALUE_LENGTH)
    assert loaded.config.targets == (RedisTarget(name="r", type="redis", interval=15.0, timeout=5.0,
                                                 host="db", port=6379, db=0, scheme="redis"),)


def test_global_interval_below_default_timeout_lowers_timeout():
    config = build_config(doc(interval="1s"), "g.yml").config
    glob = global_of(doc(interval="1s"))
    assert (glob.interval, glob.timeout) == (1.0, 1.0)
    assert (config.targets[0].interval, config.targets[0].timeout) == (1.0, 1.0)


def test_null_values_mean_default():
    text = ("global:\n  interval: null\ntargets:\n  - name: a\n    type: redis\n"
            "    url: redis://h\n    memory_limit: ~\n    tls:\n")
    config = parse_config(text, "n.yml").config
    assert global_of(yaml.safe_load(text)).interval == 15.0
    assert config.targets[0].memory_limit is None
    assert config.targets[0].tls is None


def test_ipv6_host():
    t = build_config(doc(target(url="redis://[::1]:7000/0")), "v6.yml").config.targets[0]
    assert (t.host, t.port) == ("::1", 7000)
    assert t.address == "redis://[::1]:7000"


def test_reserved_labels_are_the_labels_of_every_family():
    import exporter.sources

    exporter.sources.load_all()  # every source's families in the catalog

    # Two-sided: declare() refuses a label missing from the list, this refuses a name no family uses.
    assert labels.FAMILY_LABELS == catalog.label_names()
    with pytest.raises(ValueError, match="add its labels \\['brand_new'\\] to exporter.labels.FAMILY_LABELS"):
        catalog.gauge("cache_test_unlisted_label", "A family whose label the config does not reserve.",
                      ("store", "brand_new"), "redis")
    assert catalog.find("cache_test_unlisted_label") is None


def test_config_refuses_reserved_labels_without_importing_the_sources():
    ours = {name: module for name, module in sys.modules.items()
            if name == "exporter" or name.startswith("exporter.")}
    try:
        for name in ours:
            del sys.modules[name]
        fresh = importlib.import_module("exporter.config")
        with pytest.raises(fresh.ConfigError, match="'slab' is already a label of some cache-exporter metric"):
            fresh.build_config(doc(target(labels={"slab": "1"})), "fresh.yml")
        imported = sorted(name for name in sys.modules if name.startswith("exporter."))
    finally:
        for name in [n for n in sys.modules if n == "exporter" or n.startswith("exporter.")]:
            del sys.modules[name]
        sys.modules.update(ours)
    assert "exporter.config.loader" in imported
    assert not [name for name in imported if name.startswith(("exporter.sources", "exporter.catalog"))], imported


def test_label_values_are_stringified():
    t = build_config(doc(target(labels={"shard": 3, "ratio": 1.5, "primary": True, "zone": "eu-1"})),
                     "l.yml").config.targets[0]
    assert t.labels == (("primary", "true"), ("ratio", "1.5"), ("shard", "3"), ("zone", "eu-1"))


def test_default_config():
    config = default_config()
    assert config.source == BUILTIN == "<built-in default>"
    assert len(config.targets) == 3
    t, mc, own = config.targets
    assert isinstance(own, AppTarget) and own.runtime == "python"
    assert own.address == "http://127.0.0.1:9611/metrics"  # the exporter's own process (docs/configuration.md)
    assert default_config("127.0.0.1:19999").targets[2].port == 19999
    assert default_config("[::1]:19999").targets[2].address == "http://[::1]:19999/metrics"
    assert default_config(":19999").targets[2].address == "http://127.0.0.1:19999/metrics"
    # Behind a web config (TLS, basic auth) the exporter does not scrape itself in plain HTTP.
    assert [t.name for t in default_config(self_scrape=False).targets] == ["redis", "memcached"]
    assert isinstance(t, RedisTarget)
    assert isinstance(mc, MemcachedTarget)
    assert (mc.name, mc.host, mc.port, mc.path, mc.slabs, mc.tls) == ("memcached", "localhost", 11211, None, True, None)
    assert mc.address == "tcp://localhost:11211"
    assert (t.name, t.type, t.scheme, t.host, t.port, t.db) == ("redis", "redis", "redis", "localhost", 6379, 0)
    assert t.address == "redis://localhost:6379"
    assert t.credentials == Credentials()
    assert t.tls is None
    assert {(x.interval, x.timeout, x.labels, x.forecast_window, x.max_reply_size, x.max_series,
             x.max_label_value_length) for x in config.targets} == {dataclasses.astuple(GlobalConfig())}


# --- invalid configs: one problem each ----------------------------------------------------

def _tls_target(**tls: object) -> dict:
    return target(url="rediss://db:6380", tls=tls)


INVALID = [
    # (id, document, YAML path, text the message must contain)
    ("unknown-top-key", {"targets": [target()], "targetz": []}, "targetz",
     "unknown key (did you mean 'targets'?); allowed: global, targets"),
    ("global-typo", doc(intervall="10s"), "global.intervall", "unknown key (did you mean 'interval'?)"),
    ("target-typo", doc(target(passwrd_env="PW")), "targets[0].passwrd_env",
     "unknown key (did you mean 'password_env'?)"),
    ("target-unknown-no-hint", doc(target(zzzz=1)), "targets[0].zzzz", "unknown key; allowed: "),
    ("global-not-mapping", {"global": ["interval"], "targets": [target()]}, "global",
     "expected a mapping, got a list"),
    ("missing-targets", {"global": {"interval": "10s"}}, "targets", "is required and must be a list of targets"),
    ("empty-targets", {"targets": []}, "targets", "must list at least one target"),
    ("targets-not-list", {"targets": {"name": "cache"}}, "targets", "expected a list, got a mapping"),
    ("target-not-mapping", {"targets": ["redis://db:6379"]}, "targets[0]",
     "expected a mapping describing a target, got a string"),
    ("missing-name", doc(target(name=None)), "targets[0].name", "is required"),
    ("blank-name", doc(target(name="  ")), "targets[0].name", "must not be empty"),
    ("name-not-string", doc(target(name=42)), "targets[0].name", "expected a string, got a number"),
    ("name-unprintable", doc(target(name="a\nb")), "targets[0].name", "at most 200 printable characters"),
    ("duplicate-names", doc(target(), target(url="redis://10.0.0.6")), "targets[1].name",
     "duplicate target name 'cache' (also targets[0])"),
    ("unknown-type", doc(target(type="memcache")), "targets[0].type",
     "unknown target type 'memcache'; supported: app, http_cache, memcached, redis"),
    ("missing-type", doc(target(type=None)), "targets[0].type", "is required"),
    ("missing-url", doc(target(url=None)), "targets[0].url", "is required"),
    ("url-not-string", doc(target(url=6379)), "targets[0].url", "expected a string, got a number"),
    ("bad-scheme", doc(target(url="http://db:6379")), "targets[0].url",
     "scheme 'http' is not supported; use redis://, rediss:// or unix://"),
    ("no-scheme", doc(target(url="db:6379")), "targets[0].url", "is not supported"),
    ("port-out-of-range", doc(target(url="redis://db:99999")), "targets[0].url",
     "the port must be a number from 1 to 65535"),
    ("port-not-number", doc(target(url="redis://db:abc")), "targets[0].url", "not a valid URL"),
    ("no-host", doc(target(url="redis://:6379")), "targets[0].url", "needs a host"),
    ("db-not-number", doc(target(url="redis://db:6379/cache")), "targets[0].url",
     "the database must be a number, e.g. redis://host:6379/0"),
    ("db-nested-path", doc(target(url="redis://db:6379/1/2")), "targets[0].url", "the database must be a number"),
    ("unix-without-path", doc(target(url="unix://")), "targets[0].url",
     "unix:// needs a socket path, e.g. unix:///run/redis/redis.sock"),
    ("unix-bad-db", doc(target(url="unix:///run/r.sock?db=x")), "targets[0].url",
     "the database must be a number"),
    ("query-params", doc(target(url="redis://db:6379?ssl=true&timeout=5")), "targets[0].url",
     "unsupported URL parameters: ssl, timeout"),
    ("redis-db-query", doc(target(url="redis://db:6379?db=1")), "targets[0].url",
     "unsupported URL parameters: db"),
    ("tls-with-redis-scheme", doc(target(tls={"server_name": "db"})), "targets[0].tls",
     "TLS settings need a rediss:// URL (this target uses redis://)"),
    ("tls-with-unix-scheme", doc(target(url="unix:///r.sock", tls={})), "targets[0].tls",
     "TLS settings need a rediss:// URL (this target uses unix://)"),
    ("tls-ca-missing", doc(_tls_target(ca_file="/nonexistent/ca.pem")), "targets[0].tls.ca_file",
     "/nonexistent/ca.pem does not exist or is not readable"),
    ("tls-cert-missing", doc(_tls_target(cert_file="/nonexistent/c.pem", key_file="/nonexistent/k.pem")),
     "targets[0].tls.cert_file", "/nonexistent/c.pem does not exist or is not readable"),
    ("tls-unknown-key", doc(_tls_target(ca_flie="x")), "targets[0].tls.ca_flie",
     "unknown key (did you mean 'ca_file'?)"),
    ("tls-skip-verify-not-bool", doc(_tls_target(insecure_skip_verify="yes")),
     "targets[0].tls.insecure_skip_verify", "expected true or false, got a string"),
    ("env-and-file", doc(target(password_env="PW", password_file="/run/secrets/pw")),
     "targets[0].password_file", "set either password_env or password_file, not both"),
    ("username-without-password", doc(target(username="exporter")), "targets[0].username",
     "a username needs password_env or password_file"),
    ("bad-env-name", doc(target(password_env="REDIS-PASSWORD")), "targets[0].password_env",
     "must be an environment variable name such as REDIS_PASSWORD"),
    ("env-name-digit", doc(target(password_env="1PW")), "targets[0].password_env",
     "must be an environment variable name"),
    ("global-timeout-gt-interval", doc(interval="10s", timeout="20s"), "global.timeout",
     "(20s) must not exceed interval (10s): polls would pile up"),
    ("target-timeout-gt-interval", doc(target(interval="1s", timeout="2s")), "targets[0].timeout",
     "(2s) must not exceed interval (1s): polls would pile up"),
    ("target-timeout-gt-global-interval", doc(target(timeout="30s")), "targets[0].timeout",
     "(30s) must not exceed interval (15s)"),
    ("global-interval-too-small", doc(interval="50ms"), "global.interval", "must be at least 0.1s"),
    ("target-interval-too-small", doc(target(interval="10ms")), "targets[0].interval", "must be at least 0.1s"),
    ("timeout-too-small", doc(timeout="10ms"), "global.timeout", "must be at least 0.05s"),
    ("bad-duration", doc(interval="fast"), "global.interval", "expected a duration such as 15s"),
    ("bool-duration", doc(target(timeout=True)), "targets[0].timeout", "expected a duration"),
    ("forecast-too-short", doc(forecast_window="30s"), "global.forecast_window", "must be at least 1m"),
    ("series-too-small", doc(max_series=10), "global.max_series", "expected a whole number from 100 to 1000000"),
    ("series-not-int", doc(target(max_series="lots")), "targets[0].max_series", "expected a whole number"),
    ("label-length-too-small", doc(target(max_label_value_length=8)), "targets[0].max_label_value_length",
     "expected a whole number from 64 to 65536"),
    ("bad-size", doc(target(memory_limit="2 gigs")), "targets[0].memory_limit",
     "expected a size such as 2GiB, 512MiB, 2Gi, 1GB or a number of bytes"),
    ("negative-size", doc(target(memory_limit=-1)), "targets[0].memory_limit", "a size cannot be negative"),
    ("zero-size", doc(target(memory_limit=0)), "targets[0].memory_limit", "must be at least 1 bytes"),
    ("reply-size-too-small", doc(max_reply_size="1KiB"), "global.max_reply_size", "must be at least 65536 bytes"),
    ("labels-not-mapping", doc(target(labels=["a=b"])), "targets[0].labels",
     "expected a mapping of label names to values, got a list"),
    ("label-name-invalid", doc(target(labels={"my-label": "x"})), "targets[0].labels.my-label",
     "label names must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __"),
    ("label-name-digit", doc(target(labels={"1abc": "x"})), "targets[0].labels.1abc", "label names must match"),
    ("label-name-dunder", doc(target(labels={"__meta": "x"})), "targets[0].labels.__meta",
     "not start with __"),
    ("label-job", doc(target(labels={"job": "redis"})), "targets[0].labels.job",
     "'job' is set by Prometheus at scrape time; choose another label name"),
    ("label-instance", doc(labels={"instance": "x"}), "global.labels.instance",
     "'instance' is set by Prometheus at scrape time"),
    *[(f"label-reserved-{name}", doc(target(labels={name: "x"})), f"targets[0].labels.{name}",
       f"'{name}' is already a label of some cache-exporter metric; choose another name")
      for name in ("store", "target", "db", "cmd", "role")],
    ("global-label-reserved", doc(labels={"store": "x"}), "global.labels.store", "already a label"),
    ("label-value-list", doc(target(labels={"team": ["a", "b"]})), "targets[0].labels.team",
     "label values must be strings, got a list"),
    ("label-value-mapping", doc(target(labels={"team": {"a": 1}})), "targets[0].labels.team",
     "label values must be strings, got a mapping"),
    ("label-value-null", doc(target(labels={"team": None})), "targets[0].labels.team",
     "label values must be strings, got nothing"),
    ("label-value-too-long", doc(target(labels={"team": "x" * 1025})), "targets[0].labels.team",
     "label value is longer than 1024 characters"),
]


@pytest.mark.parametrize(("document", "yaml_path", "expected"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid_config_names_file_path_and_problem(tmp_path, document, yaml_path, expected):
    path = write(tmp_path, document, "bad-config.yml")
    exc = load_error(path)
    assert exc.source == str(path)
    assert expected in message_for(exc, yaml_path)
    # str(): one "file: path: problem" line per problem
    lines = str(exc).splitlines()
    assert len(lines) == len(exc.problems)
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert any(line.startswith(f"{path}: {yaml_path}: ") and expected in line for line in lines)


def test_invalid_config_via_build_config_uses_given_source():
    with pytest.raises(ConfigError) as info:
        build_config(doc(target(url="http://db")), "inline-source")
    assert str(info.value) == ("inline-source: targets[0].url: scheme 'http' is not supported; "
                               "use redis://, rediss:// or unix://")
    assert info.value.problems == [("targets[0].url",
                                    "scheme 'http' is not supported; use redis://, rediss:// or unix://")]


def test_tls_key_without_cert(tmp_path):
    key = touch(tmp_path / "client.key")
    exc = load_error(write(tmp_path, doc(_tls_target(key_file=key)), "k.yml"))
    assert message_for(exc, "targets[0].tls.key_file") == "key_file needs cert_file"
    assert len(exc.problems) == 1


def test_tls_block_not_a_mapping(tmp_path):
    exc = load_error(write(tmp_path, doc(target(url="rediss://db", tls="on")), "t.yml"))
    assert message_for(exc, "targets[0].tls") == "expected a mapping, got a string"


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError) as info:
        build_config(doc(target(intervall="5s")), "s.yml")
    assert info.value.problems == [(
        "targets[0].intervall",
        "unknown key (did you mean 'interval'?); allowed: acknowledge, interval, labels, managed, "
        "max_label_value_length, max_series, memory_limit, name, password_env, password_file, prefixes, role, "
        "timeout, tls, type, url, username")]


def test_role():
    loaded = build_config(doc(target(role="cache")), "s.yml")
    assert loaded.config.targets[0].role == "cache"
    with pytest.raises(ConfigError) as info:
        build_config(doc(target(role="primary")), "s.yml")
    assert info.value.problems == [("targets[0].role", "must be one of: cache, database")]


SECRET_URLS = [
    ("redis://admin:s3cr3tP4ssw0rd@db:6379", ["s3cr3tP4ssw0rd"]),
    ("redis://:s3cr3tP4ssw0rd@db:6379/0", ["s3cr3tP4ssw0rd"]),
    ("rediss://admin:s3cr3tP4ssw0rd@db", ["s3cr3tP4ssw0rd"]),
    ("valkey://admin:s3cr3tP4ssw0rd@db:6379", ["s3cr3tP4ssw0rd"]),
    # users paste raw passwords: '/', '?' or '#' in them end the authority part early
    ("redis://admin:Sup3rS/ecretPart@db:6379", ["Sup3rS", "ecretPart"]),
    ("redis://admin:Sup3rS?ecretPart@db:6379", ["Sup3rS", "ecretPart"]),
    ("redis://admin:Sup3rS#ecretPart@db:6379", ["Sup3rS", "ecretPart"]),
]


@pytest.mark.parametrize(("url", "fragments"), SECRET_URLS, ids=[u for u, _ in SECRET_URLS])
def test_credentials_in_url_are_refused_without_echoing_them(tmp_path, url, fragments):
    exc = load_error(write(tmp_path, doc(target(url=url)), "creds.yml"))
    assert [p for p, _ in exc.problems] == ["targets[0].url"]
    text = str(exc)
    for fragment in fragments:
        assert fragment not in text, f"error message leaks part of the password: {text}"


def test_credentials_in_url_message():
    with pytest.raises(ConfigError) as info:
        build_config(doc(target(url="redis://admin:hunter2hunter2@db:6379")), "c.yml")
    assert info.value.problems == [("targets[0].url", "credentials in the URL are not allowed; "
                                                      "use username and password_env/password_file")]
    with pytest.raises(ConfigError) as info:
        build_config(doc(target(url="redis://admin@db:6379")), "c.yml")
    assert "credentials in the URL are not allowed" in message_for(info.value, "targets[0].url")


def test_port_zero_is_rejected_not_replaced_by_default():
    # redis://db:0 currently yields port 6379 (``port or 6379``), silently polling another port.
    with pytest.raises(ConfigError) as info:
        build_config(doc(target(url="redis://db:0")), "p.yml")
    assert [p for p, _ in info.value.problems] == ["targets[0].url"]


# --- malformed values must be reported, not crash the loader ------------------------------

CRASHERS = [
    ("type-is-list", doc(target(type=["redis"])), "targets[0].type"),
    ("type-is-mapping", doc(target(type={"redis": 1})), "targets[0].type"),
    ("db-superscript-digit", doc(target(url="redis://db:6379/\u00b2")), "targets[0].url"),
    ("unix-db-superscript-digit", doc(target(url="unix:///r.sock?db=\u00b2")), "targets[0].url"),
    ("interval-huge-int", doc(interval=10**400), "global.interval"),
    ("memory-limit-huge-string", doc(target(memory_limit="9" * 400)), "targets[0].memory_limit"),
    ("interval-huge-string", doc(target(interval="9" * 400 + "s")), "targets[0].interval"),
]


@pytest.mark.parametrize(("document", "yaml_path"), [c[1:] for c in CRASHERS], ids=[c[0] for c in CRASHERS])
def test_malformed_value_is_a_config_error(document, yaml_path):
    with pytest.raises(ConfigError) as info:
        build_config(copy.deepcopy(document), "m.yml")
    message_for(info.value, yaml_path)


# --- YAML and file-level problems ---------------------------------------------------------

def test_yaml_syntax_error_names_line_and_column(tmp_path):
    path = write(tmp_path, "targets:\n  - name: a\n    type: redis\n    url: [unclosed\n", "syntax.yml")
    exc = load_error(path)
    assert exc.problems == [("line 5, column 1", "invalid YAML: expected ',' or ']', but got '<stream end>'")]
    assert str(exc) == f"{path}: line 5, column 1: invalid YAML: expected ',' or ']', but got '<stream end>'"


def test_yaml_tab_indentation(tmp_path):
    exc = load_error(write(tmp_path, "global:\n\tinterval: 1s\n", "tab.yml"))
    assert exc.problems[0][0] == "line 2, column 1"
    assert exc.problems[0][1].startswith("invalid YAML: found character '\\t'")


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = write(tmp_path, "targets:\n  - name: a\n    name: b\n    type: redis\n    url: redis://h\n", "dup.yml")
    exc = load_error(path)
    assert exc.problems == [("line 3, column 5", "invalid YAML: duplicate key 'name'")]
    assert str(path) in str(exc)


def test_duplicate_top_level_keys_are_refused():
    with pytest.raises(ConfigError) as info:
        parse_config("global: {}\ntargets: []\nglobal: {interval: 1s}\n", "d.yml")
    assert info.value.problems == [("line 3, column 1", "invalid YAML: duplicate key 'global'")]


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n", "---\n"], ids=["empty", "blank", "comment",
                                                                                   "doc-marker"])
def test_empty_file(tmp_path, content):
    path = write(tmp_path, content, "empty.yml")
    exc = load_error(path)
    assert exc.problems == [("", "config is empty; it needs a 'targets' list")]
    assert str(exc) == f"{path}: config is empty; it needs a 'targets' list"


def test_top_level_list(tmp_path):
    path = write(tmp_path, "- name: a\n  type: redis\n  url: redis://h\n", "list.yml")
    exc = load_error(path)
    assert exc.problems == [("", "expected a mapping, got a list")]
    assert str(exc) == f"{path}: expected a mapping, got a list"


def test_top_level_scalar(tmp_path):
    exc = load_error(write(tmp_path, "redis://localhost:6379\n", "scalar.yml"))
    assert exc.problems == [("", "expected a mapping, got a string")]


def test_non_utf8_file(tmp_path):
    path = write(tmp_path, b"targets:\n  - name: caf\xe9\n", "latin1.yml")
    exc = load_error(path)
    assert exc.problems == [("", "config file is not UTF-8 (byte 22)")]
    assert str(exc).startswith(f"{path}: ")


def test_file_larger_than_1mib(tmp_path):
    body = yaml.safe_dump(doc()) + ("# padding\n" * (2**20 // 10 + 1))
    assert len(body.encode()) > 2**20
    path = write(tmp_path, body, "huge.yml")
    exc = load_error(path)
    assert exc.problems == [("", "config file is larger than 1 MiB")]


def test_file_of_exactly_1mib_is_read(tmp_path):
    head = yaml.safe_dump(doc())
    body = head + "#" * (2**20 - len(head) - 1) + "\n"
    assert len(body.encode()) == 2**20
    assert len(load_config(str(write(tmp_path, body, "edge.yml"))).config.targets) == 1


def test_nonexistent_file(tmp_path):
    path = tmp_path / "missing.yml"
    exc = load_error(path)
    assert exc.problems == [("", "cannot read config file: No such file or directory")]
    assert str(exc) == f"{path}: cannot read config file: No such file or directory"


def test_directory_instead_of_file(tmp_path):
    exc = load_error(tmp_path)
    assert exc.problems[0][1].startswith("cannot read config file: ")


# --- all problems at once -----------------------------------------------------------------

def test_all_independent_problems_are_reported(tmp_path):
    text = """\
global:
  intervall: 10s
  timeout: 2x
targets:
  - name: a
    type: redis
    url: http://db:6379
  - type: redis
    url: redis://db:6379
  - name: c
    type: redis
    url: redis://db2
    labels:
      job: cache
"""
    path = write(tmp_path, text, "many.yml")
    exc = load_error(path)
    assert len(exc.problems) >= 3
    assert "did you mean 'interval'?" in message_for(exc, "global.intervall")
    assert "expected a duration" in message_for(exc, "global.timeout")
    assert "scheme 'http' is not supported" in message_for(exc, "targets[0].url")
    assert message_for(exc, "targets[1].name") == "is required"
    assert "set by Prometheus" in message_for(exc, "targets[2].labels.job")
    assert len(exc.problems) == 5
    lines = str(exc).splitlines()
    assert len(lines) == 5
    assert lines[0].startswith(f"{path}: global.intervall: unknown key")


def test_problems_in_one_target_do_not_hide_problems_in_another():
    with pytest.raises(ConfigError) as info:
        build_config(doc(target(name="a", url="redis://db/x"), target(name="b", memory_limit="lots"),
                         target(name="c", password_env="bad name")), "t.yml")
    assert [p for p, _ in info.value.problems] == ["targets[0].url", "targets[1].memory_limit",
                                                   "targets[2].password_env"]


# --- warnings: missing secrets do not fail the config -------------------------------------

def test_unset_password_env_is_a_warning(tmp_path):
    path = write(tmp_path, doc(target(password_env=UNSET_VAR)), "warn.yml")
    loaded = load_config(str(path))
    assert loaded.warnings == [
        f"{path}: targets[0].password_env: environment variable {UNSET_VAR} is not set; "
        'the target will report reason="config" until it is']
    assert loaded.config.targets[0].credentials == Credentials(password_env=UNSET_VAR)


def test_set_password_env_gives_no_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("CE_TEST_PW_SET", "value")
    loaded = load_config(str(write(tmp_path, doc(target(username="u", password_env="CE_TEST_PW_SET")), "w.yml")))
    assert loaded.warnings == []


def test_unreadable_password_file_is_a_warning(tmp_path):
    missing = str(tmp_path / "secrets" / "redis-password")
    path = write(tmp_path, doc(target(username="exporter", password_file=missing)), "warn.yml")
    loaded = load_config(str(path))
    assert loaded.warnings == [
        f"{path}: targets[0].password_file: {missing} is not readable; "
        'the target will report reason="config" until it is']
    assert loaded.config.targets[0].credentials == Credentials(username="exporter", password_file=missing)


def test_warnings_for_several_targets(tmp_path):
    loaded = build_config(doc(target(name="a", password_env=UNSET_VAR),
                              target(name="b", password_file=str(tmp_path / "nope"))), "w.yml")
    assert [w.split(": ")[1] for w in loaded.warnings] == ["targets[0].password_env", "targets[1].password_file"]
    assert [t.name for t in loaded.config.targets] == ["a", "b"]


# --- the CLI ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.servers
def test_cli_check_config_ok(tmp_path):
    path = write(tmp_path, doc(target(name="a"), target(name="b", url="unix:///r.sock")), "good.yml")
    res = cli("check-config", str(path))
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{path}: OK, 2 targets (redis: 2)\n"
    assert "OK" in res.stdout
    assert res.stderr == ""


@pytest.mark.servers
def test_cli_check_config_bad(tmp_path):
    path = write(tmp_path, doc(target(url="http://db:6379"), interval="1s", timeout="5s"), "bad.yml")
    res = cli("check-config", str(path))
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        f"{path}: global.timeout: (5s) must not exceed interval (1s): polls would pile up",
        f"{path}: targets[0].url: scheme 'http' is not supported; use redis://, rediss:// or unix://",
    ]


@pytest.mark.servers
def test_cli_check_config_missing_file(tmp_path):
    path = tmp_path / "nope.yml"
    res = cli("check-config", str(path))
    assert res.returncode == 2
    assert res.stderr == f"{path}: cannot read config file: No such file or directory\n"


@pytest.mark.servers
def test_cli_run_with_bad_config_exits_2(tmp_path):
    path = write(tmp_path, doc(target(labels={"job": "x"})), "bad.yml")
    res = cli("run", "--config", str(path), "--listen", f"127.0.0.1:{_free_port()}")
    assert res.returncode == 2
    assert f"{path}: targets[0].labels.job: 'job' is set by Prometheus" in res.stderr


@pytest.mark.servers
def test_cli_default_command_is_run(tmp_path):
    path = write(tmp_path, "targets: []\n", "bad.yml")
    res = cli("--config", str(path), "--listen", f"127.0.0.1:{_free_port()}")
    assert res.returncode == 2
    assert f"{path}: targets: must list at least one target" in res.stderr


@pytest.mark.servers
def test_cli_version():
    res = cli("--version")
    assert res.returncode == 0
    assert res.stdout == f"cache-exporter {__version__}\n"
    assert __version__ == "0.1.0"


@pytest.mark.servers
def test_cli_check_config_warns_about_unset_password_env(tmp_path):
    path = write(tmp_path, doc(target(username="exporter", password_env=UNSET_VAR)), "warn.yml")
    res = cli("check-config", str(path), unset=(UNSET_VAR,))
    assert res.returncode == 0
    assert res.stdout == f"{path}: OK, 1 targets (redis: 1)\n"
    assert res.stderr == (f"warning: {path}: targets[0].password_env: environment variable {UNSET_VAR} "
                          'is not set; the target will report reason="config" until it is\n')


@pytest.mark.servers
def test_cli_never_prints_the_secret(tmp_path):
    secret = "Sup3r-" + uuid.uuid4().hex
    env = {"CE_TEST_SECRET_PW": secret}
    good = write(tmp_path, doc(target(username="exporter", password_env="CE_TEST_SECRET_PW")), "good.yml")
    # bad elsewhere, and the same secret pasted into another target's URL
    bad = write(tmp_path, doc(target(name="a", password_env="CE_TEST_SECRET_PW", interval="1ms"),
                              target(name="b", url=f"redis://admin:{secret}@db:6379")), "bad.yml")
    runs = [
        (cli("check-config", str(good), env=env), 0),
        (cli("check-config", str(bad), env=env), 2),
        (cli("run", "--config", str(bad), "--listen", f"127.0.0.1:{_free_port()}", env=env), 2),
    ]
    for res, code in runs:
        assert res.returncode == code, res.stderr
        assert secret not in res.stdout
        assert secret not in res.stderr
    assert "targets[1].url: credentials in the URL are not allowed" in runs[1][0].stderr


# --- exporter.secrets ---------------------------------------------------------------------

def test_read_password_from_env(monkeypatch):
    monkeypatch.setenv("CE_TEST_PW", "from-env-secret")
    creds = Credentials(username="u", password_env="CE_TEST_PW")
    assert read_password(creds) == "from-env-secret"
    assert creds.password() == "from-env-secret"
    # reading it remembers it for redaction
    assert redact("auth from-env-secret failed") == "auth <redacted> failed"


def test_read_password_from_file_strips_trailing_newline(tmp_path):
    pw = tmp_path / "pw"
    pw.write_bytes(b"file-secret\n")
    assert read_password(Credentials(password_file=str(pw))) == "file-secret"
    pw.write_bytes(b"crlf-secret\r\n")
    assert read_password(Credentials(password_file=str(pw))) == "crlf-secret"
    pw.write_bytes(b"  inner space kept  ")
    assert read_password(Credentials(password_file=str(pw))) == "  inner space kept  "


def test_read_password_file_is_reread(tmp_path):
    pw = tmp_path / "pw"
    creds = Credentials(password_file=str(pw))
    pw.write_text("first-secret\n")
    assert read_password(creds) == "first-secret"
    pw.write_text("rotated-secret\n")
    assert read_password(creds) == "rotated-secret"


def test_read_password_none_configured():
    assert read_password(Credentials()) is None
    assert read_password(Credentials(username="u")) is None


def test_read_password_missing_env_names_variable_not_value(monkeypatch):
    monkeypatch.setenv("CE_TEST_OTHER", "other-secret-value")
    with pytest.raises(SecretUnavailable) as info:
        read_password(Credentials(password_env=UNSET_VAR))
    assert str(info.value) == f"environment variable {UNSET_VAR} is not set"
    assert "other-secret-value" not in str(info.value)


def test_read_password_missing_file(tmp_path):
    path = tmp_path / "nope"
    with pytest.raises(SecretUnavailable) as info:
        read_password(Credentials(password_file=str(path)))
    assert str(info.value) == f"cannot read password_file {path}: No such file or directory"


def test_read_password_file_too_large_or_not_utf8(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(SecretUnavailable, match="larger than 64 KiB"):
        read_password(Credentials(password_file=str(big)))
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfesecret")
    with pytest.raises(SecretUnavailable) as info:
        read_password(Credentials(password_file=str(binary)))
    assert str(info.value) == f"password_file {binary} is not UTF-8"


def test_redact_scrubs_remembered_secrets():
    assert redact("nothing known yet: hunter2xyz") == "nothing known yet: hunter2xyz"
    remember("hunter2xyz")
    remember("ab")  # too short to scrub safely
    assert redact("AUTH exporter hunter2xyz -> hunter2xyz") == "AUTH exporter <redacted> -> <redacted>"
    assert redact("tab and ab stay") == "tab and ab stay"


def test_redact_prefers_longest_secret():
    remember("secret")
    remember("secret-longer")
    assert redact("x secret-longer y secret") == "x <redacted> y <redacted>"


def _capturing_logger() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"test.redaction.{uuid.uuid4().hex}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_redacting_filter_scrubs_message_and_args():
    secret = "pa55-" + uuid.uuid4().hex
    remember(secret)
    log, out = _capturing_logger()
    log.warning("connecting with password %s to %s", secret, "db:6379")
    log.error(f"raw message containing {secret}")
    log.info("dict arg %(pw)s", {"pw": secret})
    text = out.getvalue()
    assert secret not in text
    assert text.splitlines() == [
        "WARNING connecting with password <redacted> to db:6379",
        "ERROR raw message containing <redacted>",
        "INFO dict arg <redacted>",
    ]


def test_redacting_filter_scrubs_tracebacks():
    secret = "tb-" + uuid.uuid4().hex
    remember(secret)
    log, out = _capturing_logger()
    try:
        raise RuntimeError(f"AUTH failed for {secret}")
    except RuntimeError:
        log.exception("poll failed")
    text = out.getvalue()
    assert secret not in text
    assert "RuntimeError: AUTH failed for <redacted>" in text
    assert text.startswith("ERROR poll failed\n")


def test_redacting_filter_leaves_clean_records_alone():
    remember("some-secret-value")
    log, out = _capturing_logger()
    log.info("polled %d keys in %s", 42, "db")
    assert out.getvalue() == "INFO polled 42 keys in db\n"


# A password is just a string and may equal ordinary text. "null" is the worst case: it is a JSON
# literal, part of names like "r_null", and a plain English word in error messages.

def _serve(payload: list[dict]):
    """exporter.http serving ``payload`` as /targets, with nothing else behind it."""
    server = make_server("127.0.0.1:0", Endpoints(metrics=lambda _: [], targets=lambda: payload,
                                                  ready=lambda: True, reload=lambda: (True, "")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _get(server, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_targets_json_with_secret_null_keeps_syntax_names_and_labels():
    remember("null")
    error = PollError(AUTH, "server said: password null rejected")
    payload = [
        {"name": "r_null", "type": "redis", "address": "10.0.0.5:6379", "labels": {"team": "null-ish"},
         "memory_limit_bytes": None, "up": False, "polls": 3, "last_poll_time": 1700000000.5,
         "last_success_time": None, "last_error": {"reason": error.reason, "message": str(error)}},
        {"name": "cache-null", "type": "redis", "address": "10.0.0.6:6379", "labels": {"null": "null"},
         "memory_limit_bytes": 2**30, "up": True, "polls": 3, "last_poll_time": 1700000000.5,
         "last_success_time": 1700000000.5, "last_error": None,
         "details": {"role": "master", "null": "null", "config": {"requirepass": "null", "save": ""},
                     "findings": [{"check": "x", "message": "password null is weak"}]}},
    ]
    server = _serve(copy.deepcopy(payload))
    try:
        status, body = _get(server, "/targets")
    finally:
        server.shutdown()
        server.server_close()
    assert status == 200
    data = json.loads(body)  # every JSON null literal survived
    assert [t["name"] for t in data] == ["r_null", "cache-null"]
    assert data[0]["labels"] == {"team": "null-ish"} and data[1]["labels"] == {"null": "null"}
    assert data[0]["memory_limit_bytes"] is None and data[0]["last_success_time"] is None
    assert data[1]["last_error"] is None
    # The error message carries the secret as a word: scrubbed, the rest of the message intact.
    assert data[0]["last_error"] == {
        "reason": "auth",
        "message": "authentication or authorization failed: server said: password <redacted> rejected"}
    # Values below the top-level record are data, not names: scrubbed. Keys never are.
    assert data[1]["details"] == {"role": "master", "null": "<redacted>",
                                  "config": {"requirepass": "<redacted>", "save": ""},
                                  "findings": [{"check": "x", "message": "password <redacted> is weak"}]}
    assert payload[1]["details"]["null"] == "null"  # the caller's data is not modified


def test_text_responses_keep_public_names_and_scrub_the_rest():
    remember("null")
    secrets.public("r_null")
    server = _serve([])
    try:
        assert _get(server, "/r_null") == (404, "not found: /r_null\n")
        assert _get(server, "/nullable/x") == (404, "not found: /<redacted>able/x\n")
        assert _get(server, "/x/null") == (404, "not found: /x/<redacted>\n")
    finally:
        server.shutdown()
        server.server_close()


def test_redacting_filter_keeps_names_and_scrubs_the_secret_everywhere_else():
    for secret in ("null", "p@ss!", "-x-"):
        remember(secret)
    secrets.public("r_null", "null_cache")
    log, out = _capturing_logger()
    log.warning("target %s (%s) is down: %s", "r_null", "10.0.0.5:6379", "password null rejected")
    log.info("target %s: nullable fields, %d nulls", "null_cache", 3)
    log.error("dial redis://auth:p@ss!@host failed; token a-x-b; echoed as xp@ss!")
    try:
        raise RuntimeError("target r_null: password null rejected")
    except RuntimeError:
        log.exception("target %s: unexpected error", "r_null")
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        "WARNING target r_null (10.0.0.5:6379) is down: password <redacted> rejected",
        # The operator's name stays whole; the secret inside other words goes (errs towards scrubbing).
        "INFO target null_cache: <redacted>able fields, 3 <redacted>s",
        "ERROR dial redis://auth:<redacted>@host failed; token a<redacted>b; echoed as x<redacted>",
        "ERROR target r_null: unexpected error",
    ]
    assert lines[-1] == "RuntimeError: target r_null: password <redacted> rejected"


def test_redact_scrubs_echoes_glued_to_other_text_but_never_public_names():
    for secret in ("null", "p@ss!", "Zm9vOmJhcg=="):
        remember(secret)
    secrets.public("r_null", "team-null")
    cases = {
        "password null rejected": "password <redacted> rejected",
        "null": "<redacted>",
        "(null)": "(<redacted>)",
        "r_null team-null": "r_null team-null",  # the operator's names
        "r_nullx xr_null": "r_nullx xr_null",  # a name is kept wherever it stands
        "xnull r_nul": "x<redacted> r_nul",
        "auth:p@ss!@host": "auth:<redacted>@host",
        "xp@ss!y": "x<redacted>y",  # a server echoing the password glued to other text
        "Basic xZm9vOmJhcg==x": "Basic x<redacted>x",
    }
    assert {text: redact(text) for text in cases} == cases


def test_reconnect_backoff_max_is_accepted_with_a_warning():
    """Configs written for the reconnect backoff keep loading; the key no longer does anything."""
    loaded = build_config(doc(reconnect_backoff_max="30s"), "old.yml")
    assert len(loaded.warnings) == 1 and "global.reconnect_backoff_max" in loaded.warnings[0]
    assert "no longer used" in loaded.warnings[0]


def test_series_limits_come_from_global_and_target():
    loaded = build_config({"global": {"max_series": 2000, "max_label_value_length": 100},
                           "targets": [{"name": "a", "type": "redis", "url": "redis://x"},
                                       {"name": "b", "type": "redis", "url": "redis://y", "max_series": 300}]}, "l.yml")
    a, b = loaded.config.targets
    assert (a.max_series, a.max_label_value_length) == (2000, 100)
    assert (b.max_series, b.max_label_value_length) == (300, 100)


# --- managed stores -------------------------------------------------------------------------------

def test_managed_block_defaults_per_provider():
    from exporter.targets import ManagedStore

    serverless = build_config(doc(target(managed={"provider": "elasticache-serverless", "data_limit": "5GiB"})),
                              "m.yml").config.targets[0]
    assert serverless.managed == ManagedStore("elasticache-serverless", 5 * 2**30, "ttl")
    other = build_config(doc(target(managed={"provider": "memorystore"})), "m.yml").config.targets[0]
    assert other.managed == ManagedStore("memorystore", None, None)  # the server's maxmemory-policy decides
    explicit = build_config(doc(target(managed={"provider": "other", "evicts_at_limit": "none"})),
                            "m.yml").config.targets[0]
    assert explicit.managed.evicts_at_limit == "none"
    assert build_config(doc(target()), "m.yml").config.targets[0].managed is None


@pytest.mark.parametrize(("managed", "extra", "problem"), [
    ({}, {}, ("targets[0].managed.provider", "is required")),
    ("yes", {}, ("targets[0].managed", "expected a mapping, got a string")),
    ({"provider": "aws"}, {}, ("targets[0].managed.provider", "must be one of: elasticache-serverless, elasticache, "
                                                               "memorystore, azure-cache, redis-cloud, other")),
    ({"provider": "other", "evicts_at_limit": "lru"}, {},
     ("targets[0].managed.evicts_at_limit", "must be one of: all, ttl, none")),
    ({"provider": "other", "data_limit": "5 parsecs"}, {}, None),
    ({"provider": "other", "data_limit": 1000}, {},
     ("targets[0].managed.data_limit", "must be at least 1048576 bytes")),
    ({"provider": "other", "datalimit": "1GiB"}, {},
     ("targets[0].managed.datalimit", "unknown key (did you mean 'data_limit'?); allowed: data_limit, "
                                      "evicts_at_limit, provider")),
    ({"provider": "elasticache-serverless"}, {"memory_limit": "1GiB"},
     ("targets[0].memory_limit", "does not apply to a managed store: the provider owns the process and its OOM "
                                 "killer; set managed.data_limit to the service's data-storage limit instead")),
])
def test_managed_block_errors(managed, extra, problem):
    with pytest.raises(ConfigError) as info:
        build_config(doc(target(managed=managed, **extra)), "m.yml")
    if problem is None:  # a unit error: the path is enough, the message is parse_size's
        assert [p for p, _ in info.value.problems] == ["targets[0].managed.data_limit"]
    else:
        assert info.value.problems == [problem]


def test_managed_is_for_redis_only():
    with pytest.raises(ConfigError) as info:
        build_config(doc({"name": "m", "type": "memcached", "address": "10.0.0.7:11211",
                          "managed": {"provider": "other"}}), "m.yml")
    assert info.value.problems[0][0] == "targets[0].managed"
# --- acknowledge: audit findings accepted per target (issue 14, situation 4) ---------------------

def test_acknowledge_names_and_mappings():
    loaded = build_config(doc(target(acknowledge=[
        "host_transparent_hugepages",
        {"check": "host_overcommit_memory", "reason": "ECS: no sysctl", "until": datetime.date(2027, 6, 30)},
        {"check": "redis_evicting_policy_on_database", "until": "2027-01-31"}])), "s.yml")
    acks = loaded.config.targets[0].acknowledge
    assert [(a.check, a.reason, a.until) for a in acks] == [
        ("host_transparent_hugepages", None, None),
        ("host_overcommit_memory", "ECS: no sysctl", datetime.date(2027, 6, 30)),
        ("redis_evicting_policy_on_database", None, datetime.date(2027, 1, 31))]


def test_acknowledge_yaml_date_unquoted(tmp_path):
    text = ("targets:\n- {name: s, type: redis, url: redis://db,\n"
            "   acknowledge: [{check: host_overcommit_memory, until: 2027-06-30}]}\n")
    loaded = load_config(write(tmp_path, text, "d.yml"))
    assert loaded.config.targets[0].acknowledge[0].until == datetime.date(2027, 6, 30)


@pytest.mark.parametrize("value, path, message", [
    (["overcommit_memory_disabled"], "targets[0].acknowledge[0]",
     "unknown audit check 'overcommit_memory_disabled' (did you mean 'host_overcommit_memory'?)"),
    (["memcached_no_eviction_low_headroom"], "targets[0].acknowledge[0]",
     "unknown audit check 'memcached_no_eviction_low_headroom'"),  # a memcached check on a Redis target
    ([{"check": "nope"}], "targets[0].acknowledge[0].check", "unknown audit check 'nope'"),
    ("host_overcommit_memory", "targets[0].acknowledge", "expected a list of audit check names"),
    ([{"check": "host_overcommit_memory", "until": "soon"}], "targets[0].acknowledge[0].until",
     "expected a date as YYYY-MM-DD, got a string"),
    ([{"check": "host_overcommit_memory", "until": datetime.datetime(2027, 1, 1, 12)}],
     "targets[0].acknowledge[0].until", "expected a date (YYYY-MM-DD), not a date and time"),
    ([{"reason": "x"}], "targets[0].acknowledge[0].check", "is required"),
    ([{"check": "host_overcommit_memory", "reson": "x"}], "targets[0].acknowledge[0].reson",
     "unknown key (did you mean 'reason'?)"),
    (["host_overcommit_memory", "host_overcommit_memory"], "targets[0].acknowledge[1]",
     "host_overcommit_memory is acknowledged twice"),
    ([{"check": "host_overcommit_memory", "reason": "line\nbreak"}], "targets[0].acknowledge[0].reason",
     "must be at most 500 printable characters on one line"),
    ([7], "targets[0].acknowledge[0]", "expected a mapping, got a number"),
])
def test_acknowledge_bad_values(value, path, message):
    with pytest.raises(ConfigError) as info:
        build_config(doc(target(acknowledge=value)), "s.yml")
    problems = dict(info.value.problems)
    assert path in problems, info.value.problems
    assert problems[path].startswith(message), problems[path]


def test_acknowledge_lists_the_checks_of_the_target_type():
    with pytest.raises(ConfigError) as info:
        build_config(doc(target(acknowledge=["x"])), "s.yml")
    listed = dict(info.value.problems)["targets[0].acknowledge[0]"].split("checks for this target type: ")[1]
    assert listed.split(", ") == [c.name for c in audit.CHECKS if c.store is RedisTarget]


def test_prefix_view_settings():
    """prefixes: opt-in, per store its own budget key, bounded cardinality and cadence."""
    def target(kind: str, prefixes: object, **extra: object) -> dict:
        base = {"name": "t", "type": kind, "prefixes": prefixes, **extra}
        return {**base, **({"address": "127.0.0.1:11211"} if kind == "memcached" else {"url": "redis://h:1"})}

    redis_on = {**target("redis", {"max_keys": 50, "top": 5}), "name": "r"}
    on = build_config({"targets": [target("memcached", {}), redis_on]}, "c.yml").config.targets
    assert on[0].prefixes.delimiter == ":" and on[0].prefixes.interval == 300 and on[0].prefixes.top == 20
    assert on[1].prefixes.max_keys == 50 and on[1].prefixes.top == 5
    assert build_config({"targets": [{"name": "t", "type": "memcached", "address": "h:1"}]},
                        "c.yml").config.targets[0].prefixes is None
    with pytest.raises(ConfigError) as info:
        build_config({"targets": [
            target("memcached", {"top": 500, "delimiter": "", "max_keys": 5}),
            {**target("redis", {"interval": "1s", "max_time": "10s", "max_bytes": "1MiB"}), "name": "r"},
        ]}, "c.yml")
    text = str(info.value)
    assert "targets[0].prefixes.top: expected a whole number from 1 to 200" in text
    assert "targets[0].prefixes.max_keys: unknown key" in text  # memcached's budget is bytes
    assert "targets[1].prefixes.max_bytes: unknown key" in text  # redis's is keys
    assert "targets[1].prefixes.interval: must not be shorter than the target's interval" in text
    assert "targets[1].prefixes.max_time: must be shorter than the target's timeout" in text


# --- targets from --redis.addr / --memcached.address ---------------------------------------

SECRET = "flag-secret-4f1c9"

def test_flags_build_the_targets_a_file_would():
    loaded = flags_config(["redis://10.0.0.5:6379/2", "valkey.internal:6380"], ["[::1]:11211", "/run/mc.sock"],
                          redis_password_file="/run/secrets/redis", redis_user="exporter", environ={})
    same_in_a_file = build_config({"targets": [
        {"name": "10.0.0.5:6379/2", "type": "redis", "url": "redis://10.0.0.5:6379/2",
         "username": "exporter", "password_file": "/run/secrets/redis"},
        {"name": "valkey.internal:6380", "type": "redis", "url": "redis://valkey.internal:6380",
         "username": "exporter", "password_file": "/run/secrets/redis"},
        {"name": "[::1]:11211", "type": "memcached", "address": "[::1]:11211"},
        {"name": "/run/mc.sock", "type": "memcached", "address": "/run/mc.sock"},
    ]}, FLAGS)
    assert loaded.config == same_in_a_file.config
    # Warned once, under the flag's name, though it applies to both Redis targets.
    assert loaded.warnings == [f"{FLAGS}: --redis.password-file: /run/secrets/redis is not readable; "
                               'the target will report reason="config" until it is']
    # redis_exporter's REDIS_PASSWORD, unless the file flag is given.
    assert flags_config(["h:1"], [], environ={"REDIS_PASSWORD": "x"}).config.targets[0].credentials.password_env \
        == "REDIS_PASSWORD"
    assert flags_config(["h:1"], [], "/pw", environ={"REDIS_PASSWORD": "x"}).config.targets[0].credentials \
        .password_env is None


@pytest.mark.parametrize("redis,memcached,user,line", [
    (["http://h:1"], [], None, "--redis.addr: scheme 'http' is not supported; use redis://, rediss:// or unix://"),
    ([f"redis://u:{SECRET}@h:1"], [], None, "--redis.addr: credentials in the URL are not allowed; "
                                            "use --redis.user and --redis.password-file (or REDIS_PASSWORD)"),
    (["h:1", f"redis://h:{SECRET}"], [], None,
     "--redis.addr #2: not a valid URL; the port must be a number from 1 to 65535"),
    ([], ["h:1", "h h"], None, "--memcached.address #2: expected host:port (e.g. 10.0.0.7:11211, [::1]:11211) "
                               "or a unix socket path"),
    (["h:1", "redis://h:1"], [], None, "--redis.addr #2: duplicate target name 'h:1' (also --redis.addr #1)"),
    (["h:1", "h:2"], [], "bob", "--redis.user: needs --redis.password-file (or REDIS_PASSWORD)"),
])
def test_flags_refused_name_the_flag_never_the_value(redis, memcached, user, line):
    with pytest.raises(ConfigError) as err:
        flags_config(redis, memcached, redis_user=user, environ={})
    assert str(err.value) == f"{FLAGS}: {line}"  # one line: a problem shared by several flags is said once


@pytest.mark.servers
@pytest.mark.parametrize("args,message", [
    (["--redis.addr", f"redis://:{SECRET}@127.0.0.1:6379"], "--redis.addr: credentials in the URL are not allowed"),
    (["--redis.password", SECRET], "--redis.password is refused"),
    ([f"--redis.password={SECRET}", "--redis.addr", "h:1"], "--redis.password is refused"),
    (["--redis.addr", "h:1", "--config.file", "x.yml"], "both name targets; use one"),
    (["--memcached.address", "h:1", "--redis.password-file", "/pw"], "go with --redis.addr"),
])
def test_cli_bad_target_flags_exit_2(args, message):
    res = cli("run", "--listen", f"127.0.0.1:{_free_port()}", *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert SECRET not in res.stderr + res.stdout
