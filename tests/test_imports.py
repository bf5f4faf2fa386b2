"""Every module of the package imports on its own, first, with nothing of the package loaded.

A cycle between two modules often works in the order the daemon happens to import them and
breaks with "partially initialized module" when a tool or a test imports the other one first.
Each module is imported here into a clean ``exporter.*`` namespace in this process (a fresh
interpreter per module would cost seconds); the original modules are put back afterwards.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import free_port

import exporter

MODULES = sorted(m.name for m in pkgutil.walk_packages(exporter.__path__, "exporter.")
                 if not m.name.endswith(".__main__"))  # __main__ runs the command line


def _ours(name: str) -> bool:
    return name == "exporter" or name.startswith("exporter.")


@pytest.fixture
def clean_package() -> Iterator[None]:
    saved = {name: module for name, module in sys.modules.items() if _ours(name)}
    for name in saved:
        del sys.modules[name]
    try:
        yield
    finally:
        for name in [n for n in sys.modules if _ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_the_package_is_walked() -> None:
    assert {"exporter.secrets", "exporter.targets", "exporter.daemon", "exporter.discovery.runner",
            "exporter.sources.redis"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_first_and_alone(name: str, clean_package: None) -> None:
    importlib.import_module(name)


def _alone(name: str) -> set[str]:
    """The package's modules that importing ``name`` into a clean namespace loads."""
    for loaded in [n for n in sys.modules if _ours(n)]:
        del sys.modules[loaded]
    importlib.import_module(name)
    return {n for n in sys.modules if _ours(n)}


def test_targets_uses_secrets_and_secrets_needs_nothing_back(clean_package: None) -> None:
    """One way: targets imports secrets (Credentials.password reads through it) at the top, and
    secrets, which every module that logs or formats errors imports, needs nothing of the package."""
    assert _alone("exporter.secrets") == {"exporter", "exporter.secrets"}
    assert _alone("exporter.targets") == {"exporter", "exporter.secrets", "exporter.targets"}


def _redis_py(name: str) -> bool:
    return name == "redis" or name.startswith("redis.")


def test_a_daemon_without_redis_discovery_never_imports_redis_py(clean_package: None) -> None:
    """redis-py costs ~10 MiB of RSS to import: `run` (config, daemon, a Redis source with a
    connection object) must not load it; only cluster/sentinel discovery and the demo do."""
    saved = {name: module for name, module in sys.modules.items() if _redis_py(name)}
    for name in saved:
        del sys.modules[name]
    try:
        for name in ("exporter.cli", "exporter.daemon", "exporter.http", "exporter.webconfig", "exporter.sharding"):
            importlib.import_module(name)
        from exporter.config import build_config
        from exporter.netio import Guard
        from exporter.sources import source_for
        from exporter.sources.redis import new_connection

        config = build_config({"targets": [
            {"name": "r", "type": "redis", "url": "redis://127.0.0.1:6379"},
            {"name": "sd", "type": "redis", "discover": "file_sd", "files": ["sd/*.json"]},
        ]}, "<test>").config
        source = source_for(config.targets[0])
        new_connection(config.targets[0], None, Guard(1024))  # built, never connected
        assert [n for n in sys.modules if _redis_py(n)] == []
        # The check can fail: the discovery kind that needs redis-py does load it.
        importlib.import_module("exporter.discovery.redis_cluster")
        assert "redis" in sys.modules
        source.close()
    finally:
        for name in [n for n in sys.modules if _redis_py(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_run_loads_a_source_or_feature_only_when_used(clean_package: None) -> None:
    """What `cache-exporter run` imports before it reads a config: no source module (each comes
    with its first target of that type), no DNS discovery, web config, status page, demo or
    audit-only tooling. Each is MiBs of resident memory a plain config does not use."""
    loaded = _alone("exporter.cli") | _alone("exporter.daemon")
    lazy = {"exporter.sources.redis", "exporter.sources.memcached", "exporter.sources.app",
            "exporter.sources.http_cache", "exporter.discovery.dns", "exporter.webconfig", "exporter.statuspage",
            "exporter.demo", "exporter.apigee", "exporter.nginxconf", "exporter.promtext"}
    assert not loaded & lazy
    import exporter.sources

    assert exporter.sources.SOURCES["memcached"].__name__ == "MemcachedSource"
    assert "exporter.sources.memcached" in sys.modules and "exporter.sources.http_cache" not in sys.modules
    assert exporter.sources.RedisSource is exporter.sources.SOURCES["redis"]


_RUN_THEN_LIST_MODULES = """
import sys
from exporter import cli, daemon
daemon.Daemon.run = lambda self: print(" ".join(sorted(sys.modules))) or 0  # stop where the loop would start
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.servers
@pytest.mark.parametrize("web_config", [False, True])
def test_run_loads_the_web_config_and_bcrypt_only_when_given(tmp_path, web_config: bool) -> None:
    """`run` as far as the daemon's loop, in a fresh interpreter: bcrypt (the web config's password
    hashes) is loaded with --web.config.file and not without it."""
    (tmp_path / "web.yml").write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    (tmp_path / "cfg.yml").write_text("targets:\n- {name: r, type: redis, url: 'redis://127.0.0.1:1'}\n")
    args = ["run", "--config.file", str(tmp_path / "cfg.yml"), "--web.listen-address", f"127.0.0.1:{free_port()}"]
    if web_config:
        args += ["--web.config.file", str(tmp_path / "web.yml")]
    done = subprocess.run([sys.executable, "-c", _RUN_THEN_LIST_MODULES, *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    modules = set(done.stdout.split())
    assert {"exporter.daemon", "exporter.config", "exporter.http"} <= modules  # as far as the daemon's loop
    assert ("bcrypt" in modules) is web_config
    assert ("exporter.webconfig" in modules) is web_config
    # None is needed to poll Redis and serve /metrics, and together they were ~6 MiB resident
    # (docs/benchmarks.md): prometheus_client comes with the app source's parser only, tempfile
    # with --state.dir, difflib with a misspelt config key.
    unneeded = ("prometheus_client", "apscheduler", "multiprocessing", "statistics", "tempfile", "difflib")
    assert not {m for m in modules if m.split(".")[0] in unneeded}
