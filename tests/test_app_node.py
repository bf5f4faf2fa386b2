"""A real Node.js app caching in its own heap until V8 aborts, watched as an app target.

tests/apps/node_heap_app grows an unbounded Map at a steady rate, with per-request garbage,
under --max-old-space-size=64, and dies with exit 134 ("JavaScript heap out of memory"), which
container OOM-kill alerts never see. Here it runs in a crash loop (restarted on the same port
after each abort, like a supervisor would) beside a healthy twin whose bounded cache makes its
heap saw under GC, all watched by the exporter and a real Prometheus running the shipped rules.

Every timer is scaled together by ``SCALE`` (1/30): the 15 s poll becomes 0.5 s, the 1 h forecast
window 2 min, Prometheus' scrape 0.5 s and its rule evaluation (1 m) 2 s, the rules' ``for``s and
horizons 1/30 of theirs, and the app's life (~10 min at the default interval) ~20 s.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import pytest
from conftest import REPO, free_port, need, wait_until
from promlab import PROMETHEUS, Prometheus, load_build_rules

from exporter import audit
from exporter.config import build_config

APP = REPO / "tests" / "apps" / "node_heap_app"
MiB = 2**20
SCALE = 1 / 30
INTERVAL = 15 * SCALE
LIVES = 2
# ~2.5 MiB/s dies in ~20 s against a 64 MiB old generation: a 10 min life at the default interval.
LEAK = {"grow": 5 * MiB // 2, "churn": 8 * MiB}
rules = load_build_rules()


@pytest.fixture(scope="module")
def node_app_ready():
    need(shutil.which("node") is not None, "node not installed")
    need((APP / "node_modules" / "prom-client").exists(), "run `npm install` in tests/apps/node_heap_app")


def start_app(port: int, export_limit: bool = True, grow: int = 64 * 1024, churn: int = 0,
              max_entries: int = 0) -> subprocess.Popen:
    env = {"PORT": str(port), "EXPORT_HEAP_LIMIT": "1" if export_limit else "0", "GROW_BYTES_PER_SEC": str(grow),
           "CHURN_BYTES_PER_SEC": str(churn), "CACHE_MAX_ENTRIES": str(max_entries), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([shutil.which("node"), "--max-old-space-size=64", str(APP / "app.js")], env=env,
                            cwd=APP, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"node exited {proc.returncode}: {proc.stderr.read().decode(errors='replace')}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until(listening, timeout=10, message="the node app to listen")
    return proc


class CrashLoop:
    """Runs the leaking app ``lives`` times on one port, restarting it at once after each exit."""

    def __init__(self, port: int, lives: int) -> None:
        self.port = port
        self.lives = lives
        self.listening: list[float] = []  # monotonic time each life started listening
        self.deaths: list[tuple[float, int, str]] = []  # (monotonic time, exit code, V8's fatal line)
        self.proc: subprocess.Popen | None = None
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for _ in range(self.lives):
            if self.stopped:
                return
            self.proc = start_app(self.port, grow=LEAK["grow"], churn=LEAK["churn"])
            self.listening.append(time.monotonic())
            code = self.proc.wait()
            stderr = self.proc.stderr.read().decode(errors="replace")
            fatal = next((line for line in stderr.splitlines() if "FATAL ERROR" in line), stderr[-400:])
            self.deaths.append((time.monotonic(), code, fatal))

    def life(self) -> int:
        """The index of the life running now (or the last one)."""
        return len(self.deaths) if len(self.deaths) < self.lives else self.lives - 1

    def stop(self) -> None:
        self.stopped = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.thread.join(15)


def app_target(name: str, port: int, **extra: object) -> dict:
    return {"name": name, "type": "app", "url": f"http://127.0.0.1:{port}/metrics", **extra}


def test_crash_loop_every_life_alerted_before_the_abort_healthy_twin_silent(node_app_ready, exporter_factory,
                                                                            tmp_path):
    need(PROMETHEUS is not None, "prometheus not installed")
    leaky_port, healthy_port = free_port(), free_port()
    # The healthy twin: the same allocation, but its cache keeps 4000 entries (~16 MiB) and evicts.
    healthy = start_app(healthy_port, grow=LEAK["grow"], churn=LEAK["churn"], max_entries=4000)
    loop = None
    prom = None
    try:
        config = {"global": {"interval": f"{INTERVAL:g}s", "timeout": "0.4s", "forecast_window": f"{3600 * SCALE:g}s"},
                  "targets": [app_target("leaky", leaky_port), app_target("healthy", healthy_port)]}
        loop = CrashLoop(leaky_port, LIVES)
        wait_until(lambda: loop.listening, timeout=15, message="the first life")
        ep = exporter_factory(config)
        rules_file = tmp_path / "rules.yml"
        rules_file.write_text(rules.render(scale=SCALE))
        prom = Prometheus(tmp_path / "prom", [f"127.0.0.1:{ep.port}"], [rules_file],
                          scrape_interval=rules.duration(15 * SCALE),
                          evaluation_interval=rules.duration(60 * SCALE))
        prom.wait_ready()
        first_alert: dict[tuple[int, str], float] = {}  # (life, severity) -> first seen firing
        armed: set[tuple[int, str]] = set()
        healthy_alerts: list[dict] = []
        first_up_after_restart: float | None = None
        countdown_at_first_poll: float | None = None
        restarts_seen = 0.0
        last_util: dict[int, float] = {}
        effective = None
        deadline = time.monotonic() + 100
        trace: list[tuple] = []
        while len(loop.deaths) < LIVES and time.monotonic() < deadline:
            now = time.monotonic()
            life = loop.life()
            firing = set()
            for a in prom.result('ALERTS{alertname=~"AppHeap.*"}'):
                labels = a["metric"]
                if labels.get("target") == "healthy":
                    healthy_alerts.append(labels)
                elif labels.get("alertstate") == "firing":
                    firing.add(labels["severity"])
            for severity in ("warning", "critical"):
                # The last life's alert fires on until Prometheus sees its series go stale: a life's
                # alert is one that fires after it was seen not firing in that life.
                if severity not in firing:
                    armed.add((life, severity))
                elif (life, severity) in armed:
                    first_alert.setdefault((life, severity), now)
            m = ep.metrics()
            util = m.value("cache_memory_utilization_ratio", target="leaky")
            if util is not None and m.value("cache_up", target="leaky") == 1:
                last_util[life] = util
            effective = m.value("app_heap_effective_limit_bytes", target="leaky") or effective
            restarts = m.value("app_process_restarts_total", target="leaky") or 0.0
            if restarts > restarts_seen and first_up_after_restart is None:
                # The first poll of the second life: a new history, so no countdown carried over.
                first_up_after_restart = now
                countdown_at_first_poll = m.value("cache_memory_seconds_until_full", target="leaky")
            restarts_seen = max(restarts_seen, restarts)
            trace.append((round(now - loop.listening[0], 1), life, util and round(util, 2),
                          m.value("cache_memory_seconds_until_full", target="leaky"),
                          m.value("cache_memory_forecast_basis_seconds", target="leaky"),
                          m.value("cache_memory_seconds_until_full", target="healthy"),
                          m.value("cache_memory_utilization_ratio", target="healthy")))
            time.sleep(0.25)
        assert len(loop.deaths) == LIVES, f"the app did not die {LIVES} times in time: {loop.deaths}"

        # Each life died of V8's abort (SIGABRT: exit 134 as a shell or container runtime reports it).
        for _, code, stderr in loop.deaths:
            assert code in (134, -6), (code, stderr)
            assert "heap out of memory" in stderr.lower(), stderr
        # The countdown aims at the effective limit: 80 % of the 64 MiB old generation for V8.
        assert effective == pytest.approx(0.8 * 64 * MiB)
        # The second life is watched from its first poll, with a history of its own.
        assert restarts_seen == LIVES - 1
        assert first_up_after_restart is not None
        assert first_up_after_restart - loop.listening[1] < 4 * INTERVAL + 1.0
        assert countdown_at_first_poll is None
        leads = []
        for life, (died, _, _) in enumerate(loop.deaths):
            warned = first_alert.get((life, "warning"))
            assert warned is not None and loop.listening[life] < warned < died, \
                f"life {life}: no AppHeapExhaustionPredicted warning before the abort ({first_alert}) {trace}"
            critical = first_alert.get((life, "critical"))
            leads.append((died - loop.listening[life], died - warned, died - critical if critical else None,
                          last_util.get(life)))
        # The healthy twin's heap grows while its cache fills (~6 s), then saws under GC: no alert fires.
        assert not [a for a in healthy_alerts if a["alertstate"] == "firing"], healthy_alerts
        for life, (lived, warning, critical, util) in enumerate(leads):
            crit = f"{critical:.1f} s ({critical / SCALE / 60:.1f} min)" if critical is not None else "none"
            fatal = loop.deaths[life][2].strip()[:90]
            print(f"node life {life}: {fatal}; aborted after {lived:.1f} s "
                  f"({lived / SCALE / 60:.1f} min at 15 s polls) at {util:.0%} of the old-generation limit "
                  f"(last poll); "
                  f"warning {warning:.1f} s "
                  f"({warning / SCALE / 60:.1f} min) before, critical {crit} before")
    finally:
        if loop is not None:
            loop.stop()
        healthy.kill()
        if prom is not None:
            prom.stop()


def audit_findings(entry: dict) -> dict[str, tuple[str, str]]:
    target = build_config({"targets": [entry]}, "<test>").config.targets[0]
    report = audit.audit_target(target)
    assert report.error is None, report.error
    return {f.check: (f.severity, f.message) for f in report.findings}


def test_heap_limit_from_config_audit_without_one_and_the_cache_convention(node_app_ready, exporter_factory):
    port = free_port()
    # No limit gauge (prom-client's default); a bounded cache, so it evicts.
    app = start_app(port, export_limit=False, grow=256 * 1024, max_entries=200)
    try:
        config = {"global": {"interval": "0.25s", "timeout": "0.2s"},
                  "targets": [app_target("node", port, heap_limit="64MiB")]}
        ep = exporter_factory(config)
        m = ep.metrics()
        assert m.value("cache_memory_limit_bytes", target="node") == 64 * MiB
        assert m.has("cache_memory_limit_info", target="node", source="config")
        assert m.value("app_heap_effective_limit_bytes", target="node") == pytest.approx(0.8 * 64 * MiB)
        used = m.value("cache_memory_used_bytes", target="node")
        total = m.value("app_heap_total_used_bytes", target="node")
        assert 0 < used < total  # old generation only: the young generation is not what runs out
        # The convention of docs/app-targets.md: cache_hits_total, cache_misses_total, cache_evictions_total and
        # cache_entries, labelled by cache, mapped to the unified families with store="app".
        wait_until(lambda: (ep.metrics().value("cache_evictions_total", target="node", cache="sessions") or 0) > 0,
                   timeout=10, message="evictions")
        m = ep.metrics()
        assert m.value("cache_items", target="node", store="app", cache="sessions") == 200
        hits = m.value("cache_hits_total", target="node", store="app", cache="sessions")
        misses = m.value("cache_misses_total", target="node", store="app", cache="sessions")
        assert hits is not None and misses is not None and hits + misses > 0
        assert not m.has("cache_config_finding", target="node", check="app_heap_limit_unknown")

        # Without heap_limit and without the gauge there is no limit: no countdown, and the audit says so.
        ep2 = exporter_factory({"global": config["global"], "targets": [app_target("node", port)]})
        m2 = ep2.metrics()
        assert not m2.has("cache_memory_limit_bytes", target="node")
        assert not m2.has("app_heap_effective_limit_bytes", target="node")
        assert m2.has("cache_memory_used_bytes", target="node")
        assert m2.value("cache_config_finding", target="node", check="app_heap_limit_unknown",
                        severity="warning") == 1
        found = audit_findings(app_target("node", port))
        severity, message = found["app_heap_limit_unknown"]
        assert severity == "warning" and "nodejs_heap_size_limit_bytes" in message and "heap_limit" in message
        assert audit_findings(app_target("node", port, heap_limit="64MiB")) == {}
        # A heap limit as large as the container's: the container is OOM-killed first.
        found = audit_findings(app_target("node", port, heap_limit="64MiB", memory_limit="64MiB"))
        assert found["app_heap_limit_above_hard_limit"][0] == "critical"
        assert "app_heap_limit_above_hard_limit" not in audit_findings(
            app_target("node", port, heap_limit="64MiB", memory_limit="256MiB"))
    finally:
        app.kill()
