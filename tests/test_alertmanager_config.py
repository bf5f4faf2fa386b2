"""alerts/alertmanager.example.yml: valid, routes by severity, and its inhibitions work in a real Alertmanager."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from conftest import REPO, free_port, need, wait_until

pytestmark = pytest.mark.servers  # every test here starts a server or a binary

EXAMPLE = REPO / "alerts" / "alertmanager.example.yml"
AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def test_amtool_check_config():
    need(AMTOOL is not None, "amtool not installed")
    result = subprocess.run([AMTOOL, "check-config", str(EXAMPLE)], capture_output=True, text=True)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("labels,receiver", [
    ({"alertname": "CacheWatchdog", "severity": "info"}, "deadmans-switch"),
    ({"alertname": "CacheMemoryExhaustionPredicted", "severity": "critical"}, "pager"),
    ({"alertname": "CacheMemoryExhaustionPredicted", "severity": "warning"}, "chat"),
    ({"alertname": "CacheConfigAuditFinding", "severity": "info"}, "ticket"),
])
def test_routing_by_severity(labels, receiver):
    need(AMTOOL is not None, "amtool not installed")
    result = subprocess.run([AMTOOL, "config", "routes", "test", f"--config.file={EXAMPLE}",
                             *(f"{k}={v}" for k, v in labels.items())], capture_output=True, text=True)
    assert result.stdout.strip() == receiver, result.stdout + result.stderr


@pytest.fixture
def alertmanager(tmp_path):
    need(ALERTMANAGER is not None, "prometheus-alertmanager not installed")
    port = free_port()
    proc = subprocess.Popen([ALERTMANAGER, f"--config.file={EXAMPLE}", f"--storage.path={tmp_path}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200, timeout=20)
    yield url
    proc.terminate()
    proc.wait(10)


def _post(url: str, alerts: list[dict]) -> None:
    now = datetime.now(UTC)
    body = [{"labels": a, "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat()}
            for a in alerts]
    req = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).close()


def _states(url: str) -> dict[tuple[str, str, str], str]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as resp:
        return {(a["labels"]["alertname"], a["labels"].get("severity", ""), a["labels"].get("target", "")):
                a["status"]["state"] for a in json.load(resp)}


def test_inhibitions(alertmanager):
    base = {"job": "cache-exporter", "target": "sessions"}
    other = {"job": "cache-exporter", "target": "catalog"}
    third = {"job": "cache-exporter", "target": "queue"}
    _post(alertmanager, [
        {**base, "alertname": "CacheMemoryExhaustionPredicted", "severity": "warning"},
        {**base, "alertname": "CacheMemoryExhaustionPredicted", "severity": "critical"},
        {**other, "alertname": "CacheTargetDown", "severity": "critical"},
        {**other, "alertname": "CacheResidentMemoryNearHardLimit", "severity": "warning"},
        {**other, "alertname": "RedisBackgroundSaveFailed", "severity": "warning"},  # silenced: target down
        {**third, "alertname": "RedisWritesRefusedMisconf", "severity": "critical"},
        {**third, "alertname": "RedisBackgroundSaveFailed", "severity": "warning"},
        {**base, "alertname": "CacheEvictionPressure", "severity": "warning"},  # nothing inhibits this one
    ])
    expected = {
        ("CacheMemoryExhaustionPredicted", "warning", "sessions"): "suppressed",  # critical silences warning
        ("CacheMemoryExhaustionPredicted", "critical", "sessions"): "active",
        ("CacheTargetDown", "critical", "catalog"): "active",
        ("CacheResidentMemoryNearHardLimit", "warning", "catalog"): "suppressed",  # target down
        ("RedisBackgroundSaveFailed", "warning", "catalog"): "suppressed",
        ("RedisWritesRefusedMisconf", "critical", "queue"): "active",
        ("RedisBackgroundSaveFailed", "warning", "queue"): "suppressed",  # MISCONF is the page
        ("CacheEvictionPressure", "warning", "sessions"): "active",
    }
    deadline = time.monotonic() + 10
    while _states(alertmanager) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _states(alertmanager) == expected
