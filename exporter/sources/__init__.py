"""Sources by target type, each module imported when a target of its type is first polled.

A source module declares its metric families in the catalog when imported; ``load_all()``
imports every one (the metrics reference and the catalog's tests need them all). Lazy because
a Redis-only exporter need not carry the HTTP cache source (http_sf, http.client, email) or the
app source (prometheus_client's parser): a few MiB of resident memory each (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from exporter.sources.base import Reading, Source
from exporter.targets import Target

if TYPE_CHECKING:
    from exporter.sources.app import AppSource
    from exporter.sources.http_cache import HttpCacheSource
    from exporter.sources.memcached import MemcachedSource
    from exporter.sources.redis import RedisSource

# target type -> (module, class)
_CLASSES: dict[str, tuple[str, str]] = {
    "redis": ("exporter.sources.redis", "RedisSource"),
    "memcached": ("exporter.sources.memcached", "MemcachedSource"),
    "app": ("exporter.sources.app", "AppSource"),
    "http_cache": ("exporter.sources.http_cache", "HttpCacheSource"),
}


class _Sources(Mapping[str, type[Source]]):
    """Source class by target type, its module imported on first lookup."""

    def __getitem__(self, kind: str) -> type[Source]:
        module, name = _CLASSES[kind]
        cls: type[Source] = getattr(importlib.import_module(module), name)
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(_CLASSES)

    def __len__(self) -> int:
        return len(_CLASSES)


SOURCES: Mapping[str, type[Source]] = _Sources()


def source_for(target: Target) -> Source:
    """A new source instance (with its own connection) for ``target``."""
    return SOURCES[target.type](target)


def load_all() -> None:
    """Import every source module: every family any source can emit is then in the catalog."""
    for module, _ in _CLASSES.values():
        importlib.import_module(module)


def __getattr__(name: str) -> Any:
    # `from exporter.sources import RedisSource` keeps working, importing only that source.
    for kind, (_, cls) in _CLASSES.items():
        if cls == name:
            return SOURCES[kind]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AppSource", "HttpCacheSource", "MemcachedSource", "RedisSource", "Reading", "Source", "SOURCES",
           "load_all", "source_for"]
