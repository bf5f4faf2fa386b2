"""The unified memory families, computed one way for every store from its ``MemoryView``."""

from __future__ import annotations

from exporter import catalog
from exporter.snapshot import MemoryView, Samples


def add_unified_memory(out: Samples, store: str, memory: MemoryView, version: str, role: str) -> None:
    """``cache_info`` and the memory families: used, limit (and its source), utilization,
    headroom, resident and its limit, evicts-when-full. A limit of 0 or none means no limit:
    no limit, utilization or headroom series then."""
    labels = (("store", store),)
    out.add(catalog.CACHE_INFO, 1, labels + (
        ("version", version), ("role", role), ("eviction_policy", memory.eviction_policy or "")))
    out.add(catalog.CACHE_MEMORY_USED, memory.used, labels)
    if memory.limit:
        out.add(catalog.CACHE_MEMORY_LIMIT, memory.limit, labels)
        out.add(catalog.CACHE_MEMORY_LIMIT_INFO, 1, labels + (("source", memory.limit_source or ""),))
        if memory.used is not None:
            out.add(catalog.CACHE_MEMORY_UTILIZATION, memory.used / memory.limit, labels)
            out.add(catalog.CACHE_MEMORY_HEADROOM, memory.limit - memory.used, labels)
    out.add(catalog.CACHE_RESIDENT, memory.resident, labels)
    out.add(catalog.CACHE_RESIDENT_LIMIT, memory.resident_limit, labels)
    if memory.evicts_when_full is not None:
        out.add(catalog.CACHE_EVICTS_WHEN_FULL, int(memory.evicts_when_full), labels)
