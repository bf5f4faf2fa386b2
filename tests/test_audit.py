"""The configuration audit against real servers: each check fires where it should and only there."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, fast_global, free_port, memcached_target, redis_target, wait_until

from exporter import audit
from exporter.config import build_config

MiB = 2**20
GOOD_REDIS = ["--maxmemory", "32mb", "--maxmemory-policy", "allkeys-lru"]


@pytest.fixture
def host_root(tmp_path, monkeypatch):
    """A fake host /proc and /sys, well configured unless a test says otherwise."""
    root = tmp_path / "host"
    (root / "proc/sys/vm").mkdir(parents=True)
    (root / "sys/kernel/mm/transparent_hugepage").mkdir(parents=True)

    def set_host(overcommit: str = "1", thp: str = "always [madvise] never") -> str:
        (root / "proc/sys/vm/overcommit_memory").write_text(overcommit + "\n")
        (root / "sys/kernel/mm/transparent_hugepage/enabled").write_text(thp + "\n")
        audit._host_reads.clear()  # read once a minute in the daemon; now, in the test
        return str(root)

    set_host()
    monkeypatch.setenv("CACHE_EXPORTER_HOST_ROOT", str(root))
    return set_host


def findings(entry: dict) -> dict[str, str]:
    """Audit one target in-process: {check: severity}."""
    target = build_config({"targets": [entry]}, "<test>").config.targets[0]
    report = audit.audit_target(target)
    assert report.error is None, report.error
    return {f.check: f.severity for f in report.findings}


def test_well_configured_servers_have_no_findings(redis_factory, memcached_factory, host_root):
    r = redis_factory(args=GOOD_REDIS)
    assert findings(redis_target("r", r, role="cache", memory_limit="256MiB")) == {}
    m = memcached_factory(args=["-m", "64"])
    assert findings(memcached_target("m", m, memory_limit="256MiB")) == {}


def test_maxmemory_unset(redis_server, host_root):
    assert findings(redis_target("r", redis_server))["redis_maxmemory_unset"] == "warning"
    assert findings(redis_target("r", redis_server, role="cache"))["redis_maxmemory_unset"] == "critical"


def test_noeviction_on_a_cache(redis_factory, host_root):
    r = redis_factory(args=["--maxmemory", "32mb", "--maxmemory-policy", "noeviction"])
    assert findings(redis_target("r", r, role="cache")) == {"redis_noeviction_on_cache": "warning"}
    assert findings(redis_target("r", r, role="database")) == {}  # writes failing is the point there


@pytest.mark.parametrize("keys,ttl,expected", [(10, 3, "warning"), (100, 5, "critical"), (10, 6, None)])
def test_volatile_policy_with_few_expiring_keys(redis_factory, host_root, keys, ttl, expected):
    r = redis_factory(args=["--maxmemory", "32mb", "--maxmemory-policy", "volatile-lru"])
    c = r.client()
    for i in range(keys):
        c.set(f"k{i}", "v", ex=3600 if i < ttl else None)
    assert findings(redis_target("r", r)).get("redis_volatile_few_expiring") == expected


@pytest.mark.parametrize("args,kind", [(["--save", "900 1"], "RDB"), (["--appendonly", "yes"], "AOF")])
def test_persistence_on_a_cache(redis_factory, host_root, args, kind):
    r = redis_factory(args=GOOD_REDIS + args)
    target = build_config({"targets": [redis_target("r", r, role="cache")]}, "<t>").config.targets[0]
    report = audit.audit_target(target)
    (finding,) = [f for f in report.findings if f.check == "redis_persistence_on_cache"]
    assert finding.severity == "warning" and kind in finding.message
    assert findings(redis_target("r", r)) == {}  # no role: persistence may be wanted


def test_stop_writes_with_fork_risk(redis_factory, host_root):
    r = redis_factory(args=GOOD_REDIS + ["--save", "900 1"])  # stop-writes-on-bgsave-error defaults to yes
    rss = r.info("memory")["used_memory_rss"]
    near = f"{int(rss / 0.9)}"  # resident is ~90 % of the hard limit
    assert findings(redis_target("r", r, memory_limit=near))["redis_stop_writes_fork_risk"] == "warning"
    assert findings(redis_target("r", r, memory_limit=f"{rss // 2}"))["redis_stop_writes_fork_risk"] == "critical"
    assert "redis_stop_writes_fork_risk" not in findings(redis_target("r", r, memory_limit="1GiB"))
    r.client().config_set("stop-writes-on-bgsave-error", "no")
    assert "redis_stop_writes_fork_risk" not in findings(redis_target("r", r, memory_limit=near))


def test_maxmemory_above_the_hard_limit(redis_factory, host_root):
    r = redis_factory(args=["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"])
    check = "redis_maxmemory_above_hard_limit"
    assert findings(redis_target("r", r, memory_limit="48MiB"))[check] == "critical"
    mem = r.info("memory")
    overhead = max(0, mem["used_memory_rss"] - mem["used_memory"])
    # maxmemory + overhead at ~95 % of the limit: a warning.
    near = int((64 * MiB + overhead) / 0.95)
    assert findings(redis_target("r", r, memory_limit=f"{near}"))[check] == "warning"
    assert check not in findings(redis_target("r", r, memory_limit="256MiB"))


@pytest.mark.parametrize("overcommit,thp,expected", [
    ("0", "always [madvise] never", {"host_overcommit_memory": "warning"}),
    ("2", "always [madvise] never", {"host_overcommit_memory": "warning"}),
    ("1", "[always] madvise never", {"host_transparent_hugepages": "warning"}),
    ("1", "always madvise [never]", {}),
])
def test_same_host_kernel_settings(redis_factory, host_root, overcommit, thp, expected):
    host_root(overcommit, thp)
    r = redis_factory(args=GOOD_REDIS)
    assert findings(redis_target("r", r, role="cache")) == expected


def test_host_checks_apply_only_to_local_targets(host_root):
    host_root("0", "[always] madvise never")
    remote = build_config({"targets": [{"name": "x", "type": "redis", "url": "redis://10.1.2.3:6379"}]},
                          "<t>").config.targets[0]
    local = build_config({"targets": [{"name": "x", "type": "redis", "url": "unix:///run/r.sock"}]},
                         "<t>").config.targets[0]
    assert not audit._is_local(remote) and audit._is_local(local)


def _fill_memcached(server, pages: int) -> None:
    c = server.client()
    i = 0
    while int(server.stats("slabs").get("total_malloced", 0)) < pages * MiB:
        # 50 values of 4000 bytes are under one 1 MiB page, so a batch adds at most one page.
        # The last set waits for its reply: memcached answers in order, so the whole batch is
        # stored before the stats connection looks (else in-flight sets overshoot the target).
        for n in range(50):
            i += 1
            c.set(f"k{i}", b"x" * 4000, noreply=n < 49)


def test_memcached_no_eviction_headroom(memcached_factory, host_root):
    m = memcached_factory(args=["-m", "16", "-M"])
    _fill_memcached(m, 15)  # one 1 MiB page of 16 left: 6 % headroom
    assert findings(memcached_target("m", m)) == {"memcached_no_eviction_low_headroom": "warning"}
    _fill_memcached(m, 16)
    assert findings(memcached_target("m", m)) == {"memcached_no_eviction_low_headroom": "critical"}
    evicting = memcached_factory(args=["-m", "16"])
    _fill_memcached(evicting, 16)
    assert findings(memcached_target("m", evicting)) == {}


def test_memcached_limit_above_hard_limit(memcached_factory, host_root):
    m = memcached_factory(args=["-m", "64"])
    check = "memcached_limit_above_hard_limit"
    assert findings(memcached_target("m", m, memory_limit="32MiB")) == {check: "critical"}
    assert findings(memcached_target("m", m, memory_limit="68MiB")) == {check: "warning"}
    assert findings(memcached_target("m", m, memory_limit="256MiB")) == {}


def test_daemon_exports_findings_and_clears_them(redis_server, exporter_factory, host_root):
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("r", redis_server, role="cache")]},
                          env={"CACHE_EXPORTER_HOST_ROOT": host_root()})
    m = ep.metrics()
    assert m.value("cache_config_finding", target="r", check="redis_maxmemory_unset", severity="critical") == 1
    assert [s[1]["check"] for s in m.find("cache_config_finding", target="r")] == ["redis_maxmemory_unset"]
    redis_server.client().config_set("maxmemory", 32 * MiB)
    redis_server.client().config_set("maxmemory-policy", "allkeys-lru")
    wait_until(lambda: not ep.metrics().find("cache_config_finding", target="r"), timeout=10,
               message="the finding to clear once maxmemory is set")
    log = ep.log()
    assert "audit redis_maxmemory_unset (critical)" in log and "redis_maxmemory_unset (critical) cleared" in log
    assert ep.target("r")["details"]["findings"] == []


def _cli(tmp_path, root: str, targets: list[dict], *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / "audit.yml"
    config.write_text(json.dumps({"targets": targets}))  # JSON is YAML
    return subprocess.run([sys.executable, "-m", "exporter", "audit", "--config", str(config), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "CACHE_EXPORTER_HOST_ROOT": root})


def test_cli_exit_codes(redis_factory, tmp_path, host_root):
    root = host_root()
    good = redis_factory(args=GOOD_REDIS)
    bare = redis_factory()  # maxmemory 0
    ok = _cli(tmp_path, root, [redis_target("good", good, role="cache")])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "good" in ok.stdout and "no findings" in ok.stdout
    warning = _cli(tmp_path, root, [redis_target("bare", bare)])
    assert warning.returncode == 1 and "redis_maxmemory_unset" in warning.stdout
    assert _cli(tmp_path, root, [redis_target("bare", bare)], "--fail-on", "critical").returncode == 0
    critical = _cli(tmp_path, root, [redis_target("bare", bare, role="cache")], "--fail-on", "critical")
    assert critical.returncode == 1
    as_json = _cli(tmp_path, root, [redis_target("bare", bare, role="cache"), redis_target("good", good)],
                   "--format", "json")
    payload = json.loads(as_json.stdout)
    assert as_json.returncode == payload["exit_code"] == 1
    by_name = {t["name"]: t for t in payload["targets"]}
    assert by_name["bare"]["findings"][0] == {
        "check": "redis_maxmemory_unset", "severity": "critical", "message": by_name["bare"]["findings"][0]["message"],
        "acknowledged": False, "reason": None}
    assert by_name["good"]["findings"] == []
    unreachable = _cli(tmp_path, root, [{"name": "gone", "type": "redis", "url": f"redis://127.0.0.1:{free_port()}"},
                                        redis_target("good", good)])
    assert unreachable.returncode == 3 and "could not poll" in unreachable.stdout
    bad = _cli(tmp_path, root, [{"name": "x", "type": "redis", "url": "http://nope"}])
    assert bad.returncode == 2 and "targets[0].url" in bad.stderr


def test_a_report_kind_decides_exit_code_verb_and_summary():
    """A file read in error is bad input (exit 2, "could not parse"), a target polled in error is unreachable
    (exit 3, "could not poll"); the summary counts file errors per kind, nginx before Apigee."""
    kind = audit.ReportKind
    gone = audit.TargetReport("gone", "redis", "redis://127.0.0.1:1", error="connection refused", reason="refused")
    nginx = audit.TargetReport("nginx:a.conf", "nginx", "a.conf", error="a.conf:2: unexpected end of file",
                               reason="config", kind=kind.NGINX_CONFIG)
    fine = audit.TargetReport("nginx:ok.conf", "nginx", "ok.conf", findings=[], kind=kind.NGINX_CONFIG)
    apigee = audit.TargetReport("apigee:b", "apigee", "b", error="b: no policies", reason="config",
                                kind=kind.APIGEE_BUNDLE)
    assert audit.exit_code([gone, fine], "warning") == audit.EXIT_UNREACHABLE
    assert audit.exit_code([gone, fine, apigee], "warning") == audit.EXIT_CONFIG
    assert audit.exit_code([fine], "warning") == audit.EXIT_OK
    lines = audit.format_text([apigee, gone, nginx, fine], "warning", audit.EXIT_CONFIG).splitlines()
    assert lines[1].split() == ["apigee:b", "error", "config", "could", "not", "parse", "b:", "b:", "no", "policies"]
    assert lines[2].endswith("could not poll redis://127.0.0.1:1: connection refused")
    assert lines[3].endswith("could not parse a.conf: a.conf:2: unexpected end of file")
    assert lines[4].split() == ["nginx:ok.conf", "ok", "-", "no", "findings"]
    assert lines[-1] == ("4 targets: 0 critical, 0 warning, 0 info, 0 acknowledged, 1 unreachable, "
                         "1 unparsable nginx configs, 1 unreadable Apigee bundles; failing on warning: exit 2")
