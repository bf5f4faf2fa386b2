"""The Redis source against real redis-server / valkey-server processes."""

from __future__ import annotations

import os
import signal

import pytest
import redis
from conftest import fast_global, redis_target, wait_until

MiB = 2**20
SECRET = "s3cr3t-Pa55-do-not-leak"


def one(server, exporter_factory, env=None, **target_extra):
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("r", server, **target_extra)]},
                          env=env)
    return ep, ep.wait_polls("r", 1)


def test_maxmemory_set(redis_server, exporter_factory):
    c = redis_server.client()
    c.config_set("maxmemory", 64 * MiB)
    c.config_set("maxmemory-policy", "allkeys-lru")
    ep, m = one(redis_server, exporter_factory)
    info = redis_server.info("memory")
    assert m.value("redis_memory_max_bytes", target="r") == 64 * MiB
    assert m.value("redis_config_maxmemory", target="r") == 64 * MiB  # from CONFIG GET
    assert m.value("cache_memory_limit_bytes", target="r") == 64 * MiB
    assert m.has("cache_memory_limit_info", target="r", source="maxmemory")
    used = m.value("cache_memory_used_bytes", target="r")
    # used_memory moves a little between polls; same order of magnitude, and the derived
    # families are exactly consistent with each other within one snapshot.
    assert abs(used - (info["used_memory"] - info["mem_not_counted_for_evict"])) < 256 * 1024
    assert m.value("cache_memory_utilization_ratio", target="r") == pytest.approx(used / (64 * MiB))
    assert m.value("cache_memory_headroom_bytes", target="r") == 64 * MiB - used
    assert m.value("cache_evicts_when_full", target="r") == 1
    assert m.has("redis_instance_info", target="r", maxmemory_policy="allkeys-lru", role="master")
    assert m.has("cache_info", target="r", store="redis", eviction_policy="allkeys-lru", role="primary")


def test_maxmemory_unset_uses_memory_limit_then_system(redis_server, exporter_factory):
    info = redis_server.info("memory")
    ep = exporter_factory({"global": fast_global(), "targets": [
        redis_target("cfg", redis_server, memory_limit="512MiB"), redis_target("sys", redis_server)]})
    m = ep.wait_polls("sys", 1)
    ep.wait_polls("cfg", 1)
    m = ep.metrics()
    assert m.value("redis_memory_max_bytes", target="cfg") == 0
    assert m.value("cache_memory_limit_bytes", target="cfg") == 512 * MiB
    assert m.has("cache_memory_limit_info", target="cfg", source="config")
    assert m.value("cache_resident_memory_limit_bytes", target="cfg") == 512 * MiB
    assert m.value("cache_memory_limit_bytes", target="sys") == info["total_system_memory"]
    assert m.has("cache_memory_limit_info", target="sys", source="system")
    assert m.value("redis_total_system_memory_bytes", target="sys") == info["total_system_memory"]
    # No maxmemory: Redis never evicts, whatever the policy says.
    assert m.value("cache_evicts_when_full", target="sys") == 0


def test_each_eviction_policy_family(redis_server, exporter_factory):
    c = redis_server.client()
    c.config_set("maxmemory", 32 * MiB)
    c.set("plain", "1")
    ep = exporter_factory({"global": fast_global(), "targets": [redis_target("r", redis_server)]})
    cases = [
        ("noeviction", False, 0),
        ("allkeys-lru", False, 1),
        ("allkeys-lfu", False, 1),
        ("allkeys-random", False, 1),
        ("volatile-lru", False, 0),  # nothing has a TTL: writes fail like noeviction
        ("volatile-lru", True, 1),
        ("volatile-lfu", True, 1),
        ("volatile-ttl", True, 1),
        ("volatile-random", True, 1),
    ]
    for policy, with_ttl, expected in cases:
        c.config_set("maxmemory-policy", policy)
        if with_ttl:
            c.set("ttl-key", "1", ex=3600)
        else:
            c.delete("ttl-key")
        m = ep.wait_polls("r", 1)
        assert m.has("cache_info", target="r", eviction_policy=policy), policy
        assert m.value("cache_evicts_when_full", target="r") == expected, (policy, with_ttl)


def test_values_match_info(redis_server, exporter_factory):
    c = redis_server.client()
    for i in range(50):
        c.set(f"k{i}", "v", ex=1000 if i % 5 == 0 else None)
    redis_server.client(db=3).set("other", "x")
    for i in range(20):
        c.get(f"k{i}")
        c.get(f"missing{i}")
    ep, _ = one(redis_server, exporter_factory)
    m = ep.wait_polls("r", 1)
    stats = redis_server.info("stats")
    assert m.value("redis_db_keys", target="r", db="db0") == 50
    assert m.value("redis_db_keys_expiring", target="r", db="db0") == 10
    assert m.value("redis_db_keys", target="r", db="db3") == 1
    assert m.value("cache_items", target="r") == 51
    assert m.value("cache_hits_total", target="r") == stats["keyspace_hits"] == 20
    assert m.value("cache_misses_total", target="r") == stats["keyspace_misses"] == 20
    assert m.value("redis_commands_total", target="r", cmd="get") == 40
    assert m.value("redis_commands_total", target="r", cmd="set") == 51


def test_one_connection_and_at_most_two_commands_per_poll(redis_server, exporter_factory):
    ep, _ = one(redis_server, exporter_factory)
    probe = redis_server.client()
    before_conns = probe.info("stats")["total_connections_received"]
    before = probe.info("commandstats")
    m0 = ep.metrics().value("cache_exporter_polls_total", target="r")
    ep.wait_polls("r", 6)
    after = probe.info("commandstats")
    polls = ep.metrics().value("cache_exporter_polls_total", target="r") - m0
    assert probe.info("stats")["total_connections_received"] == before_conns  # 0 new connections
    calls = lambda s, c: s.get(f"cmdstat_{c}", {}).get("calls", 0)  # noqa: E731
    info_calls = calls(after, "info") - calls(before, "info")
    config_calls = calls(after, "config|get") - calls(before, "config|get")
    # Polls may race with our reads by one; INFO once per poll, CONFIG at most once a minute.
    assert polls - 1 <= info_calls <= polls + 1
    assert config_calls <= 1
    assert (info_calls + config_calls) / polls <= 2
    assert ep.target("r")["details"]["connections_opened"] == 1
    # The exporter names its connection, so operators can find it in CLIENT LIST.
    assert "cache-exporter" in [cl["name"] for cl in probe.client_list()]


def test_requirepass(redis_factory, exporter_factory, tmp_path):
    server = redis_factory(password=SECRET)
    pw_file = tmp_path / "pw"
    pw_file.write_text(SECRET + "\n")
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("not-the-password\n")
    ep = exporter_factory({"global": fast_global(), "targets": [
        redis_target("env", server, password_env="REDIS_PW"),
        redis_target("file", server, password_file=str(pw_file)),
        redis_target("wrong", server, password_file=str(wrong_file)),
        redis_target("none", server),
        redis_target("unset", server, password_env="NOT_SET_ANYWHERE"),
    ]}, env={"REDIS_PW": SECRET})
    for name in ("env", "file", "wrong", "none", "unset"):
        ep.wait_polls(name, 1)
    m = ep.metrics()
    assert m.value("cache_up", target="env") == 1 and m.value("redis_up", target="env") == 1
    assert m.value("cache_up", target="file") == 1
    for name, reason in (("wrong", "auth"), ("none", "auth"), ("unset", "config")):
        assert m.value("cache_up", target=name) == 0, name
        assert m.value("redis_up", target=name) == 0, name
        assert m.value("cache_exporter_poll_errors_total", target=name, reason=reason) >= 1, name
        assert not m.has("redis_memory_used_bytes", target=name)
    _assert_no_secret(ep)


def _assert_no_secret(ep):
    status, targets, _ = ep.get("/targets")
    for text in (ep.metrics().text, targets.decode(), ep.log()):
        assert SECRET not in text


def test_acl_user_least_privilege(redis_server, exporter_factory):
    admin = redis_server.client()
    # INFO only: CONFIG and CLIENT are denied (NOPERM). That is a capability, not an error.
    admin.execute_command("ACL", "SETUSER", "exporter", "on", f">{SECRET}", "-@all", "+info")
    ep = exporter_factory({"global": fast_global(), "targets": [
        redis_target("acl", redis_server, username="exporter", password_env="PW"),
        redis_target("badpw", redis_server, username="exporter", password_env="BADPW"),
    ]}, env={"PW": SECRET, "BADPW": "nope-nope"})
    m = ep.wait_polls("acl", 5)
    assert m.value("cache_up", target="acl") == 1
    assert sum(s[2] for s in m.find("cache_exporter_poll_errors_total", target="acl")) == 0
    assert m.has("redis_memory_max_bytes", target="acl")
    assert not m.has("redis_config_maxmemory", target="acl")  # CONFIG unavailable: skipped
    caps = ep.target("acl")["details"]["capabilities"]
    assert caps == {"client": False, "config": False}
    assert m.value("cache_exporter_poll_errors_total", target="badpw", reason="auth") >= 1
    log = ep.log()
    config_lines = [line for line in log.splitlines() if "target acl: CONFIG is unavailable" in line]
    assert len(config_lines) == 1  # said once, not every poll
    # Capability detection is silent; only audit findings (said once each) may warn.
    assert "level=warning" not in "\n".join(line for line in log.splitlines()
                                            if "acl" in line and "badpw" not in line and ": audit " not in line)
    _assert_no_secret(ep)


def test_config_and_client_renamed_away(redis_factory, exporter_factory):
    # HELLO renamed too: like Redis 5, which has no HELLO; the exporter must speak plain RESP2.
    server = redis_factory(args=["--rename-command", "CONFIG", "", "--rename-command", "CLIENT", "",
                                 "--rename-command", "HELLO", "", "--maxmemory", "16mb"])
    ep, _ = one(server, exporter_factory)
    m = ep.wait_polls("r", 5)
    assert m.value("cache_up", target="r") == 1
    assert m.value("redis_memory_max_bytes", target="r") == 16 * MiB  # INFO still has it
    assert not m.has("redis_config_maxmemory", target="r")
    assert sum(s[2] for s in m.find("cache_exporter_poll_errors_total", target="r")) == 0
    log = "\n".join(line for line in ep.log().splitlines() if ": audit " not in line)
    assert "level=warning" not in log and "level=error" not in log
    assert log.count("CONFIG is unavailable") == 1 and log.count("CLIENT is unavailable") == 1


@pytest.mark.parametrize("case", ["ca", "wrong_ca", "insecure", "mtls", "server_name_ok", "server_name_bad"])
def test_tls(redis_factory, exporter_factory, tls_files, case):
    args = ["--tls-auth-clients", "yes"] if case == "mtls" else []
    server = redis_factory(tls=tls_files, args=args)
    tls = {
        "ca": {"ca_file": tls_files.ca},
        "wrong_ca": {"ca_file": tls_files.other_ca},
        "insecure": {"ca_file": tls_files.other_ca, "insecure_skip_verify": True},
        "mtls": {"ca_file": tls_files.ca, "cert_file": tls_files.client_cert, "key_file": tls_files.client_key},
        "server_name_ok": {"ca_file": tls_files.ca, "server_name": "localhost"},
        "server_name_bad": {"ca_file": tls_files.ca, "server_name": "wrong.example"},
    }[case]
    ep, m = one(server, exporter_factory, tls=tls)
    if case in ("wrong_ca", "server_name_bad"):
        assert m.value("cache_up", target="r") == 0
        assert m.value("cache_exporter_poll_errors_total", target="r", reason="tls") >= 1
    else:
        assert m.value("cache_up", target="r") == 1, ep.target("r")
        assert m.has("redis_memory_used_bytes", target="r")


def test_mtls_required_but_no_client_cert(redis_factory, exporter_factory, tls_files):
    server = redis_factory(tls=tls_files, args=["--tls-auth-clients", "yes"])
    ep, m = one(server, exporter_factory, tls={"ca_file": tls_files.ca})
    assert m.value("cache_up", target="r") == 0
    reasons = {s[1]["reason"] for s in m.find("cache_exporter_poll_errors_total", target="r") if s[2] > 0}
    assert reasons <= {"tls", "reset"} and reasons, reasons


def test_killed_and_restarted_during_polling(redis_server, exporter_factory):
    ep, m = one(redis_server, exporter_factory)
    assert m.value("cache_up", target="r") == 1
    redis_server.kill()
    wait_until(lambda: ep.metrics().value("cache_up", target="r") == 0, timeout=10, message="target down")
    m = ep.metrics()
    failed = {s[1]["reason"]: s[2] for s in m.find("cache_exporter_poll_errors_total", target="r") if s[2] > 0}
    assert set(failed) <= {"refused", "reset"} and failed
    assert not m.has("redis_memory_used_bytes", target="r")  # no stale values while down
    redis_server.start()
    wait_until(lambda: ep.metrics().value("cache_up", target="r") == 1, timeout=15, message="recovery")
    assert ep.metrics().has("redis_memory_used_bytes", target="r")
    log = ep.log()
    assert log.count("target r (redis://") >= 2  # "is up" and "is down" once each
    assert "is up again after" in log
    assert ep.proc.poll() is None


def test_write_rejections_counted_from_oom_errors(redis_factory, exporter_factory):
    server = redis_factory(args=["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"])
    c = server.client()
    rejected = 0
    for i in range(2000):
        try:
            c.set(f"big{i}", "x" * 4096)
        except redis.exceptions.OutOfMemoryError:
            rejected += 1
            if rejected >= 5:
                break
    assert rejected == 5
    ep, m = one(server, exporter_factory)
    assert m.value("cache_write_rejections_total", target="r") == 5
    assert m.value("redis_errors_total", target="r", err="OOM") == 5
    assert m.value("cache_evicts_when_full", target="r") == 0
    assert m.value("cache_memory_utilization_ratio", target="r") > 0.9


def test_evictions_counted(redis_factory, exporter_factory):
    server = redis_factory(args=["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"])
    c = server.client()
    for i in range(2000):
        c.set(f"big{i}", "x" * 4096)
    before = server.info("stats")["evicted_keys"]
    assert before > 0
    ep, m = one(server, exporter_factory)
    after = server.info("stats")["evicted_keys"]  # Redis may still be evicting in the background
    assert before <= m.value("cache_evictions_total", target="r") <= after
    assert m.value("redis_evicted_keys_total", target="r") == m.value("cache_evictions_total", target="r")
    assert m.value("cache_evicts_when_full", target="r") == 1


@pytest.mark.parametrize("kind", ["redis6", "valkey"])
def test_other_server_versions(redis_factory, exporter_factory, kind):
    server = redis_factory(kind=kind, args=["--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lfu"])
    server.client().set("a", "1")
    info = server.info("server")
    ep, m = one(server, exporter_factory)
    assert m.value("cache_up", target="r") == 1
    assert m.value("redis_memory_max_bytes", target="r") == 8 * MiB
    assert m.value("cache_evicts_when_full", target="r") == 1
    version = info.get("valkey_version") or info["redis_version"]
    assert m.has("cache_info", target="r", version=str(version), eviction_policy="allkeys-lfu")
    if kind == "valkey":
        assert m.has("redis_instance_info", target="r", valkey_version=str(info["valkey_version"]),
                     redis_mode="standalone")
        assert ep.target("r")["details"]["server"] == "valkey"
    else:
        assert str(info["redis_version"]).startswith("6.2")
        assert m.has("redis_current_cow_size_bytes", target="r")  # 6.2 field
        assert not m.has("redis_current_cow_peak_bytes", target="r")  # 7.0 field


def test_unix_socket(redis_factory, exporter_factory, tmp_path):
    sock = str(tmp_path / "redis.sock")
    server = redis_factory(unixsocket=sock)
    server.client().set("k", "v")
    ep = exporter_factory({"global": fast_global(), "targets": [
        {"name": "u", "type": "redis", "url": f"unix://{sock}"},
        {"name": "missing", "type": "redis", "url": f"unix://{tmp_path}/nope.sock"},
    ]})
    m = ep.wait_polls("u", 1)
    assert m.value("cache_up", target="u") == 1
    assert m.value("cache_items", target="u") == 1
    assert ep.target("u")["address"] == f"unix://{sock}"
    assert m.value("cache_exporter_poll_errors_total", target="missing", reason="refused") >= 1


def test_server_dies_mid_poll_is_not_fatal(redis_server, exporter_factory):
    """SIGSTOP freezes the server mid-conversation (poll times out); SIGCONT brings it back."""
    ep, _ = one(redis_server, exporter_factory)
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: (ep.metrics().value("cache_exporter_poll_errors_total", target="r",
                                               reason="timeout") or 0) >= 1, timeout=10, message="timeout")
        assert ep.metrics().value("cache_up", target="r") == 0
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    wait_until(lambda: ep.metrics().value("cache_up", target="r") == 1, timeout=15, message="recovery")


def test_prefix_view_sampled_with_scan_and_memory_usage(redis_factory, exporter_factory):
    """Per-prefix memory from SCAN + MEMORY USAGE: exact on a full pass, scaled from a bounded
    sample otherwise; a user without MEMORY gets a counted section error, the poll stays up."""
    server = redis_factory()
    c = server.client()
    pipe = c.pipeline(transaction=False)
    for prefix, (count, size) in {"techdocs": (300, 4000), "catalog": (300, 1000), "search": (300, 100)}.items():
        for i in range(count):
            pipe.set(f"{prefix}:{i}", "v" * size)
    pipe.execute()
    c.execute_command("ACL", "SETUSER", "nomemory", "on", ">pw", "~*", "+@all", "-memory")
    ep = exporter_factory({"global": fast_global(), "targets": [
        redis_target("full", server, prefixes={"interval": "1s", "top": 2}),
        redis_target("sampled", server, prefixes={"interval": "1s", "max_keys": 300}),
        redis_target("denied", server, username="nomemory", password_env="RPW", prefixes={"interval": "1s"}),
    ]}, env={"RPW": "pw"})
    for name in ("full", "sampled", "denied"):
        ep.wait_polls(name, 3)
    m = ep.metrics()
    full = {s[1]["prefix"]: s[2] for s in m.find("redis_prefix_bytes", target="full")}
    assert set(full) == {"techdocs", "catalog", "__other__"}, full
    assert full["techdocs"] > full["catalog"] > full["__other__"] > 0
    assert 300 * 4000 <= full["techdocs"] <= 1.3 * 300 * 4000
    assert m.value("redis_prefix_keys", target="full", prefix="catalog") == 300
    assert m.value("redis_prefix_scan_complete", target="full") == 1
    # 300 of 900 keys measured, scaled by 3: the estimate lands near the truth, marked incomplete.
    assert m.value("redis_prefix_sampled_keys", target="sampled") == 300
    assert m.value("redis_prefix_scan_complete", target="sampled") == 0
    total = sum(s[2] for s in m.find("redis_prefix_keys", target="sampled"))
    assert 850 <= total <= 950, total
    sampled = sum(s[2] for s in m.find("redis_prefix_bytes", target="sampled"))
    assert 0.5 * sum(full.values()) <= sampled <= 1.5 * sum(full.values())
    assert m.value("cache_up", target="denied") == 1
    assert m.value("cache_exporter_section_errors_total", target="denied", section="prefixes") >= 1
    assert not m.find("redis_prefix_bytes", target="denied")


def logged_config_gets(server, exporter_factory) -> list[list[str]]:
    """The CONFIG GET commands the exporter sent in its first polls, from the slow log (MONITOR
    leaves out admin commands); the server must log every command."""
    probe = server.client()
    probe.slowlog_reset()
    ep, _ = one(server, exporter_factory)
    ep.wait_polls("r", 3)  # the poll after the connect one fetches CONFIG
    entries = probe.execute_command("SLOWLOG", "GET", "1000")
    commands = [[a.decode() if isinstance(a, bytes) else str(a) for a in e[3]] for e in entries]
    return [c for c in commands if [a.upper() for a in c[:2]] == ["CONFIG", "GET"]]


LOG_EVERYTHING = ["--slowlog-log-slower-than", "0", "--slowlog-max-len", "1000"]


def test_redis7_config_get_asks_for_the_settings_kept_by_name(redis_factory, exporter_factory):
    """Redis 7 takes several names in one CONFIG GET: 16 settings, not all ~200 of "*"."""
    server = redis_factory(args=["--maxmemory", "8mb", *LOG_EVERYTHING])
    gets = logged_config_gets(server, exporter_factory)
    assert gets, "no CONFIG GET logged"
    assert all("maxmemory" in c and "maxmemory-policy" in c and "*" not in c for c in gets), gets


def test_redis6_config_get_asks_for_every_setting(redis_factory, exporter_factory):
    """Redis 6 takes one name: "*"."""
    server = redis_factory(kind="redis6", args=["--maxmemory", "8mb", *LOG_EVERYTHING])
    gets = logged_config_gets(server, exporter_factory)
    assert gets and all(c == ["CONFIG", "GET", "*"] for c in gets), gets
