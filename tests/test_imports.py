"""Every module of the package imports on its own, first, with nothing of the package loaded.

A cycle between two modules often works in the order the daemon happens to import them and
breaks with "partially initialized module" when a tool or a test imports the other one first.
Each module is imported here into a clean ``exporter.*`` namespace in this process (a fresh
interpreter per module would cost seconds); the original modules are put back afterwards.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterator

import pytest

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
