"""`cache-exporter demo` (what `make demo` runs): it shows every case, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, need

from exporter.demo import ORIGIN_FAILS_FOR, nginx_binary

pytestmark = pytest.mark.servers  # every test here starts a server or a binary


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_demo_shows_every_case_then_cleans_up() -> None:
    need(nginx_binary() is not None, "nginx (Debian package nginx)")
    result = subprocess.run([sys.executable, "-m", "exporter", "demo", "--duration", str(ORIGIN_FAILS_FOR + 8)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    tables = out.split("live figures from /metrics:")[1:]
    assert len(tables) >= 2
    last = tables[-1]
    for target in ("sessions", "catalog", "unbounded", "memcached", "edge"):
        assert f"  {target} " in last, target
    assert "stale error after recovery: YES" in last  # the origin recovered; nginx still serves its 503
    assert "origin past the cache: 200" in last
    # While the origin still fails, the cached 503 is an outage, not a stale error: no false alarm.
    assert "stale error after recovery: YES" not in tables[0]


def test_demo_stops_cleanly_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "demo", "--duration", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        line = ""
        while "Look at:" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
        assert "Look at:" in line
        servers = children_of(proc.pid)
        assert servers, "the demo runs its servers as child processes"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        time.sleep(0.5)
        alive = [pid for pid in servers if os.path.exists(f"/proc/{pid}") and
                 "zombie" not in open(f"/proc/{pid}/status").read().lower()]
        assert alive == [], f"servers left running: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("listen", ["bogus", ":99999", "[::1]:x"])
def test_demo_refuses_a_bad_listen_address(listen: str) -> None:
    """A bad --listen is a usage error (exit 2, one line), not a traceback, and starts nothing."""
    result = subprocess.run([sys.executable, "-m", "exporter", "demo", "--listen", listen, "--duration", "1"],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "expected [HOST]:PORT" in result.stderr and "Traceback" not in result.stderr
    assert "throwaway servers" not in result.stdout
