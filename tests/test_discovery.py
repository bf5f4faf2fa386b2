"""Service discovery: templates in the config, file_sd, DNS (against a local dnsmasq) and
ElastiCache-style memcached discovery, and targets coming and going in a running exporter."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MemcachedServer, free_port, need, stop_process, wait_until
from fakeserver import FakeServer, Session

from exporter import cli
from exporter.config import ConfigError, build_config, expand
from exporter.discovery import Found, registry
from exporter.discovery.base import DiscoveryError
from exporter.discovery.elasticache import discover as elasticache_discover
from exporter.discovery.elasticache import parse as elasticache_parse
from exporter.discovery.file_sd import read, signature
from exporter.discovery.runner import DiscoveryRunner


def config(*targets: dict, source: str = "test.yml") -> object:
    return build_config({"global": {"interval": "1s", "timeout": "0.5s"}, "targets": list(targets)}, source).config


def problems(*targets: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config(*targets)
    return str(info.value)


# -- the config shape (pure Python) --------------------------------------------------------------

def test_template_errors_are_clear():
    assert "targets[0].discover: unknown discovery kind 'consul'; supported: cluster, sentinel, file_sd, dns" \
        in problems({"name": "f", "type": "redis", "discover": "consul"})
    assert "targets[0].files: is required" in problems({"name": "f", "type": "redis", "discover": "file_sd"})
    assert "targets[0].record: must be one of: A, AAAA, SRV" in problems(
        {"name": "f", "type": "redis", "discover": "dns", "names": ["x"], "record": "MX", "port": 1})
    assert "targets[0].port: is required" in problems({"name": "f", "type": "redis", "discover": "dns", "names": ["x"]})
    assert "targets[0].port: does not apply to SRV records" in problems(
        {"name": "f", "type": "redis", "discover": "dns", "names": ["x"], "record": "SRV", "port": 1})
    assert "targets[0].nameserver: expected an IP address" in problems(
        {"name": "f", "type": "redis", "discover": "dns", "names": ["x"], "port": 1, "nameserver": "dns.example"})
    assert "targets[0].address: is required: the configuration endpoint for discover: elasticache" in problems(
        {"name": "c", "type": "memcached", "discover": "elasticache"})
    assert "targets[0].discover: discover: elasticache finds memcached targets, not redis" in problems(
        {"name": "c", "type": "redis", "url": "redis://h:1", "discover": "elasticache"})
    assert "targets[0].files: does not apply to discover: dns" in problems(
        {"name": "f", "type": "redis", "discover": "dns", "names": ["x"], "port": 1, "files": ["a"]})
    # The template's own settings go through the checks of a hand-written target.
    assert "targets[0].memory_limt: unknown key (did you mean 'memory_limit'?)" in problems(
        {"name": "f", "type": "memcached", "discover": "file_sd", "files": ["x"], "memory_limt": "1GB"})
    assert "duplicate target name 'f'" in problems(
        {"name": "f", "type": "redis", "discover": "file_sd", "files": ["x"]},
        {"name": "f", "type": "redis", "url": "redis://h:1"})
    assert "is in the namespace of the discovery template 'f'" in problems(
        {"name": "f", "type": "redis", "discover": "file_sd", "files": ["x"]},
        {"name": "f/h:1", "type": "redis", "url": "redis://h:1"})


def test_redis_cluster_and_sentinel_templates(monkeypatch):
    # The config shape does not need the kinds' modules to be there; any importable one stands in.
    for kind in ("cluster", "sentinel"):
        monkeypatch.setitem(registry.KINDS, kind, registry.Kind("exporter.discovery.base", ("redis",), 30))
    assert "targets[0].url: is required: a seed node for discover: cluster" in problems(
        {"name": "c", "type": "redis", "discover": "cluster"})
    # Without master_name: every primary the sentinels monitor; an empty or non-string name is an error.
    (every,) = config({"name": "s", "type": "redis", "url": "redis://10.0.0.1:26379", "discover": "sentinel"}).templates
    assert every.options == {"seeds": ("redis://10.0.0.1:26379",)}
    assert "targets[0].master_name: must not be empty" in problems(
        {"name": "s", "type": "redis", "url": "redis://10.0.0.1:26379", "discover": "sentinel", "master_name": " "})
    assert "targets[0].master_name: expected a string" in problems(
        {"name": "s", "type": "redis", "url": "redis://10.0.0.1:26379", "discover": "sentinel", "master_name": 1})
    assert "targets[0].url: discover: cluster needs a redis:// or rediss:// seed" in problems(
        {"name": "c", "type": "redis", "url": "unix:///r.sock", "discover": "cluster"})
    assert "targets[0].seeds[0]: credentials in a seed are not allowed" in problems(
        {"name": "c", "type": "redis", "url": "redis://10.0.0.1:7000", "discover": "cluster",
         "seeds": ["u:secret@10.0.0.2:7000"]})
    cfg = config({"name": "c", "type": "redis", "url": "rediss://10.0.0.1:7000", "discover": "cluster",
                  "seeds": ["10.0.0.2:7000", "rediss://10.0.0.3:7000"], "tls": {"insecure_skip_verify": True}},
                 {"name": "s", "type": "redis", "url": "redis://10.0.0.1:26379", "discover": "sentinel",
                  "master_name": "mymaster", "refresh_interval": "10s"})
    cluster, sentinel = cfg.templates
    assert cluster.options["seeds"] == ("rediss://10.0.0.1:7000", "rediss://10.0.0.2:7000", "rediss://10.0.0.3:7000")
    assert cluster.refresh_interval == 30.0 and cluster.probe.tls.insecure_skip_verify
    assert sentinel.options == {"seeds": ("redis://10.0.0.1:26379",), "master_name": "mymaster"}
    assert sentinel.refresh_interval == 10.0
    # A seed's port is the kind's business (a Sentinel listens on 26379): not filled in with Redis' 6379.
    (bare,) = config({"name": "s", "type": "redis", "url": "redis://10.0.0.1", "discover": "sentinel",
                      "master_name": "m"}).templates
    assert bare.options["seeds"] == ("redis://10.0.0.1",)
    (node,) = expand(cluster, [Found("10.0.0.9:7001", "10.0.0.9:7001", (("shard", "s1"), ("role", "replica")))])
    assert (node.name, node.address) == ("c/10.0.0.9:7001", "rediss://10.0.0.9:7001")
    assert dict(node.labels) == {"shard": "s1", "discovered_role": "replica"} and node.tls == cluster.probe.tls


def test_a_kind_missing_from_the_build_is_a_config_error(monkeypatch):
    monkeypatch.setitem(registry.KINDS, "cluster", registry.Kind("exporter.discovery.no_such_module", ("redis",), 30))
    assert "targets[0].discover: discovery kind cluster not available in this build" in problems(
        {"name": "c", "type": "redis", "url": "redis://10.0.0.1:7000", "discover": "cluster"})


def test_check_config_exits_2_on_a_bad_template(tmp_path, capsys):
    path = tmp_path / "c.yml"
    path.write_text("targets:\n  - {name: f, type: redis, discover: dns, names: [x], record: TXT, port: 1}\n")
    assert cli.main(["check-config", str(path)]) == cli.EXIT_CONFIG
    assert "targets[0].record: must be one of: A, AAAA, SRV" in capsys.readouterr().err
    path.write_text("targets:\n  - {name: f, type: redis, discover: file_sd, files: [sd/*.json]}\n")
    assert cli.main(["check-config", str(path)]) == 0
    assert "f (redis, discover: file_sd) to discover" in capsys.readouterr().out


def test_expansion_names_labels_and_settings(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([
        {"targets": ["10.0.0.1:6379", "10.0.0.2:6380"], "labels": {"team": "a", "__meta_zone": "z1"}}]))
    (tmp_path / "b.yml").write_text("- targets: ['10.0.0.1:6379', '[::1]:6381']\n  labels: {team: b}\n")
    cfg = config({"name": "fleet", "type": "redis", "url": "rediss://ignored:1/2", "discover": "file_sd",
                  "files": [str(tmp_path / "*")], "labels": {"env": "prod", "team": "x"}, "memory_limit": "1GiB"})
    template = cfg.templates[0]
    assert template.refresh_interval == 5.0 and cfg.targets == ()
    targets = {t.name: t for t in expand(template, read(signature(list(template.options["files"]))))}
    # The same address in two files is one node: the first file (by name) wins.
    assert sorted(targets) == ["fleet/10.0.0.1:6379", "fleet/10.0.0.2:6380", "fleet/[::1]:6381"]
    one = targets["fleet/10.0.0.1:6379"]
    assert (one.scheme, one.host, one.port, one.db, one.memory_limit) == ("rediss", "10.0.0.1", 6379, 2, 2**30)
    assert dict(one.labels) == {"env": "prod", "team": "a"}  # __ labels dropped, file labels over the template's
    assert targets["fleet/[::1]:6381"].host == "::1"


def test_discovered_labels_never_clash_with_a_family_label(tmp_path):
    sd = config({"name": "m", "type": "memcached", "discover": "file_sd", "files": ["x"]}).templates[0]
    # A label the operator wrote in a file_sd file that a family uses (store) is their error ...
    with pytest.raises(DiscoveryError, match="'store' is already a label"):
        expand(sd, [Found("10.0.0.1:11211", "10.0.0.1:11211", (("store", "x"),))])
    with pytest.raises(DiscoveryError, match="'target' is already a label"):
        expand(sd, [Found("10.0.0.1:11211", "10.0.0.1:11211", (("target", "x"),))])
    # ... one from Redis Cluster or Sentinel (role, also a label of redis_instance_info) is renamed.
    dns = config({"name": "d", "type": "memcached", "discover": "dns", "names": ["x"], "port": 1}).templates[0]
    (target,) = expand(dns, [Found("10.0.0.1:11211", "k", (("role", "primary"), ("shard", "0")))])
    assert dict(target.labels) == {"discovered_role": "primary", "shard": "0"}


def test_elasticache_reply_parsing():
    nodes = b"n1.cache.amazonaws.com|10.0.0.1|11211 n2.cache.amazonaws.com||11212\n"
    reply = b"CONFIG cluster 0 %d\r\n12\n%s\r\nEND\r\n" % (len(b"12\n" + nodes), nodes)
    found = elasticache_parse(reply, "cfg:11211")
    assert found == [Found("10.0.0.1:11211", "n1.cache.amazonaws.com:11211"),
                     Found("n2.cache.amazonaws.com:11212", "n2.cache.amazonaws.com:11212")]
    with pytest.raises(DiscoveryError, match="not a cluster configuration endpoint"):
        elasticache_parse(b"ERROR\r\n", "cfg:11211")
    with pytest.raises(DiscoveryError, match="truncated"):
        elasticache_parse(reply[:-12] + b"END\r\n", "cfg:11211")


def test_elasticache_connection_failures_are_worded_as_a_polls():
    """Discovery connects through netio.open_stream, the sources' opener: its failures get the
    poll's reasons, and the deadline covers the whole exchange."""
    with pytest.raises(DiscoveryError, match=r"^127\.0\.0\.1:\d+: config get cluster failed: connection refused$"):
        elasticache_discover("127.0.0.1", free_port(), timeout=2)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog) and never answers
    try:
        with pytest.raises(DiscoveryError, match=r"config get cluster failed: timed out$"):
            elasticache_discover("127.0.0.1", silent.getsockname()[1], timeout=0.2)
    finally:
        silent.close()


def test_elasticache_trickle_is_cut_at_the_deadline_and_a_flood_at_1_mib():
    """A reply that never ends (a byte every 50 ms) fails at the discovery's deadline, not later;
    one that goes past 1 MiB is refused as too large, whatever its header announced."""
    def trickle(s: Session) -> None:
        s.send(b"CONFIG cluster 0 100000\r\n1\n")
        while True:
            s.pause(0.05)
            s.send(b"x")

    def flood(s: Session) -> None:
        s.send(b"CONFIG cluster 0 3000000\r\n1\n")
        block = b"n|127.0.0.1|11211 " * 4096
        while True:
            s.send(block)

    endpoint = ConfigEndpoint([], reply=trickle)
    try:
        started = time.monotonic()
        with pytest.raises(DiscoveryError, match=r"^127\.0\.0\.1:\d+: config get cluster failed: timed out$"):
            elasticache_discover("127.0.0.1", endpoint.port, timeout=0.5)
        assert time.monotonic() - started < 3  # the deadline covers the whole reply, not each recv
    finally:
        endpoint.close()
    endpoint = ConfigEndpoint([], reply=flood)
    try:
        with pytest.raises(DiscoveryError, match=r"^127\.0\.0\.1:\d+: reply to config get cluster larger than 1 MiB$"):
            elasticache_discover("127.0.0.1", endpoint.port, timeout=10)
    finally:
        endpoint.close()


def test_a_failing_refresh_keeps_the_last_good_list(tmp_path):
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"targets": ["10.0.0.1:11211"]}]))
    template = config({"name": "m", "type": "memcached", "discover": "file_sd", "files": [str(sd)]}).templates[0]
    changes: list[int] = []
    runner = DiscoveryRunner(on_change=lambda: changes.append(1))
    runner.set_templates((template,))
    runner.refresh_now("m")
    assert [t.name for t in runner.targets()] == ["m/10.0.0.1:11211"] and changes == [1]
    runner.refresh_now("m")  # nothing touched: not even re-read
    assert changes == [1]
    sd.write_text("[{\"targets\": [")
    runner.refresh_now("m")
    runner.refresh_now("m")
    (state,) = runner.states()
    assert [t.name for t in runner.targets()] == ["m/10.0.0.1:11211"]
    assert state.errors == 1 and "sd.json: not valid JSON" in (state.last_error or "")
    # A reload with the same template keeps everything; a changed one starts from the last nodes.
    runner.set_templates(config({"name": "m", "type": "memcached", "discover": "file_sd", "files": [str(sd)],
                                 "labels": {"env": "x"}}).templates)
    (state,) = runner.states()
    assert state.errors == 1 and [dict(t.labels) for t in runner.targets()] == [{"env": "x"}]


# -- a running exporter --------------------------------------------------------------------------

def _names(ep, template: str) -> set[str]:
    return {t["name"] for t in ep.targets() if t["discovered_by"] == template}


def test_file_sd_targets_come_and_go(exporter_factory, redis_factory, tmp_path):
    a, b = redis_factory(), redis_factory()
    (tmp_path / "sd").mkdir()
    sd = tmp_path / "sd" / "fleet.yml"
    sd.write_text(f"- targets: ['127.0.0.1:{a.port}']\n  labels: {{team: a}}\n")
    ep = exporter_factory({"global": {"interval": "0.5s", "timeout": "0.4s"}, "targets": [
        {"name": "fleet", "type": "redis", "discover": "file_sd", "files": [str(tmp_path / "sd" / "*.yml")],
         "refresh_interval": "0.2s"}]})
    first, second = f"fleet/127.0.0.1:{a.port}", f"fleet/127.0.0.1:{b.port}"
    wait_until(lambda: ep.metrics().value("cache_up", target=first) == 1, message="the file's target up")
    m = ep.metrics()
    assert m.value("cache_up", target=first, team="a") == 1
    assert m.value("cache_exporter_discovery_targets", template="fleet", kind="file_sd") == 1
    polls_before = m.value("cache_exporter_polls_total", target=first)

    sd.write_text(f"- targets: ['127.0.0.1:{a.port}', '127.0.0.1:{b.port}']\n  labels: {{team: a}}\n")
    wait_until(lambda: ep.metrics().value("cache_up", target=second) == 1, message="the added target up")
    assert _names(ep, "fleet") == {first, second}
    # The unchanged target kept its runtime: its poll counter went on, it did not start over.
    assert ep.metrics().value("cache_exporter_polls_total", target=first) >= polls_before

    sd.write_text(f"- targets: ['127.0.0.1:{a.port}']\n  labels: {{team: a}}\n")

    def second_gone() -> bool:
        m = ep.metrics()  # gone from the store with the refresh that removed it, not after some expiry
        return not m.find("cache_up", target=second) and not m.find("cache_exporter_polls_total", target=second)
    wait_until(lambda: _names(ep, "fleet") == {first} and second_gone(), message="the removed target gone")

    sd.write_text("- targets: [")  # broken: the last good list stays, the error is counted and logged
    wait_until(lambda: ep.metrics().value("cache_exporter_discovery_errors_total", template="fleet",
                                          kind="file_sd") == 1, message="the error counted")
    assert _names(ep, "fleet") == {first}
    assert ep.metrics().value("cache_up", target=first) == 1
    assert "discovery fleet (file_sd) failed, keeping the last 1 targets" in ep.log()
    assert ep.metrics().value("cache_exporter_discovery_targets", template="fleet", kind="file_sd") == 1

    # A reload of the same config keeps the template running and its target untouched.
    polls_before = ep.metrics().value("cache_exporter_polls_total", target=first)
    ep.signal(signal.SIGHUP)
    wait_until(lambda: "config reloaded" in ep.log(), message="the reload")
    wait_until(lambda: ep.metrics().value("cache_exporter_polls_total", target=first) > polls_before,
               message="the kept target polled on")
    assert _names(ep, "fleet") == {first}
    assert "unchanged: 1" in ep.log()


# -- DNS against a local dnsmasq -------------------------------------------------------------------

class Dnsmasq:
    def __init__(self, workdir: Path, hosts: str, srv: list[str]) -> None:
        need(shutil.which("dnsmasq") is not None, "dnsmasq not installed (Debian: dnsmasq-base)")
        self.hosts = workdir / "hosts"
        self.hosts.write_text(hosts)
        self.port = free_port()
        self.log = workdir / "dnsmasq.log"
        cmd = [shutil.which("dnsmasq") or "dnsmasq", "--no-daemon", f"--port={self.port}",
               "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
               # --local: names under .test are answered from here only (NXDOMAIN when absent);
               # --user=root as root: the default (nobody) could not re-read a hosts file under tmp_path.
               "--local=/test/", f"--addn-hosts={self.hosts}", f"--pid-file={workdir / 'dnsmasq.pid'}",
               *(["--user=root"] if os.geteuid() == 0 else []), *(f"--srv-host={s}" for s in srv)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, timeout=10, message="dnsmasq answering")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited: {self.log.read_text()}")
        import dns.resolver

        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port, r.lifetime = ["127.0.0.1"], self.port, 1
        try:
            r.resolve("probe.test", "A")
        except dns.resolver.NXDOMAIN:
            return True
        return False

    def reread_hosts(self, hosts: str) -> None:
        self.hosts.write_text(hosts)
        self.proc.send_signal(signal.SIGHUP)  # dnsmasq re-reads --addn-hosts files on SIGHUP

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def dnsmasq(tmp_path):
    servers: list[Dnsmasq] = []

    def make(hosts: str, srv: list[str] | None = None) -> Dnsmasq:
        server = Dnsmasq(tmp_path, hosts, srv or [])
        servers.append(server)
        return server
    yield make
    for server in servers:
        server.stop()


@pytest.mark.servers
def test_dns_a_and_srv_discovery(dnsmasq, redis_factory, exporter_factory):
    # One Redis on two loopback addresses, so one A name can list two nodes on the template's port.
    r = redis_factory(args=["--bind", "127.0.0.1", "127.0.0.2"])
    other = redis_factory()
    ns = dnsmasq("127.0.0.1 fleet.test\n127.0.0.2 fleet.test\n",
                 [f"_redis._tcp.svc.test,127.0.0.1,{other.port}", f"_redis._tcp.svc.test,127.0.0.2,{r.port}"])
    ep = exporter_factory({"global": {"interval": "0.5s", "timeout": "0.4s"}, "targets": [
        {"name": "a", "type": "redis", "discover": "dns", "names": ["fleet.test"], "port": r.port,
         "nameserver": f"127.0.0.1:{ns.port}", "refresh_interval": "0.2s"},
        {"name": "srv", "type": "redis", "discover": "dns", "names": ["_redis._tcp.svc.test"], "record": "SRV",
         "nameserver": f"127.0.0.1:{ns.port}", "refresh_interval": "0.2s"}]})
    a1, a2 = f"a/127.0.0.1:{r.port}", f"a/127.0.0.2:{r.port}"
    s1, s2 = f"srv/127.0.0.1:{other.port}", f"srv/127.0.0.2:{r.port}"
    wait_until(lambda: all(ep.metrics().value("cache_up", target=t) == 1 for t in (a1, a2, s1, s2)),
               message="every DNS-discovered target up")
    assert ep.metrics().value("cache_up", target=a2, dns_name="fleet.test") == 1
    assert ep.metrics().value("cache_exporter_discovery_targets", template="srv", kind="dns") == 2

    ns.reread_hosts("127.0.0.1 fleet.test\n")
    wait_until(lambda: _names(ep, "a") == {a1} and not ep.metrics().find("cache_up", target=a2),
               message="the address dropped from DNS gone")

    ns.reread_hosts("")  # the name vanishes: NXDOMAIN is an error, the last good list stays
    wait_until(lambda: ep.metrics().value("cache_exporter_discovery_errors_total", template="a", kind="dns"),
               message="the DNS error counted")
    assert _names(ep, "a") == {a1}
    assert "fleet.test: no such name (NXDOMAIN)" in ep.log()


# -- ElastiCache-style configuration endpoint --------------------------------------------------------

class ConfigEndpoint(FakeServer):
    """A fake ElastiCache configuration endpoint: answers `config get cluster` with ``nodes``
    (no real server speaks it); the nodes it names are real memcached servers. ``reply``, if
    given, answers the request instead (a misbehaving endpoint)."""

    def __init__(self, nodes: list[MemcachedServer], reply: Callable[[Session], None] | None = None) -> None:
        self.nodes = nodes
        self.version = 1
        self.reply = reply
        super().__init__(name="elasticache-config")

    def _handle(self, s: Session) -> None:
        request = s.read_line()
        if request is None:
            return
        if self.reply is not None:
            self.reply(s)
        elif request.strip() != "config get cluster":
            s.send(b"ERROR\r\n")
        else:
            nodes = " ".join(f"node{i}.test|127.0.0.1|{n.port}" for i, n in enumerate(self.nodes))
            body = f"{self.version}\n{nodes}\n".encode()
            s.send(b"CONFIG cluster 0 %d\r\n%s\r\nEND\r\n" % (len(body), body))


def test_elasticache_discovery_finds_real_memcached_nodes(memcached_factory, exporter_factory):
    m1, m2 = memcached_factory(), memcached_factory()
    endpoint = ConfigEndpoint([m1])
    try:
        ep = exporter_factory({"global": {"interval": "0.5s", "timeout": "0.4s"}, "targets": [
            {"name": "mc", "type": "memcached", "address": f"127.0.0.1:{endpoint.port}", "discover": "elasticache",
             "refresh_interval": "0.2s", "slabs": False}]})
        first, second = f"mc/node0.test:{m1.port}", f"mc/node1.test:{m2.port}"
        wait_until(lambda: ep.metrics().value("cache_up", target=first) == 1, message="node 0 up")
        assert ep.target(first)["address"] == f"tcp://127.0.0.1:{m1.port}"
        endpoint.nodes, endpoint.version = [m1, m2], 2
        wait_until(lambda: ep.metrics().value("cache_up", target=second) == 1, message="the new node up")
        endpoint.nodes, endpoint.version = [m2], 3
        wait_until(lambda: _names(ep, "mc") == {f"mc/node0.test:{m2.port}"}
                   and not ep.metrics().find("cache_up", target=first), message="the cluster shrunk")
    finally:
        endpoint.close()


def test_plain_memcached_is_no_configuration_endpoint(memcached_factory):
    plain = memcached_factory()
    with pytest.raises(DiscoveryError, match=f"127.0.0.1:{plain.port}: not a cluster configuration endpoint"):
        elasticache_discover("127.0.0.1", plain.port, timeout=5)
