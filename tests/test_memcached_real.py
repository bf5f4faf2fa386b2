"""The Memcached source against real memcached processes (Debian's memcached 1.6)."""

from __future__ import annotations

import socket
import subprocess

import pytest
from conftest import fast_global, memcached_target, redis_target, wait_until
from pymemcache.exceptions import MemcacheServerError

MiB = 2**20
SECRET = "mc-s3cret-do-not-leak"


def start(server, exporter_factory, env=None, **extra):
    ep = exporter_factory({"global": fast_global(), "targets": [memcached_target("m", server, **extra)]}, env=env)
    return ep, ep.wait_polls("m", 1)


def test_values_match_what_the_test_wrote(memcached_factory, exporter_factory):
    server = memcached_factory(args=["-m", "64"])
    c = server.client()
    for i in range(40):
        c.set(f"k{i}", b"v" * 100)
    for i in range(25):
        c.get(f"k{i}")
    for i in range(7):
        c.get(f"missing{i}")
    c.delete("k0")
    c.delete("missing")
    c.incr("counter", 1)  # miss: no such key
    c.set("counter", b"5")
    c.incr("counter", 1)
    c.touch("k1", 100)
    ep, m = start(server, exporter_factory)
    m = ep.wait_polls("m", 1)
    stats = server.stats()
    assert m.value("memcached_up", target="m") == 1 and m.value("cache_up", target="m", store="memcached") == 1
    assert m.value("memcached_current_items", target="m") == 40  # 40 - k0 + counter
    assert m.value("cache_items", target="m") == 40
    assert m.value("cache_hits_total", target="m") == 25
    assert m.value("cache_misses_total", target="m") == 7
    assert m.value("memcached_commands_total", target="m", command="get", status="hit") == 25
    assert m.value("memcached_commands_total", target="m", command="get", status="miss") == 7
    assert m.value("memcached_commands_total", target="m", command="delete", status="hit") == 1
    assert m.value("memcached_commands_total", target="m", command="delete", status="miss") == 1
    assert m.value("memcached_commands_total", target="m", command="incr", status="miss") == 1
    assert m.value("memcached_commands_total", target="m", command="incr", status="hit") == 1
    assert m.value("memcached_commands_total", target="m", command="touch", status="hit") == 1
    assert m.value("memcached_commands_total", target="m", command="set", status="hit") == 41
    assert m.value("memcached_current_bytes", target="m") == float(stats["bytes"])
    assert m.value("memcached_limit_bytes", target="m") == 64 * MiB
    assert m.value("cache_memory_limit_bytes", target="m") == 64 * MiB
    assert m.has("cache_memory_limit_info", target="m", source="limit_maxbytes")
    malloced = float(server.stats("slabs")["total_malloced"])
    assert m.value("memcached_malloced_bytes", target="m") == malloced
    assert m.value("cache_memory_used_bytes", target="m") == malloced  # slab pages, not item bytes
    assert m.value("cache_memory_headroom_bytes", target="m") == 64 * MiB - malloced
    assert m.value("cache_evicts_when_full", target="m") == 1
    assert m.has("cache_info", target="m", store="memcached", version=stats["version"], eviction_policy="lru")
    assert m.has("memcached_version", target="m", version=stats["version"])
    assert m.has("memcached_settings_info", target="m", evictions="on", maxbytes=str(64 * MiB))
    assert m.value("memcached_free_pages", target="m") == 64 - malloced / MiB
    # 100-byte values land in one slab class; its per-class series carry the slab label.
    classes = {s[1]["slab"] for s in m.find("memcached_slab_current_items", target="m")}
    assert sum(m.value("memcached_slab_current_items", target="m", slab=c) for c in classes) == 40
    assert m.value("memcached_calcified_slab_classes", target="m") == 0
    assert m.value("cache_exporter_polls_total", target="m") >= 2
    assert ep.target("m")["details"]["connections_opened"] == 1


def test_flush_and_expiry_counted(memcached_factory, exporter_factory):
    # memcached's background LRU maintainer and crawler reclaim flushed items on their own;
    # if one gets there before our get, the get is a plain miss and get_flushed stays 0.
    server = memcached_factory(args=["-o", "no_lru_crawler,no_lru_maintainer"])
    c = server.client()
    c.set("a", b"1")
    c.flush_all()
    assert c.get("a") is None  # flushed
    assert server.stats()["get_flushed"] == "1"
    ep, m = start(server, exporter_factory)
    assert m.value("memcached_commands_total", target="m", command="flush", status="hit") == 1
    assert m.value("memcached_get_flushed_total", target="m") == 1


def test_evicting_server_filled_past_its_limit(memcached_factory, exporter_factory):
    server = memcached_factory(args=["-m", "8"])
    ep = exporter_factory({"global": fast_global(), "targets": [memcached_target("m", server)]})
    c = server.client()
    for i in range(3000):
        c.set(f"k{i}", b"x" * 4000)
    m = ep.wait_polls("m", 1)
    stats = server.stats()
    evictions = float(stats["evictions"])
    assert evictions > 0
    assert m.value("memcached_items_evicted_total", target="m") == evictions
    assert m.value("cache_evictions_total", target="m") == evictions
    assert m.value("cache_memory_headroom_bytes", target="m") == 0
    assert m.value("cache_memory_utilization_ratio", target="m") == 1.0
    assert m.value("memcached_free_pages", target="m") == 0
    assert m.value("cache_write_rejections_total", target="m") == 0
    assert m.value("cache_evicts_when_full", target="m") == 1
    # Every class is full and evicting, but nothing is free anywhere: not calcification.
    assert m.value("memcached_calcified_slab_classes", target="m") == 0


def test_no_eviction_server_rejects_writes(memcached_factory, exporter_factory):
    server = memcached_factory(args=["-m", "8", "-M"])
    c = server.client()
    rejected = 0
    for i in range(3000):
        try:
            c.set(f"k{i}", b"x" * 4000, noreply=False)
        except MemcacheServerError as exc:
            assert b"out of memory" in exc.args[0]
            rejected += 1
            if rejected == 4:
                break
    assert rejected == 4
    ep, m = start(server, exporter_factory)
    assert m.value("cache_evicts_when_full", target="m") == 0
    assert m.has("cache_info", target="m", eviction_policy="noeviction")
    assert m.has("memcached_settings_info", target="m", evictions="off")
    assert m.value("cache_write_rejections_total", target="m") == 4
    assert m.value("memcached_item_no_memory_total", target="m") == 4
    assert m.value("cache_evictions_total", target="m") == 0
    assert m.value("cache_memory_headroom_bytes", target="m") == 0


def test_calcification_signal(memcached_factory, exporter_factory):
    """Small items take every page; after they are deleted their class holds only free chunks,
    and large items then evict within a single page of their own class (automove off)."""
    server = memcached_factory(args=["-m", "8", "-o", "slab_automove=0"])
    ep = exporter_factory({"global": fast_global(), "targets": [memcached_target("m", server),
                                                                memcached_target("noslabs", server, slabs=False)]})
    c = server.client()
    for i in range(60000):
        c.set(f"s{i}", b"x" * 100, noreply=True)
    c.version()  # memcached answers in order: every noreply command before this one is done
    m = ep.wait_polls("m", 2)
    assert m.value("memcached_calcified_slab_classes", target="m") == 0  # the small class evicts its own
    for i in range(60000):
        c.delete(f"s{i}", noreply=True)
    for i in range(400):
        c.set(f"L{i}", b"y" * 20000, noreply=True)
    c.version()
    m = ep.wait_polls("m", 1)
    items = server.stats("items")
    large = next(k.split(":")[1] for k, v in items.items() if k.endswith(":evicted") and int(v) > 0
                 and int(items[k.replace(":evicted", ":number")]) < 100)
    assert m.value("memcached_slab_calcified", target="m", slab=large) == 1
    assert m.value("memcached_calcified_slab_classes", target="m") == 1
    assert m.value("memcached_slabs_moved_total", target="m") == 0
    assert m.value("memcached_free_pages", target="m") == 0
    # With slabs: false the per-class series are gone, the fleet-level count stays.
    ep.wait_polls("noslabs", 1)
    m = ep.metrics()
    assert m.value("memcached_calcified_slab_classes", target="noslabs") == 1
    assert not m.find("memcached_slab_calcified", target="noslabs")
    assert not m.find("memcached_slab_current_items", target="noslabs")
    assert m.has("memcached_malloced_bytes", target="noslabs")
    # Evictions stop: after the window passes the signal clears.
    wait_until(lambda: ep.metrics().value("memcached_calcified_slab_classes", target="m") == 0, timeout=15,
               message="calcification signal to clear once evictions stop")


@pytest.mark.parametrize("fast,family", [(True, "memcached_connections_rejected_total"),
                                         (False, "memcached_connections_listener_disabled_total")])
def test_connection_limit(memcached_factory, exporter_factory, fast, family):
    args = ["-c", "32", "-t", "1"] + ([] if fast else ["-o", "no_maxconns_fast"])
    server = memcached_factory(args=args)
    ep, _ = start(server, exporter_factory)
    socks = []
    for _ in range(60):
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", server.port))
            s.sendall(b"version\r\n")
            socks.append(s)
        except OSError:
            s.close()
    try:
        m = ep.wait_polls("m", 1)
        assert m.value(family, target="m") > 0
        assert m.value("memcached_max_connections", target="m") == 32
    finally:
        for s in socks:
            s.close()
    # The exporter's own persistent connection was never the one refused.
    m = ep.wait_polls("m", 2)
    assert m.value("cache_up", target="m") == 1
    assert ep.target("m")["details"]["connections_opened"] == 1


def test_unix_socket_and_tls(memcached_factory, exporter_factory, tls_files, tmp_path):
    sock = str(tmp_path / "mc.sock")
    unix = memcached_factory(unixsocket=sock)
    unix.client().set("u", b"1")
    tls = memcached_factory(tls=tls_files)
    ep = exporter_factory({"global": fast_global(), "targets": [
        memcached_target("unix", unix),
        memcached_target("tls", tls, tls={"ca_file": tls_files.ca}),
        memcached_target("tls_wrong_ca", tls, tls={"ca_file": tls_files.other_ca}),
        memcached_target("tls_insecure", tls, tls={"insecure_skip_verify": True}),
        memcached_target("plain_to_tls", tls),
    ]})
    for name in ("unix", "tls", "tls_wrong_ca", "tls_insecure", "plain_to_tls"):
        ep.wait_polls(name, 1)
    m = ep.metrics()
    assert m.value("cache_up", target="unix") == 1 and m.value("cache_items", target="unix") == 1
    assert ep.target("unix")["address"] == f"unix://{sock}"
    assert m.value("cache_up", target="tls") == 1
    assert m.has("memcached_settings_info", target="tls")
    assert m.value("cache_up", target="tls_insecure") == 1
    assert m.value("cache_exporter_poll_errors_total", target="tls_wrong_ca", reason="tls") >= 1
    assert m.value("cache_up", target="plain_to_tls") == 0


def test_ascii_auth(memcached_factory, exporter_factory, tmp_path):
    authfile = tmp_path / "authfile"
    authfile.write_text(f"exporter:{SECRET}\n")
    server = memcached_factory(args=["-Y", str(authfile)])
    plain = memcached_factory()
    ep = exporter_factory({"global": fast_global(), "targets": [
        memcached_target("ok", server, username="exporter", password_env="MC_PW"),
        memcached_target("wrong", server, username="exporter", password_env="MC_WRONG"),
        memcached_target("none", server),
        # Credentials configured for a server without -Y: they must never be sent.
        memcached_target("noauth", plain, username="exporter", password_env="MC_PW"),
    ]}, env={"MC_PW": SECRET, "MC_WRONG": "nope-nope"})
    for name in ("ok", "wrong", "none", "noauth"):
        ep.wait_polls(name, 2)
    m = ep.metrics()
    assert m.value("cache_up", target="ok") == 1
    assert m.value("cache_exporter_poll_errors_total", target="wrong", reason="auth") >= 1
    assert m.value("cache_exporter_poll_errors_total", target="none", reason="auth") >= 1
    assert m.value("cache_up", target="noauth") == 1
    # Nothing was stored on the server without auth (an auth `set` there would store the password).
    assert plain.stats()["curr_items"] == "0" and plain.stats()["cmd_set"] == "0"
    assert "does not require authentication" in ep.log()
    for text in (m.text, ep.get("/targets")[1].decode(), ep.log()):
        assert SECRET not in text


def test_killed_and_restarted(memcached_factory, exporter_factory):
    server = memcached_factory()
    ep, m = start(server, exporter_factory)
    server.kill()
    wait_until(lambda: ep.metrics().value("memcached_up", target="m") == 0, timeout=10)
    m = ep.metrics()
    assert not m.has("memcached_current_items", target="m")
    failed = {s[1]["reason"] for s in m.find("cache_exporter_poll_errors_total", target="m") if s[2] > 0}
    assert failed and failed <= {"refused", "reset"}
    server.start()
    wait_until(lambda: ep.metrics().value("memcached_up", target="m") == 1, timeout=15, message="recovery")


def test_mixed_fleet_promtool_clean(memcached_factory, redis_factory, exporter_factory):
    mc = memcached_factory(args=["-m", "8"])
    for i in range(50):
        mc.client().set(f"k{i}" * 3, b"z" * (i * 50))
    rs = redis_factory()
    ep = exporter_factory({"global": fast_global(labels={"env": "ci"}), "targets": [
        memcached_target("mc", mc), memcached_target("mc_noslabs", mc, slabs=False), redis_target("r", rs),
        {"name": "mc_down", "type": "memcached", "address": "127.0.0.1:1"}]})
    ep.wait_polls("mc", 2)
    body = ep.get("/metrics")[1]
    result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b"", result
    m = ep.metrics()
    assert m.value("cache_up", target="mc") == 1 and m.value("cache_up", target="r") == 1
    assert m.value("memcached_up", target="mc_down") == 0
    with_slabs = len([s for s in m.samples if s[1].get("target") == "mc"])
    without = len([s for s in m.samples if s[1].get("target") == "mc_noslabs"])
    assert without < with_slabs / 2, (with_slabs, without)


def test_auth_mode_is_probed_on_every_connection(memcached_factory, exporter_factory, tmp_path):
    """A server restarted with or without -Y: never store the password, always recover."""
    authfile = tmp_path / "authfile"
    authfile.write_text(f"exporter:{SECRET}\n")
    plain = memcached_factory()
    port = plain.port
    ep = exporter_factory({"global": fast_global(), "targets": [
        memcached_target("m", plain, username="exporter", password_env="MC_PW")]}, env={"MC_PW": SECRET})
    assert ep.metrics().value("cache_up", target="m") == 1
    plain.kill()
    secured = memcached_factory(args=["-Y", str(authfile)], port=port)
    wait_until(lambda: ep.metrics().value("cache_up", target="m") == 1
               and ep.metrics().value("memcached_auth_commands_total", target="m"), timeout=15,
               message="authenticated after the server came back with -Y")
    secured.kill()
    plain_again = memcached_factory(port=port)
    wait_until(lambda: ep.metrics().value("cache_up", target="m") == 1
               and not ep.metrics().value("memcached_auth_commands_total", target="m"), timeout=15,
               message="polled without auth after the server came back without -Y")
    stats = plain_again.stats()
    assert stats["cmd_set"] == "0" and stats["curr_items"] == "0"  # the password was never stored
    assert SECRET not in ep.log()


def test_prefix_view_from_metadump(memcached_factory, exporter_factory):
    """The reproduction's shape: which prefix (Backstage plugin) holds the memory. top: 3 folds
    the smallest into __other__; a second target with a tiny time budget stays up, partial."""
    server = memcached_factory(args=["-m", "64"])
    c = server.client()
    sizes = {"techdocs": (60, 20_000), "catalog": (40, 6_000), "kubernetes": (20, 2_000), "search": (10, 1_000)}
    for prefix, (count, size) in sizes.items():
        for i in range(count):
            c.set(f"{prefix}:key:{i}", b"v" * size)
    c.set("nodelimiter", b"x")
    ep = exporter_factory({"global": fast_global(), "targets": [
        memcached_target("m", server, prefixes={"top": 3, "interval": "1s"}),
        memcached_target("nodump", server)]})
    m = ep.wait_polls("m", 2)
    top = {s[1]["prefix"]: s[2] for s in m.find("memcached_prefix_bytes", target="m")}
    assert set(top) == {"techdocs", "catalog", "kubernetes", "__other__"}, top
    assert top["techdocs"] > top["catalog"] > top["kubernetes"] > 0
    # Item sizes include memcached's item header: at least the value bytes, at most 10 % more.
    assert 60 * 20_000 <= top["techdocs"] <= 1.1 * 60 * 20_000
    assert m.value("memcached_prefix_items", target="m", prefix="__other__") == 10 + 1  # search + nodelimiter
    assert m.value("memcached_prefix_scan_complete", target="m") == 1
    assert not m.find("memcached_prefix_bytes", target="nodump")  # opt-in
    assert m.value("cache_up", target="m") == 1


def test_prefix_view_budget_and_refusal(memcached_factory, exporter_factory):
    big = memcached_factory(args=["-m", "64"])
    c = big.client()
    c.set_many({f"p{i % 50}:k{i}": b"v" for i in range(20_000)})
    refusing = memcached_factory(args=["-X"])  # dumping disabled
    ep = exporter_factory({"global": fast_global(), "targets": [
        memcached_target("capped", big, prefixes={"interval": "1s", "max_bytes": "64KiB"}),
        memcached_target("refused", refusing, prefixes={"interval": "1s"})]})
    m = ep.wait_polls("capped", 3)
    ep.wait_polls("refused", 3)
    m = ep.metrics()
    assert m.value("cache_up", target="capped") == 1
    assert m.value("memcached_prefix_scan_complete", target="capped") == 0
    assert 0 < sum(s[2] for s in m.find("memcached_prefix_items", target="capped")) < 20_000
    assert m.value("cache_up", target="refused") == 1
    assert m.value("cache_exporter_section_errors_total", target="refused", section="prefixes") >= 1
    assert not m.find("memcached_prefix_bytes", target="refused")


@pytest.mark.parametrize("store", ["memcached", "redis"])
def test_a_ca_file_gone_since_the_config_loaded_is_a_tls_failure(store, memcached_factory, redis_factory,
                                                                  tls_files, tmp_path):
    """The memcached source once built its TLS context apart from the other sources: a CA file
    removed after the config was checked read as ENOENT, ``refused``, where Redis said ``tls``.
    Both now open through the one opener in netio. A real TLS server listens, so a connection
    failure cannot be what the poll reports."""
    import shutil
    import time

    from exporter.config import build_config
    from exporter.errors import PollError
    from exporter.sources import SOURCES

    ca = tmp_path / "ca.crt"
    shutil.copy(tls_files.ca, ca)
    if store == "memcached":
        entry = memcached_target("gone", memcached_factory(tls=tls_files), tls={"ca_file": str(ca)})
    else:
        entry = redis_target("gone", redis_factory(tls=tls_files), tls={"ca_file": str(ca)})
    target = build_config({"targets": [entry]}, "test").config.targets[0]
    source = SOURCES[store](target)
    assert source.poll(time.monotonic() + 5).samples  # the CA is there: the target polls
    source.close()
    ca.unlink()
    try:
        with pytest.raises(PollError) as info:
            source.poll(time.monotonic() + 5)
        assert info.value.reason == "tls", info.value
        assert "cannot load TLS files" in str(info.value)
    finally:
        source.close()
