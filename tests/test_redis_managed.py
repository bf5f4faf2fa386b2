"""A managed Redis (ElastiCache Serverless): TLS only, CONFIG renamed away, maxmemory 0, described
with a target's ``managed:`` block. Real redis-servers play the service."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import yaml
from conftest import REPO, fast_global, need, wait_until
from fakeserver import FakeServer, Session
from loadgen import SteadyWriter

from exporter import audit
from exporter.config import build_config
from exporter.errors import PollError
from exporter.sources import source_for
from exporter.sources.redis import map_info, parse_info
from exporter.targets import ManagedStore, RedisTarget

MiB = 2**20
RULES_FILE = REPO / "alerts" / "cache-exporter.rules.yml"
# What ElastiCache Serverless looks like from a client: TLS only, CONFIG renamed away, maxmemory 0.
SERVERLESS = ["--rename-command", "CONFIG", ""]


def managed_target(name: str, server, tls_files, **managed: object) -> dict:
    return {"name": name, "type": "redis", "url": f"rediss://127.0.0.1:{server.port}", "role": "cache",
            "tls": {"ca_file": tls_files.ca},
            "managed": {"provider": "elasticache-serverless", **managed}}


def fill_with_ttl(server, n: int = 500, ttl: int | None = 3600) -> None:
    c = server.client()
    pipe = c.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"session:{i}", "x" * 200, ex=ttl)
    pipe.execute()


def test_serverless_over_tls_with_config_renamed(redis_factory, exporter_factory, tls_files):
    server = redis_factory(tls=tls_files, args=SERVERLESS)
    fill_with_ttl(server)  # every key has a TTL: the service evicts them at its data limit
    unmanaged = managed_target("as-self-hosted", server, tls_files)
    del unmanaged["managed"]
    ep = exporter_factory({"global": fast_global(), "targets": [
        managed_target("serverless", server, tls_files, data_limit="5GiB"),
        unmanaged,
        # The same TLS-only port over plain redis://, a common first mistake with ElastiCache Serverless.
        {"name": "plain", "type": "redis", "url": f"redis://127.0.0.1:{server.port}"},
    ]})
    ep.wait_polls("serverless", 3)  # CONFIG is probed on the poll after the connect
    m = ep.wait_polls("as-self-hosted", 3)

    # Limits: the declared data limit, with its own source; no host fallback, no hard (OOM-kill) limit.
    assert m.value("redis_memory_max_bytes", target="serverless") == 0
    assert m.value("cache_memory_limit_bytes", target="serverless") == 5 * 2**30
    assert m.has("cache_memory_limit_info", target="serverless", source="managed")
    assert not m.has("cache_resident_memory_limit_bytes", target="serverless")
    assert not m.has("cache_resident_memory_seconds_until_full", target="serverless")
    assert not m.has("redis_fork_memory_risk_ratio", target="serverless")
    assert 0 < m.value("cache_memory_utilization_ratio", target="serverless") < 0.01
    # Every key has a TTL and the service evicts those: it evicts when full, so no countdown alert.
    assert m.value("cache_evicts_when_full", target="serverless") == 1
    # The same server seen as self-hosted: the host's memory, "never evicts", the maxmemory finding.
    assert m.has("cache_memory_limit_info", target="as-self-hosted", source="system")
    assert m.value("cache_evicts_when_full", target="as-self-hosted") == 0
    assert m.has("cache_config_finding", target="as-self-hosted", check="redis_maxmemory_unset", severity="critical")

    # CONFIG is unavailable: a series says so, for either view of the server; CLIENT works.
    for name in ("serverless", "as-self-hosted"):
        assert m.value("redis_capability", target=name, capability="config") == 0
        assert m.value("redis_capability", target=name, capability="client") == 1
    assert not m.find("cache_config_finding", target="serverless")
    assert ep.target("serverless")["details"]["findings"] == []

    # Plain RESP against the TLS port: said as such, not as a bare "reset".
    assert m.value("cache_up", target="plain") == 0
    assert m.value("cache_exporter_poll_errors_total", target="plain", reason="tls_required") >= 1
    assert m.value("cache_exporter_poll_errors_total", target="plain", reason="reset") == 0
    assert "expects TLS" in json.dumps(ep.target("plain"))

    # The shipped rules on these very series: CacheMemoryLimitUnset for the self-hosted view only.
    assert_limit_unset_fires_for(m, {"as-self-hosted"})


def _annotations(alertname: str, labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations with ``{{ $labels.x }}`` filled in (all this alert's templates use)."""
    rules = yaml.safe_load(RULES_FILE.read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == alertname]
    out = {}
    for key, text in rule["annotations"].items():
        for name, value in labels.items():
            text = text.replace("{{ $labels." + name + " }}", value)
        assert "{{" not in text, text
        out[key] = text
    return out


def assert_limit_unset_fires_for(m, targets: set[str]) -> None:
    """promtool, with the shipped rules and the scraped limit series held for 40 min: after its
    30 min ``for``, CacheMemoryLimitUnset fires for exactly ``targets`` (promtool fails on any other)."""
    need(shutil.which("promtool") is not None, "promtool not installed (Debian package prometheus)")
    series, expected = [], []
    for _, labels, _ in m.find("cache_memory_limit_info"):
        text = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        series.append({"series": "cache_memory_limit_info{" + text + "}", "values": "1x40"})
        if labels["target"] in targets:
            expected.append({"exp_labels": {"severity": "warning", **labels},
                             "exp_annotations": _annotations("CacheMemoryLimitUnset", labels)})
    assert len(expected) == len(targets), (targets, series)
    test = {"rule_files": [str(RULES_FILE)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": "31m", "alertname": "CacheMemoryLimitUnset", "exp_alerts": expected}]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".test.yml") as fh:
        json.dump(test, fh)  # JSON is YAML
        fh.flush()
        result = subprocess.run(["promtool", "test", "rules", fh.name], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def bad_host(tmp_path, monkeypatch):
    """A host /proc and /sys that the host checks flag (overcommit 0, THP always): a managed target at a
    local address must still not get them."""
    root = tmp_path / "host"
    (root / "proc/sys/vm").mkdir(parents=True)
    (root / "sys/kernel/mm/transparent_hugepage").mkdir(parents=True)
    (root / "proc/sys/vm/overcommit_memory").write_text("0\n")
    (root / "sys/kernel/mm/transparent_hugepage/enabled").write_text("[always] madvise never\n")
    monkeypatch.setenv("CACHE_EXPORTER_HOST_ROOT", str(root))
    audit._host_reads.clear()
    yield str(root)
    audit._host_reads.clear()


def audited(entry: dict) -> audit.TargetReport:
    report = audit.audit_target(build_config({"targets": [entry]}, "<test>").config.targets[0])
    assert report.error is None, report.error
    return report


def test_audit_follows_the_managed_description(redis_factory, tls_files, bad_host):
    server = redis_factory(tls=tls_files, args=SERVERLESS)
    fill_with_ttl(server, 480, ttl=None)
    fill_with_ttl(server, 20)  # 4 % of the keys have a TTL: a "ttl" service can evict almost nothing

    def checks(**managed: object) -> dict[str, str]:
        report = audited(managed_target("m", server, tls_files, **managed))
        assert report.capabilities == {"config": False, "client": True}
        return {f.check: f.severity for f in report.findings}

    ttl = audited(managed_target("m", server, tls_files, data_limit="64MiB"))
    assert [(f.check, f.severity) for f in ttl.findings] == [("redis_volatile_few_expiring", "critical")]
    assert "managed.evicts_at_limit: ttl" in ttl.findings[0].message
    assert checks(data_limit="64MiB", evicts_at_limit="none") == {"redis_noeviction_on_cache": "warning"}
    assert checks(data_limit="64MiB", evicts_at_limit="all") == {}
    assert checks(evicts_at_limit="all") == {"redis_managed_limit_unknown": "warning"}
    # The same server as self-hosted: maxmemory 0 is critical for a cache, and the host checks apply.
    self_hosted = managed_target("m", server, tls_files)
    del self_hosted["managed"]
    assert {f.check for f in audited(self_hosted).findings} == {
        "redis_maxmemory_unset", "host_overcommit_memory", "host_transparent_hugepages"}


def test_audit_cli_reports_config_unavailable(redis_factory, tls_files, tmp_path, bad_host):
    server = redis_factory(tls=tls_files, args=SERVERLESS)
    fill_with_ttl(server)
    config = tmp_path / "audit.yml"
    config.write_text(json.dumps({"targets": [managed_target("sessions", server, tls_files, data_limit="5GiB")]}))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "exporter", "audit", "--config", str(config), *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)

    text = run("--fail-on", "warning")
    assert text.returncode == 0, text.stdout + text.stderr  # a note, not a finding: CI stays green
    rows = [line.split(None, 3) for line in text.stdout.splitlines()]
    assert ["sessions", "ok", "-", "no findings"] in rows
    (note,) = [r for r in rows if r[:3] == ["sessions", "note", "capability_config"]]
    assert note[3].startswith("CONFIG is unavailable (renamed away or denied by ACL)")
    assert 'redis_capability{capability="config"} 0' in note[3]
    payload = json.loads(run("--format", "json").stdout)
    (entry,) = payload["targets"]
    assert entry["findings"] == [] and entry["capabilities"] == {"config": False, "client": True}


# A TLS record a TLS server sends to a client whose first bytes are not a handshake: alert (0x15),
# TLS 1.2 (0x03 0x03), length 2, fatal (2), protocol_version (70).
TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x46"


class _FirstBytesServer(FakeServer):
    """Answers whatever a connection first sends with ``reply`` (or an RST when None), then closes."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        super().__init__(name="first-bytes")

    def _handle(self, s: Session) -> None:
        if not s._fill():
            return
        if self.reply is None:
            s.close_reset()
        s.send(self.reply)
        s.close()


def _poll_error(url: str) -> PollError:
    target = build_config({"targets": [{"name": "t", "type": "redis", "url": url}]}, "<test>").config.targets[0]
    source = source_for(target)
    try:
        with pytest.raises(PollError) as info:
            source.poll(time.monotonic() + 3)
    finally:
        source.close()
    return info.value


@pytest.mark.parametrize(("reply", "reason"), [
    (TLS_ALERT, "tls_required"),  # a TLS server that answers plain text with an alert record
    (None, "reset"),  # a server that resets every connection, TLS handshakes too: not a TLS port
    # plain RESP before a close (redis-py makes it a reset): the handshake gets RESP back, not TLS
    (b"-ERR max number of clients reached\r\n", "reset"),
])
def test_tls_required_only_when_the_server_speaks_tls(reply, reason):
    server = _FirstBytesServer(reply)
    try:
        err = _poll_error(f"redis://127.0.0.1:{server.port}")
    finally:
        server.close()
    assert err.reason == reason, err
    if reason == "tls_required":
        assert "expects TLS" in str(err) and "rediss://" in str(err)
        assert server.connections == 2  # the poll, then one handshake: nothing more


def test_countdown_runs_against_the_data_limit_before_the_first_oom(redis_factory, exporter_factory, tls_files):
    # The redis-server's own maxmemory (noeviction) plays the service enforcing its data limit; keys
    # without a TTL are what a "ttl" service cannot evict, so it will refuse writes.
    server = redis_factory(tls=tls_files, args=SERVERLESS + ["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"])
    # The defaults scaled by 1/60 (a 15 s interval, a 1 h window), the poll deadline kept for loopback.
    ep = exporter_factory({"global": {"interval": "0.25s", "timeout": "0.2s", "forecast_window": "60s"},
                           "targets": [managed_target("serverless", server, tls_files, data_limit="3MiB")]})
    writer = SteadyWriter(server.client())
    writer.start()
    try:
        wait_until(lambda: math.isfinite(ep.metrics().value("cache_memory_seconds_until_full", target="serverless")
                                         or math.inf), timeout=60, message="the countdown to appear")
        time.sleep(2)
        asked = time.monotonic()
        m = ep.metrics()
        until_full = m.value("cache_memory_seconds_until_full", target="serverless")
        assert writer.first_oom is None, "filled up before the prediction was taken"
        assert m.has("cache_memory_limit_info", target="serverless", source="managed")
        assert m.value("cache_memory_limit_bytes", target="serverless") == 3 * MiB
        # Not evicting at the limit: the countdown alerts are armed (they skip cache_evicts_when_full 1).
        assert m.value("cache_evicts_when_full", target="serverless") == 0
        assert not m.has("cache_resident_memory_seconds_until_full", target="serverless")
        wait_until(lambda: writer.first_oom is not None, timeout=90, message="the first -OOM reply")
        actual = writer.first_oom - asked
        print(f"managed forecast: predicted {until_full:.1f} s to the data limit, first -OOM after {actual:.1f} s")
        assert abs(until_full - actual) <= 0.25 * actual, (until_full, actual)
        wait_until(lambda: (ep.metrics().value("cache_write_rejections_total", target="serverless") or 0) > 0,
                   timeout=10, message="the rejections to be counted")
    finally:
        writer.halt()


# --- the mapping, on INFO captured from a real server (tests/fixtures) ------------------------------

INFO_7 = (REPO / "tests" / "fixtures" / "info_redis_7.0.txt").read_text()


def _info(**overrides: str) -> str:
    lines = [line for line in INFO_7.splitlines() if line.split(":", 1)[0] not in overrides
             and not line.startswith("db")]
    return "\n".join(lines + [f"{k}:{v}" for k, v in overrides.items()])


def _mapped(managed: ManagedStore, **overrides: str):
    target = RedisTarget(name="t", type="redis", interval=15, timeout=5, managed=managed)
    return map_info(parse_info(_info(**overrides)), target, {}, now=2_000_000_000.0)


@pytest.mark.parametrize(("evicts_at_limit", "keyspace", "evicts"), [
    ("ttl", "keys=100,expires=100,avg_ttl=1000", True),
    ("ttl", "keys=100,expires=5,avg_ttl=1000", False),  # 5 % with a TTL: eviction frees little, writes fail
    ("all", "keys=100,expires=0,avg_ttl=0", True),
    ("none", "keys=100,expires=100,avg_ttl=1000", False),
])
def test_managed_limit_and_eviction_from_the_description(evicts_at_limit, keyspace, evicts):
    r = _mapped(ManagedStore("elasticache-serverless", 5 * 2**30, evicts_at_limit),
                maxmemory="0", maxmemory_policy="noeviction", total_system_memory=str(64 * 2**30), db0=keyspace)
    m = r.memory
    assert (m.limit, m.limit_source, m.resident_limit, m.evicts_when_full) == (5 * 2**30, "managed", None, evicts)
    assert r.samples.value("cache_evicts_when_full") == int(evicts)
    assert r.samples.value("cache_resident_memory_limit_bytes") is None


def test_managed_without_data_limit_uses_a_reported_maxmemory_and_never_the_host():
    node_based = _mapped(ManagedStore("elasticache"), maxmemory=str(2**30), maxmemory_policy="allkeys-lru",
                         db0="keys=10,expires=0,avg_ttl=0")
    assert (node_based.memory.limit, node_based.memory.limit_source) == (2**30, "maxmemory")
    assert node_based.memory.evicts_when_full is True  # no evicts_at_limit: the server's policy
    unknown = _mapped(ManagedStore("other"), maxmemory="0", total_system_memory=str(64 * 2**30))
    for family in ("cache_memory_limit_bytes", "cache_memory_limit_info", "cache_memory_utilization_ratio",
                   "cache_resident_memory_limit_bytes", "cache_evicts_when_full"):
        assert unknown.samples.value(family) is None, family
