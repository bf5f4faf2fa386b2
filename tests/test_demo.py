"""`cache-exporter demo` (what `make demo` runs): it shows every case, and leaves nothing behind."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, load_script, need, wait_until

from exporter import catalog
from exporter.cli import DEMO_DURATION
from exporter.demo import (
    EXHAUSTION,
    FILL_SECONDS,
    FILLING,
    ORIGIN_FAILS_FOR,
    REJECTIONS,
    SPEED,
    AlertWatch,
    nginx_binary,
    rules_at,
)

build_rules = load_script(REPO / "alerts" / "build_rules.py")

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


COUNTDOWN_LINE = re.compile(rf"{FILLING} +countdown to full: (?:\d+m)?\d+s, full at ")
ALERT_LINE = re.compile(rf'ALERT firing +{EXHAUSTION}\{{target="{FILLING}", severity="(\w+)"\}}: full in ')


def test_demo_counts_down_and_alerts_within_a_minute() -> None:
    """The headline within 60 s of the start: the filling store's countdown and the alert that fires."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "demo", "--duration", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        seen = lambda pattern: next((m for line in list(lines) if (m := pattern.search(line))), None)  # noqa: E731
        wait_until(lambda: seen(COUNTDOWN_LINE) and seen(ALERT_LINE), timeout=60 - (time.monotonic() - started),
                   interval=0.2, message="the countdown and the alert line")
        severities = {r["labels"]["severity"] for g in build_rules.build()["groups"] for r in g["rules"]
                      if r["alert"] == EXHAUSTION}
        assert seen(ALERT_LINE).group(1) in severities
        head = "".join(lines[:5])
        assert "Runs until Ctrl-C" in head and "Status page: http://" in head and f"{SPEED}x speed" in head
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        reader.join(5)
        assert "The demo has ended" in lines[-1] and "no longer answer" in lines[-1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_demo_reads_the_thresholds_of_the_shipped_rules() -> None:
    """At scale 1 the demo's reading of the built rules is alerts/build_rules.py's own constants."""
    rules = {(r.name, r.severity): r for r in rules_at(build_rules, 1.0)}
    time_ = build_rules.TIME
    for severity in ("critical", "warning", "info"):
        rule = rules[(EXHAUSTION, severity)]
        assert rule.horizon == time_[f"predict_{severity}_horizon"]
        assert rule.hold == time_[f"predict_{severity}_for"]
        assert rule.evidence == build_rules.PREDICT_EVIDENCE[severity]
    assert rules[(EXHAUSTION, "info")].beyond == time_["predict_warning_horizon"]
    assert rules[(REJECTIONS, "critical")].window == time_["rejections_window"]
    assert rules[(REJECTIONS, "critical")].hold == time_["rejections_for"]
    scaled = {(r.name, r.severity): r for r in rules_at(build_rules, 1 / SPEED)}
    assert scaled[(EXHAUSTION, "warning")].horizon == pytest.approx(time_["predict_warning_horizon"] / SPEED)


def test_demo_alerts_hold_for_their_for_then_resolve() -> None:
    rules = [r for r in rules_at(build_rules, 1 / SPEED) if r.name == EXHAUSTION]
    watch = AlertWatch(rules)
    warning = next(r for r in rules if r.severity == "warning")
    critical = next(r for r in rules if r.severity == "critical")

    def values(until_full: float, basis: float, evicts: float = 0) -> dict[tuple[str, str], float]:
        return {(catalog.CACHE_MEMORY_UNTIL_FULL, "s"): until_full, (catalog.CACHE_MEMORY_FORECAST_BASIS, "s"): basis,
                (catalog.CACHE_EVICTS_WHEN_FULL, "s"): evicts}

    left = warning.horizon / 2  # within the warning horizon, beyond the critical one
    assert left > critical.horizon
    assert [(c[0], c[1].severity) for c in watch.evaluate(0.0, values(left, left), ["s"])] == [("pending", "warning")]
    assert watch.evaluate(warning.hold / 2, values(left, left), ["s"]) == []
    assert [(c[0], c[1].severity) for c in watch.evaluate(warning.hold, values(left, left), ["s"])] == \
        [("firing", "warning")]
    # Critical wants the countdown within the growth seen (evidence 1): not with half of it seen.
    short = critical.horizon / 2
    changes = watch.evaluate(warning.hold + 1, values(short, short / 2), ["s"])
    assert [(c[0], c[1].severity) for c in changes] == []
    changes = watch.evaluate(warning.hold + 2, values(short, short), ["s"])
    assert [(c[0], c[1].severity) for c in changes] == [("pending", "critical")]
    # A store that evicts when full never runs out: the rules' ``unless`` drops it.
    changes = watch.evaluate(warning.hold + 3, values(short, short, evicts=1), ["s"])
    assert sorted(c[0] for c in changes) == ["resolved"]  # the firing warning; the pending critical just ends
    assert watch.evaluate(warning.hold + 4, values(math.inf, 0), ["s"]) == []


def test_make_demo_and_the_cli_agree_on_a_duration_that_shows_the_store_running_out() -> None:
    makefile = (REPO / "Makefile").read_text()
    default = re.search(r"^DURATION \?= (\S+)$", makefile, re.M)
    assert default is not None and float(default.group(1)) == DEMO_DURATION
    assert DEMO_DURATION >= FILL_SECONDS + 30
