"""The alert pipeline end to end, with real components:

real redis-server -> cache-exporter -> real prometheus (our rules) -> real prometheus-alertmanager
-> a webhook receiver in this test.

Every timer is scaled together (``SCALE``, 1/60: an hour is a minute): the exporter's poll interval
(15 s -> 0.25 s) and forecast window (1 h -> 60 s), Prometheus' scrape (15 s) and rule evaluation
(1 m) intervals, and the rules from alerts/build_rules.py at that scale (the same rules, not a copy:
a 5 m ``for`` becomes 5 s, the 6 h horizon 6 min). The poll timeout stays 0.2 s: it bounds one poll
on loopback and is no part of when a warning comes. The three peer rules of the early-warning
benchmark (benchmarks/early_warning/peer.rules.yml: a 90 % threshold, ``predict_linear`` and
node_exporter's fill-up rule), scaled the same way, run in the same Prometheus on the same fill, so
every lead time comes from one run.
"""

from __future__ import annotations

import json
import re
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

from exporter.units import parse_duration

SCALE = 1 / 60
MiB = 2**20
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
PEER_RULES = REPO / "benchmarks" / "early_warning" / "peer.rules.yml"
PEERS = ("PeerThreshold", "PeerPredictLinear", "PeerNodeMixin")


build_rules = load_script(REPO / "alerts" / "build_rules.py")


def scaled(seconds: float, scale: float) -> str:
    return build_rules.duration(seconds * scale)


def peer_rules(scale: float) -> dict:
    """The benchmark's peer rules with every duration (ranges, horizons, ``for``) scaled."""
    doc = yaml.safe_load(PEER_RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            expr = re.sub(r"\[(\d+[smhd])\]", lambda m: f"[{scaled(parse_duration(m[1]), scale)}]", rule["expr"])
            rule["expr"] = re.sub(r"(\d+) \* 3600", lambda m: f"{int(m[1]) * 3600 * scale:g}", expr)
            rule["for"] = scaled(parse_duration(rule["for"]), scale)
    return doc


class Webhook:
    """An Alertmanager webhook receiver that records every alert it is sent, with arrival time."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict]] = []
        self.starts: list[tuple[dict, str]] = []  # (labels, startsAt) of every firing notification
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.monotonic()
                for alert in body.get("alerts", []):
                    if alert.get("status") == "firing":
                        outer.received.append((now, alert["labels"]))
                        outer.starts.append((alert["labels"], alert.get("startsAt", "")))
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

    def started(self, alertname: str, severity: str) -> set[str]:
        """Every ``startsAt`` notified for one alert: one value as long as it never restarted."""
        return {at for labels, at in self.starts
                if labels.get("alertname") == alertname and labels.get("severity") == severity}

    def names(self) -> set[str]:
        return {labels["alertname"] for _, labels in self.received}

    def close(self) -> None:
        self.server.shutdown()


class Pipeline:
    def __init__(self, tmp: Path, exporter_port: int, scale: float = SCALE) -> None:
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

        (tmp / "rules.yml").write_text(build_rules.render(scale=scale))
        (tmp / "peer.yml").write_text(yaml.safe_dump(peer_rules(scale)))
        prom_config = {
            "global": {"scrape_interval": scaled(15, scale), "evaluation_interval": scaled(60, scale)},
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

    def make(exporter_port: int, scale: float = SCALE) -> Pipeline:
        p = Pipeline(tmp_path, exporter_port, scale)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def exporter_config(server, good_host: Path, scale: float = SCALE) -> dict:
    return {"global": {"interval": scaled(15, scale), "timeout": "0.2s", "forecast_window": scaled(3600, scale)},
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


def first_of_ours(webhook: Webhook) -> float | None:
    times = [t for t in (webhook.first("CacheMemoryExhaustionPredicted", sev) for sev in ("warning", "critical"))
             if t is not None]
    return min(times) if times else None


@pytest.mark.timeout(300)
def test_exhaustion_warning_reaches_the_webhook_before_the_first_oom(
        redis_factory, exporter_factory, pipeline, good_host):
    """A real Redis (noeviction, 4 MiB) sits idle for 65 s (an hour at real time, so the peers'
    ``predict_linear`` has its 1 h of history), then fills at a steady rate in ~36 s (36 min): ours
    must reach the webhook before the first -OOM and before the threshold peer, and the lead of
    every peer on the same fill is reported."""
    server = redis_factory(args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
    ep = exporter_factory(exporter_config(server, good_host), env={"CACHE_EXPORTER_HOST_ROOT": str(good_host)})
    p = pipeline(ep.port)
    wait_until(lambda: p.webhook.first("CacheWatchdog") is not None, timeout=30,
               message="the Watchdog to arrive (pipeline alive)")
    time.sleep(3600 * SCALE + 5)
    writer = SteadyWriter(server.client())
    started = time.monotonic()
    writer.start()
    try:
        wait_until(lambda: writer.first_oom is not None, timeout=150, message="the first -OOM reply")
        oom = writer.first_oom
        wait_until(lambda: p.webhook.first("PeerThreshold") is not None, timeout=20,
                   message="the threshold peer to fire as well")
    finally:
        writer.halt()
    warning = p.webhook.first("CacheMemoryExhaustionPredicted", "warning")
    critical = p.webhook.first("CacheMemoryExhaustionPredicted", "critical")
    ours = first_of_ours(p.webhook)
    assert ours is not None, p.webhook.received

    def lead(t: float | None) -> str:
        return "never" if t is None else f"{oom - t:.1f} s ({(oom - t) / SCALE / 60:.0f} min at real time)"

    peers = {name: p.webhook.first(name) for name in PEERS}
    print(f"e2e: fill took {oom - started:.1f} s ({(oom - started) / SCALE / 60:.0f} min at real time); lead before "
          f"the first -OOM: ours warning {lead(warning)}, critical {lead(critical)}; "
          + ", ".join(f"{name} {lead(t)}" for name, t in peers.items()))
    assert ours < oom
    assert critical is not None and critical < oom
    assert ours < peers["PeerThreshold"]  # earlier than the common threshold rule on the same fill
    # Nothing else on this healthy, well-configured target.
    assert p.webhook.names() <= {"CacheWatchdog", "CacheMemoryExhaustionPredicted", "CacheWritesRejected",
                                 *PEERS}, p.webhook.names()


@pytest.mark.timeout(420)  # up to 45 s + 90 s of watching, after the writer and the pipeline settle
def test_sawtooth_load_reaches_nothing(redis_factory, exporter_factory, pipeline, good_host):
    """A store cycling between 45 % and 80 % of maxmemory every ~8 s (8 min at real time), watched
    by an exporter that has seen it cycle: no alert of ours but the Watchdog (the peer rules loaded
    beside ours may fire: predict_linear does on some cycles). (The first rising edge of a
    cycle seen by an exporter started without its history looks like a fill: the benchmark measures
    that case, and --state.dir keeps the history across restarts.)"""
    server = redis_factory(args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
    base = int(server.info("memory")["used_memory"])
    writer = SawtoothWriter(server.client(), low=int(1.8 * MiB), high=int(3.2 * MiB), fill_seconds=5.0)
    assert base < 1.8 * MiB
    writer.start()
    try:
        wait_until(lambda: writer.cycles >= 2, timeout=60, message="the sawtooth to settle")  # a store in its rhythm
        ep = exporter_factory(exporter_config(server, good_host), env={"CACHE_EXPORTER_HOST_ROOT": str(good_host)})
        cycles = writer.cycles
        wait_until(lambda: writer.cycles >= cycles + 2, timeout=60, message="the exporter to see two cycles")
        p = pipeline(ep.port)
        wait_until(lambda: p.webhook.first("CacheWatchdog") is not None, timeout=30, message="pipeline alive")
        wait_until(lambda: p.query('cache_memory_seconds_until_full{target="sessions"}'), timeout=30,
                   message="the forecast to reach Prometheus")
        deadline = time.monotonic() + 45  # ~45 min at real time: every scaled `for` elapses many times
        peak_utilization = 0.0
        # ...and at least six whole cycles: a busy machine slows the writer, never shortens the watch.
        while time.monotonic() < deadline or (writer.cycles < cycles + 6 and time.monotonic() < deadline + 90):
            result = p.query('cache_memory_utilization_ratio{target="sessions"}')
            if result:
                peak_utilization = max(peak_utilization, float(result[0]["value"][1]))
            time.sleep(1)
        assert writer.cycles >= cycles + 6 and writer.errors == 0
        assert peak_utilization > 0.7
        until_full = p.query('cache_memory_seconds_until_full{target="sessions"}')[0]["value"][1]
        assert until_full == "+Inf"
        # The peer rules ride in the same Prometheus; a sawtooth is where predict_linear cries wolf.
        print("peers that fired on the sawtooth:", sorted(p.webhook.names() & set(PEERS)) or "none")
        assert p.webhook.names() - set(PEERS) == {"CacheWatchdog"}, p.webhook.received
    finally:
        writer.halt()


RESTART_SCALE = 1 / 20  # the continuity window (2 m) becomes 6 s: room for a real process restart


@pytest.mark.timeout(360)
def test_an_exporter_restart_mid_fill_keeps_the_countdown_and_the_alert(
        redis_factory, exporter_factory, pipeline, good_host, tmp_path):
    """A real Redis fills in ~2 min (40 min at real time, every timer scaled by 1/20). Once the
    warning fires, the exporter is stopped (SIGTERM) and started again on the same port with the
    same --state.dir, as a pod rollout with a state volume does: the countdown is back at the
    first poll, and the alert that was firing keeps firing -- Prometheus' active-since time and
    the startsAt Alertmanager delivers stay the same -- until the store is full."""
    server = redis_factory(args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
    config = exporter_config(server, good_host, RESTART_SCALE)
    env = {"CACHE_EXPORTER_HOST_ROOT": str(good_host)}
    args = ["--state.dir", str(tmp_path / "state")]
    first = exporter_factory(config, env=env, args=args)
    p = pipeline(first.port, RESTART_SCALE)
    wait_until(lambda: p.webhook.first("CacheWatchdog") is not None, timeout=30, message="pipeline alive")
    writer = SteadyWriter(server.client(), period=0.16)  # ~25 KB/s: ~3 MB in ~2 min
    writer.start()
    active = 'ALERTS_FOR_STATE{alertname="CacheMemoryExhaustionPredicted", severity="warning"}'
    try:
        wait_until(lambda: p.webhook.first("CacheMemoryExhaustionPredicted", "warning") is not None,
                   timeout=150, interval=0.5, message="the warning before the restart")
        assert writer.first_oom is None, "full before the warning: the fill was too fast for this test"
        since = p.query(active)[0]["value"][1]
        assert first.stop() == 0
        second = exporter_factory(config, env=env, args=args, port=first.port)
        countdown = second.metrics().value("cache_memory_seconds_until_full", target="sessions")
        assert countdown is not None and countdown < 6 * 3600 * RESTART_SCALE, \
            f"the countdown must be back at the first poll: {countdown}"
        restarted = time.monotonic()
        wait_until(lambda: writer.first_oom is not None, timeout=180, interval=0.5, message="the first -OOM")
        assert writer.first_oom - restarted > 10, "too little of the fill after the restart to tell"
        assert p.query(active)[0]["value"][1] == since, "the warning restarted"
    finally:
        writer.halt()
    assert len(p.webhook.started("CacheMemoryExhaustionPredicted", "warning")) == 1, p.webhook.starts
    critical = p.webhook.first("CacheMemoryExhaustionPredicted", "critical")
    assert critical is not None and critical < writer.first_oom
    print(f"e2e restart: the warning stayed active since {since} across the restart; the critical came "
          f"{writer.first_oom - critical:.1f} s ({(writer.first_oom - critical) / RESTART_SCALE / 60:.0f} min at "
          f"real time) before the first -OOM; the countdown at the restarted exporter's first poll: {countdown:.1f} s")
