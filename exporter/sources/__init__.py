"""Sources by target type. Importing this package declares every source's metric families."""

from __future__ import annotations

from exporter.sources.app import AppSource
from exporter.sources.base import Reading, Source
from exporter.sources.http_cache import HttpCacheSource
from exporter.sources.memcached import MemcachedSource
from exporter.sources.redis import RedisSource
from exporter.targets import Target

SOURCES: dict[str, type[Source]] = {
    "redis": RedisSource,
    "memcached": MemcachedSource,
    "app": AppSource,
    "http_cache": HttpCacheSource,
}


def source_for(target: Target) -> Source:
    """A new source instance (with its own connection) for ``target``."""
    return SOURCES[target.type](target)


__all__ = ["Reading", "Source", "SOURCES", "source_for"]
