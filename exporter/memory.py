"""glibc malloc's settings and housekeeping: fewer arenas, and freed memory handed back.

Poll threads allocate replies, parsed fields and rendered text, and free them a moment later,
interleaved with what is kept (the published chunks). glibc keeps those freed pages in its
per-thread arenas, counted in RSS: at 1000 targets and no scrape for 80 s, RSS climbed from ~95
to ~145 MiB, and one ``malloc_trim`` brought it back (docs/benchmarks.md, "Fixes, measured before/after"). So the
daemon trims on a timer, whether or not anyone scrapes, and exposition after building a large
body. Elsewhere (musl, macOS) there is nothing to call and ``trim`` does nothing.

Arenas: every poll and HTTP thread may get its own, and each keeps the multi-MB /metrics
buffers it once freed, so RSS grew with the number of threads that ever built a body; the
command line caps them at 2 (``limit_arenas``) before any thread starts.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable

EVERY = 5.0  # seconds: at most one trim this often (each takes 1-3 ms at 1000 targets)
M_ARENA_MAX = -8  # mallopt's parameter number


def _libc(name: str) -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)  # glibc only: absent from musl (Alpine)
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc("malloc_trim")
_lock = threading.Lock()
_last = -float("inf")
trims = 0  # done since start: for tests


def trim(every: float | None = None) -> bool:
    """Trim unless the last trim was less than ``every`` (``EVERY``) seconds ago; True if it trimmed."""
    global _last, trims
    if _malloc_trim is None:
        return False
    if every is None:
        every = EVERY  # read now: a test may have shortened it
    with _lock:
        now = time.monotonic()
        if now - _last < every:
            return False
        _last = now
        trims += 1
    _malloc_trim(0)
    return True


def available() -> bool:
    return _malloc_trim is not None


def limit_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (docs/benchmarks.md, "Design measurements"), unless
    ``MALLOC_ARENA_MAX`` is set; call it before any thread exists. Not glibc: nothing."""
    mallopt = _libc("mallopt")
    if mallopt is not None and not os.environ.get("MALLOC_ARENA_MAX"):
        mallopt(M_ARENA_MAX, arenas)
