"""Hand the heap memory the process freed back to the kernel (glibc's ``malloc_trim``).

Poll threads allocate replies, parsed fields and rendered text, and free them a moment later,
interleaved with what is kept (the published chunks). glibc keeps those freed pages in its
per-thread arenas, counted in RSS: at 1000 targets and no scrape for 80 s, RSS climbed from ~95
to ~145 MiB, and one ``malloc_trim`` brought it back (docs/benchmarks.md, "Memory"). So the
daemon trims on a timer, whether or not anyone scrapes, and exposition after building a large
body. Elsewhere (musl, macOS) there is nothing to call and ``trim`` does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

EVERY = 5.0  # seconds: at most one trim this often (each takes 1-3 ms at 1000 targets)


def _libc_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only: absent from musl (Alpine)
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc_malloc_trim()
_lock = threading.Lock()
_last = -float("inf")
trims = 0  # done since start: for tests


def trim(every: float = EVERY) -> bool:
    """Trim unless the last trim was less than ``every`` seconds ago; True if it trimmed."""
    global _last, trims
    if _malloc_trim is None:
        return False
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
