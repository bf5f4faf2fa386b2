"""Freed heap memory goes back to the kernel on a timer, not only when someone scrapes.

At 1000 targets an exporter nobody scraped for 80 s held ~145 MiB against ~92 MiB right after
a trim (docs/benchmarks.md, "Memory"); the daemon trims every ``memory.EVERY`` seconds.
"""

from __future__ import annotations

import time

import pytest

from exporter import memory
from exporter.config import LoadResult, default_config
from exporter.daemon import Daemon

glibc = pytest.mark.skipif(not memory.available(), reason="malloc_trim is glibc's (this is not glibc)")


@glibc
def test_trim_is_rate_limited() -> None:
    assert memory.trim(every=0) is True
    assert memory.trim(every=3600) is False  # the last one was just now
    done = memory.trims
    assert memory.trim(every=0) is True
    assert memory.trims >= done + 1


def test_trim_does_nothing_where_there_is_no_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_malloc_trim", None)
    assert memory.available() is False
    assert memory.trim(every=0) is False


@glibc
def test_the_daemon_trims_periodically_without_any_scrape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "EVERY", 0.05)
    d = Daemon(LoadResult(default_config("127.0.0.1:0", self_scrape=False)), "127.0.0.1:0", None)
    before = memory.trims
    d.start()
    try:
        deadline = time.monotonic() + 20
        while memory.trims < before + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert memory.trims >= before + 3
    finally:
        d.stop()
    after_stop = memory.trims
    time.sleep(0.3)
    assert memory.trims <= after_stop + 1, "the trim thread outlived the daemon"


