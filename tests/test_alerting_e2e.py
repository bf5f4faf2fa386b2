"""The alert pipeline end to end, with real components:

real redis-server -> cache-exporter -> real prometheus (our rules) -> real prometheus-alertmanager
-> a webhook receiver in this test.

Time is compressed 360x: the rules come from alerts/build_rules.py at ``scale=1/360`` (a 30 min
``for`` becomes 5 s, the 4 h horizon 40 s) — the same rules, not a copy — and the exporter's
forecast window is 60 s. The peer rule ``used/max > 90 % for 2m`` runs in the same Prometheus,
scaled the same way, so both lead times come from one fill.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import REPO, free_port, load_script, need, redis_target, wait_until
from loadgen import SawtoothWriter, SteadyWriter

SCALE = 1 / 360
MiB = 2**20
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


build_rules = load_script(REPO / "alerts" / "build_rules.py")


def peer_rules(scale: float) -> dict:
    """The common peer rule (awesome-prometheus-alerts RedisOutOfConfiguredMaxmemory), for comparison."""
    return {"groups": [{"name": "peer", "rules": [{
        "alert": "PeerRedisOutOfConfiguredMaxmemory",
        "expr": "redis_memory_used_bytes / redis_memory_max_bytes > 0.9 and redis_memory_max_bytes > 0",
        "for": build_rules.duration(120 * scale), "labels": {"severity": "warning"}}]}]}


class Webhook:
    """An Alertmanager webhook receiver that records every alert it is sent, with arrival time."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.monotonic()
                for alert in body.get("alerts", []):
                    if alert.get("status") == "firing":
                        outer.received.append((now, alert["labels"]))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def first(self, alertname: str, severity: str | None = None) -> float | None:
        times = [t for t, labels in self.received if labels.get("alertname") == alertname
                 and (severity is None or labels.get("severity") == severity)]
        return min(times) if times else None

    def names(self) -> set[str]:
        return {labels["alertname"] for _, labels in self.received}

    def close(self) -> None:
        self.server.shutdown()


class Pipeline:
    def __init__(self, tmp: Path, exporter_port: int) -> None:
        need(PROMETHEUS is not None, "prometheus not installed")
        need(ALERTMANAGER is not None, "prometheus-alertmanager not installed")
        self.webhook = Webhook()
        self.procs: list[subprocess.Popen] = []
        am_port, prom_port = free_port(), free_port()
        self.prom_url = f"http://127.0.0.1:{prom_port}"

        # Alertmanager: the example config's inhibitions, a route that delivers at once.
        example = yaml.safe_load((REPO / "alerts" / "alertmanager.example.yml").read_text())
        am_config = {
            "route": {"receiver": "hook", "group_by": ["alertname", "target", "severity"], "group_wait": "0s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "hook", "webhook_configs": [
                {"url": f"http://127.0.0.1:{self.webhook.port}/", "send_resolved": False}]}],
            "inhibit_rules": example["inhibit_rules"],
        }
        (tmp / "am.yml").write_text(yaml.safe_dump(am_config))
        self._start([ALERTMANAGER, f"--config.file={tmp / 'am.yml'}", f"--storage.path={tmp / 'am-data'}",
                     f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="], tmp / "am.log")

        (tmp / "rules.yml").write_text(build_rules.render(scale=SCALE))
        (tmp / "peer.yml").write_text(yaml.safe_dump(peer_rules(SCALE)))
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "rules.yml"), str(tmp / "peer.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [{"job_name": "cache-exporter",
                                "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        check = subprocess.run(["promtool", "check", "config", str(tmp / "prometheus.yml")], capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self._start([PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
                     f"--storage.tsdb.path={tmp / 'prom-data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                     "--rules.alert.resend-delay=1s"], tmp / "prometheus.log")
        import urllib.request

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.prom_url}/-/ready", timeout=1) as resp:
                return resp.status == 200
        wait_until(ready, timeout=30, message="prometheus ready")

    def _start(self, cmd: list[str], log: Path) -> None:
        self.procs.append(subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT))

    def query(self, expr: str) -> list[dict]:
        import urllib.parse
        import urllib.request

        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)["data"]["result"]

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.webhook.close()


@pytest.fixture
def pipeline(tmp_path):
    made: list[Pipeline] = []

    def make(exporter_port: int) -> Pipeline:
        p = Pipeline(tmp_path, exporter_port)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def exporter_config(server, good_host: Path) -> dict:
    return {"global": {"interval": "0.25s", "timeout": "0.2s", "forecast_window": "60s"},
            "targets": [redis_target("sessions", server)]}


@pytest.fixture
def good_host(tmp_path) -> Path:
    """A host without kernel findings, so only the memory alerts are in play."""
    root = tmp_path / "host"
    (root / "proc/sys/vm").mkdir(parents=True)
    (root / "sys/kernel/mm/transparent_hugepage").mkdir(parents=True)
    (root / "proc/sys/vm/overcommit_memory").write_text("1\n")
    (root / "sys/kernel/mm/transparent_hugepage/enabled").write_text("always [madvise] never\n")
    return root


def test_exhaustion_warning_reaches_the_webhook_before_the_first_oom(
        redis_factory, exporter_factory, pipeline, good_host):
    server = redis_factory(args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
    ep = exporter_factory(exporter_config(server, good_host), env={"CACHE_EXPORTER_HOST_ROOT": str(good_host)})
    p = pipeline(ep.port)
    wait_until(lambda: p.webhook.first("CacheWatchdog") is not None, timeout=30,
               message="the Watchdog to arrive (pipeline alive)")
    writer = SteadyWriter(server.client())
    started = time.monotonic()
    writer.start()
    try:
        wait_until(lambda: writer.first_oom is not None, timeout=150, message="the first -OOM reply")
        oom = writer.first_oom
        wait_until(lambda: p.webhook.first("PeerRedisOutOfConfiguredMaxmemory") is not None, timeout=20,
                   message="the peer rule to fire as well")
    finally:
        writer.halt()
    warning = p.webhook.first("CacheMemoryExhaustionPredicted", "warning")
    critical = p.webhook.first("CacheMemoryExhaustionPredicted", "critical")
    peer = p.webhook.first("PeerRedisOutOfConfiguredMaxmemory")
    assert warning is not None, p.webhook.received
    lead = oom - warning
    peer_lead = oom - peer
    print(f"e2e: fill took {oom - started:.1f} s; warning reached the webhook {lead:.1f} s before the first "
          f"-OOM ({lead / SCALE / 60:.0f} min at real time), critical {oom - critical:.1f} s before; the peer "
          f"rule {peer_lead:.1f} s before ({peer_lead / SCALE / 60:.0f} min): {lead - peer_lead:.1f} s earlier "
          f"({(lead - peer_lead) / SCALE / 60:.0f} min at real time)")
    assert warning < oom and lead > 0
    assert critical is not None and warning < critical < oom
    assert warning < peer  # earlier than the common peer rule on the same fill
    # Nothing else on this healthy, well-configured target.
    assert p.webhook.names() <= {"CacheWatchdog", "CacheMemoryExhaustionPredicted", "CacheWritesRejected",
                                 "PeerRedisOutOfConfiguredMaxmemory"}, p.webhook.names()


def test_sawtooth_load_reaches_nothing(redis_factory, exporter_factory, pipeline, good_host):
    server = redis_factory(args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
    base = int(server.info("memory")["used_memory"])
    # Between ~45 % and ~80 % of maxmemory: above the rules' level guard, cycling every ~8 s.
    writer = SawtoothWriter(server.client(), low=int(1.8 * MiB), high=int(3.2 * MiB), fill_seconds=5.0)
    assert base < 1.8 * MiB
    writer.start()
    try:
        wait_until(lambda: writer.cycles >= 2, timeout=60, message="the sawtooth to settle")  # a store in its rhythm
        ep = exporter_factory(exporter_config(server, good_host), env={"CACHE_EXPORTER_HOST_ROOT": str(good_host)})
        p = pipeline(ep.port)
        wait_until(lambda: p.webhook.first("CacheWatchdog") is not None, timeout=30, message="pipeline alive")
        # Long enough for the forecast to warm (15 s) and every scaled `for` to elapse several times.
        wait_until(lambda: p.query('cache_memory_seconds_until_full{target="sessions"}'), timeout=30,
                   message="the forecast to reach Prometheus")
        deadline = time.monotonic() + 45
        peak_utilization = 0.0
        while time.monotonic() < deadline:
            result = p.query('cache_memory_utilization_ratio{target="sessions"}')
            if result:
                peak_utilization = max(peak_utilization, float(result[0]["value"][1]))
            time.sleep(1)
        assert writer.cycles >= 6 and writer.errors == 0
        assert peak_utilization > 0.7  # the level guard alone would not have kept it quiet
        until_full = p.query('cache_memory_seconds_until_full{target="sessions"}')[0]["value"][1]
        assert until_full == "+Inf"
        assert p.webhook.names() == {"CacheWatchdog"}, p.webhook.received
    finally:
        writer.halt()
