"""Redis Cluster and Sentinel discovery against real servers (a 3+3 cluster, a sentinel with a primary
and a replica, failovers on both), and against a fake server sending malformed replies."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import RedisServer, SentinelSetup, TLSFiles, free_port, start_redis_cluster, wait_until
from fakeserver import FakeServer, RespSession, Session

from exporter.discovery.base import DiscoveryError, Found
from exporter.discovery.redis_cluster import _from_nodes
from exporter.discovery.redis_cluster import discover as cluster_discover
from exporter.discovery.redis_sentinel import discover as sentinel_discover
from exporter.targets import TLSConfig

SLOT_RANGES = {"0-5460", "5461-10922", "10923-16383"}
TIMEOUT = 2.0


def cluster(*seeds: str, password: str | None = None) -> list[Found]:
    return cluster_discover(list(seeds), username=None, password=password, tls=None, timeout=TIMEOUT)


def sentinel(*seeds: str, name: str | None = "mymaster", password: str | None = None) -> list[Found]:
    return sentinel_discover(list(seeds), master_name=name, username=None, password=password, tls=None,
                             timeout=TIMEOUT)


def roles(found: list[Found]) -> dict[str, tuple[str, str]]:
    """address -> (shard or master_name, role)"""
    out = {}
    for f in found:
        labels = dict(f.labels)
        out[f.address] = (labels.get("shard", labels.get("master_name", "")), labels["role"])
    return out


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


# --- Redis Cluster ------------------------------------------------------------------------

def test_cluster_every_node_from_one_seed(redis_cluster: list[int]) -> None:
    found = cluster(f"redis://{addr(redis_cluster[0])}")
    assert {f.address for f in found} == {addr(p) for p in redis_cluster}
    assert all(f.key == f.address for f in found)
    by_addr = roles(found)
    assert Counter(role for _, role in by_addr.values()) == {"primary": 3, "replica": 3}
    # every shard (named by its slot range) has exactly one primary and one replica
    shards = Counter((shard, role) for shard, role in by_addr.values())
    assert shards == {(s, r): 1 for s in SLOT_RANGES for r in ("primary", "replica")}
    # the roles are the servers' own view, not our guess
    for f in found:
        info = redis.Redis(port=int(f.address.rsplit(":", 1)[1]), protocol=2).info("replication")
        assert info["role"] == {"primary": "master", "replica": "slave"}[dict(f.labels)["role"]]

    # CLUSTER NODES (the pre-7 path) reads the same cluster the same way
    conn = redis.Connection(port=redis_cluster[3], protocol=2)  # raw: redis-py would parse the reply
    try:
        conn.send_command("CLUSTER", "NODES")
        text = conn.read_response().decode()
    finally:
        conn.disconnect()
    assert roles(_from_nodes(text, "127.0.0.1")) == by_addr


def test_cluster_seeds_asked_in_order_and_errors(redis_cluster: list[int],
                                                 redis_factory: Callable[..., RedisServer]) -> None:
    dead = free_port()
    assert len(cluster(addr(dead), addr(redis_cluster[1]))) == 6  # a bare host:port seed, the first dead
    with pytest.raises(DiscoveryError, match=f"no cluster seed answered: 127.0.0.1:{dead}: .*; 127.0.0.1:"):
        cluster(addr(dead), addr(free_port()))
    plain = redis_factory()
    with pytest.raises(DiscoveryError, match=f"^127.0.0.1:{plain.port}: not a cluster node$"):
        cluster(f"redis://{addr(plain.port)}")
    with pytest.raises(DiscoveryError, match="scheme 'http' is not supported"):
        cluster("http://127.0.0.1:1")


def test_cluster_failover_is_followed(redis_cluster: list[int]) -> None:
    before = roles(cluster(addr(redis_cluster[0])))
    replica = next(a for a, (_, role) in before.items() if role == "replica")
    shard = before[replica][0]
    old_primary = next(a for a, (s, role) in before.items() if s == shard and role == "primary")
    assert redis.Redis(port=int(replica.rsplit(":", 1)[1]), protocol=2).execute_command("CLUSTER FAILOVER")

    expected = dict(before)
    expected[replica], expected[old_primary] = (shard, "primary"), (shard, "replica")
    # Asked of a node that took no part in the failover: gossip has to carry the news.
    bystander = next(a for a, (s, _) in before.items() if s != shard)
    wait_until(lambda: roles(cluster(bystander)) == expected, timeout=20, message="discovery to show the failover")


@pytest.mark.servers
def test_cluster_with_password(tmp_path: Path) -> None:
    servers: list[RedisServer] = []
    secret = "s3cret-Pa55"
    try:
        servers = start_redis_cluster(tmp_path, password=secret)
        found = cluster(f"redis://{addr(servers[0].port)}", password=secret)
        assert Counter(dict(f.labels)["role"] for f in found) == {"primary": 3, "replica": 3}
        assert {dict(f.labels)["shard"] for f in found} == SLOT_RANGES
        # An ACL user denied CLUSTER SHARDS: the seed answers CLUSTER NODES instead, with the same result.
        seed = servers[0].client()
        seed.execute_command("ACL", "SETUSER", "disco", "on", ">disco-pw", "-@all", "+cluster|nodes")
        via_nodes = cluster_discover([addr(servers[0].port)], username="disco", password="disco-pw", tls=None,
                                     timeout=TIMEOUT)
        assert via_nodes == found
        with pytest.raises(redis.exceptions.NoPermissionError):
            redis.Redis(port=servers[0].port, username="disco", password="disco-pw").execute_command("CLUSTER SHARDS")
        for attempt in (None, "wrong-" + secret):
            with pytest.raises(DiscoveryError) as err:
                cluster(addr(servers[0].port), password=attempt)
            assert "NOAUTH" in str(err.value) or "authentication" in str(err.value).lower()
            assert secret not in str(err.value)
    finally:
        for s in servers:
            s.kill()


# --- Redis Sentinel -----------------------------------------------------------------------

def test_sentinel_primary_and_replica(redis_sentinel: SentinelSetup,
                                      redis_factory: Callable[..., RedisServer]) -> None:
    s = redis_sentinel
    found = sentinel(f"redis://{addr(free_port())}", f"redis://{addr(s.sentinel_port)}", name=s.master_name)
    assert roles(found) == {addr(s.primary_port): (s.master_name, "primary"),
                            addr(s.replica_port): (s.master_name, "replica")}
    assert all(f.key == f.address for f in found)
    # the data nodes' password, sent to a sentinel with none configured: asked again without
    assert roles(sentinel(addr(s.sentinel_port), name=s.master_name, password="data-node-secret")) == roles(found)
    with pytest.raises(DiscoveryError, match="monitors no master named 'nosuch'"):
        sentinel(addr(s.sentinel_port), name="nosuch")
    with pytest.raises(DiscoveryError, match="not a sentinel"):
        sentinel(addr(redis_factory().port))


def test_sentinel_failover_is_followed(redis_sentinel: SentinelSetup) -> None:
    s = redis_sentinel
    before = roles(sentinel(addr(s.sentinel_port), name=s.master_name))
    primary = next(a for a, (_, role) in before.items() if role == "primary")
    replica = next(a for a, (_, role) in before.items() if role == "replica")
    client = redis.Redis(port=s.sentinel_port, protocol=2)
    assert client.execute_command("SENTINEL", "FAILOVER", s.master_name)
    expected = {replica: (s.master_name, "primary"), primary: (s.master_name, "replica")}
    wait_until(lambda: roles(sentinel(addr(s.sentinel_port), name=s.master_name)) == expected, timeout=30,
               message="discovery to show the sentinel failover")


def test_sentinel_without_a_name_finds_every_primary_and_its_replicas(
        redis_sentinel: SentinelSetup, redis_factory: Callable[..., RedisServer]) -> None:
    s = redis_sentinel
    # A second primary with its replica, monitored by the same sentinel for this test only.
    other = redis_factory(args=["--repl-diskless-sync-delay", "0"])
    other_replica = redis_factory(args=["--replicaof", "127.0.0.1", str(other.port)])
    wait_until(lambda: other_replica.info("replication")["master_link_status"] == "up", timeout=20,
               message="the second replica to sync")
    client = redis.Redis(port=s.sentinel_port, protocol=2, decode_responses=True)
    assert client.execute_command("SENTINEL", "MONITOR", "other", "127.0.0.1", other.port, 1)
    try:
        # mymaster as the named discovery sees it (a failover earlier in the module may have swapped it)
        expected = roles(sentinel(addr(s.sentinel_port), name=s.master_name))
        assert sorted(r for _, r in expected.values()) == ["primary", "replica"]
        expected |= {addr(other.port): ("other", "primary"), addr(other_replica.port): ("other", "replica")}
        wait_until(lambda: roles(sentinel(addr(s.sentinel_port), name=None)) == expected, timeout=20,
                   message="both monitored primaries and their replicas")
        assert all(f.key == f.address for f in sentinel(addr(s.sentinel_port), name=None))
    finally:
        client.execute_command("SENTINEL", "REMOVE", "other")


# --- malformed replies (a fake server; no process: the fast tier) --------------------------

Reply = bytes | Callable[[Session], None]


class FakeRedis(FakeServer):
    """Answers RESP commands from a table keyed by the first two words (upper-cased), then by the
    first word; anything else gets an unknown-command error."""

    session_class = RespSession

    def __init__(self, replies: dict[tuple[str, ...], Reply]) -> None:
        self.replies = replies
        self.commands: list[list[str]] = []
        super().__init__(name="fake-redis")

    def _handle(self, s: RespSession) -> None:
        while (cmd := s.read_command()) is not None:
            self.commands.append(cmd)
            words = [w.upper() for w in cmd]
            reply = self.replies.get(tuple(words[:2]), self.replies.get(tuple(words[:1]), b"-ERR unknown command\r\n"))
            if callable(reply):
                reply(s)
                return
            s.send(reply)


@pytest.fixture
def fake() -> Iterator[Callable[[dict[tuple[str, ...], Reply]], FakeRedis]]:
    made: list[FakeRedis] = []

    def make(replies: dict[tuple[str, ...], Reply]) -> FakeRedis:
        made.append(FakeRedis(replies))
        return made[-1]
    yield make
    for f in made:
        f.close()


def bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(*items: bytes) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


def send_and_close(data: bytes) -> Callable[[Session], None]:
    def act(s: Session) -> None:
        s.send(data)
        s.close()
    return act


NODES_TEXT = (
    "a1 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n"
    "b1 10.0.0.2:7000@17000,node-b.example master - 0 0 2 connected 5461-10922 [5461->-a1]\n"
    "c1 10.0.0.3:7000@17000 master,fail - 0 0 3 disconnected 10923-16383\n"
    "a2 10.0.0.4:7000@17000 slave a1 0 0 1 connected\n"
    "b2 :0@0 slave,noaddr b1 0 0 2 disconnected\n"
    "c2 10.0.0.6:7000@17000 slave,fail? c1 0 0 3 connected\n"
    "d1 10.0.0.7:7000@17000 handshake - 0 0 0 connected\n"
)


def test_cluster_nodes_fallback_and_exclusions(fake: Callable[..., FakeRedis]) -> None:
    server = fake({("CLUSTER", "SHARDS"): b"-ERR unknown subcommand 'shards'. Try CLUSTER HELP.\r\n",
                   ("CLUSTER", "NODES"): bulk(NODES_TEXT)})
    assert roles(cluster(addr(server.port))) == {
        "10.0.0.1:7000": ("0-5460", "primary"), "10.0.0.4:7000": ("0-5460", "replica"),
        "10.0.0.2:7000": ("5461-10922", "primary"),
        # its primary failed (excluded) but the replica, only suspected by the seed, stays in the shard
        "10.0.0.6:7000": ("10923-16383", "replica"),
    }
    assert [c[:2] for c in server.commands if c[0] == "CLUSTER"] == [["CLUSTER", "SHARDS"], ["CLUSTER", "NODES"]]
    # a lone node does not know its own ip: the seed's host stands for it (only for "myself")
    lone = "x1 :7001@17001 myself,master - 0 0 1 connected 0-16383\ny1 :7002@17002 slave x1 0 0 1 connected\n"
    assert roles(_from_nodes(lone, "seed.example")) == {"seed.example:7001": ("0-16383", "primary")}


@pytest.mark.parametrize("reply", [
    b":5\r\n",                                            # an integer, not a list of shards
    array(bulk("slots"), array(), bulk("nodes")),         # odd field/value list
    array(array(bulk("slots"), array(bulk("x"), bulk("y")), bulk("nodes"), array())),  # slots not numbers
    array(array(bulk("slots"), array(b":0\r\n", b":99\r\n"), bulk("nodes"),
                array(array(bulk("port"), bulk("99999"), bulk("ip"), bulk("10.0.0.1"), bulk("role"), bulk("master"))))),
], ids=["integer", "odd-pairs", "slots-not-numbers", "port-out-of-range"])
def test_cluster_malformed_shards_reply(fake: Callable[..., FakeRedis], reply: bytes) -> None:
    server = fake({("CLUSTER", "SHARDS"): reply})
    with pytest.raises(DiscoveryError, match=f"^127.0.0.1:{server.port}: malformed CLUSTER SHARDS reply"):
        cluster(addr(server.port))


@pytest.mark.parametrize("nodes", [bulk("hello world"), bulk("a1 10.0.0.1:7000@17000 master - 0 0 1 connected x-y"),
                                   b":1\r\n"], ids=["short-line", "bad-slot", "integer"])
def test_cluster_malformed_nodes_reply(fake: Callable[..., FakeRedis], nodes: bytes) -> None:
    server = fake({("CLUSTER", "SHARDS"): b"-ERR unknown subcommand\r\n", ("CLUSTER", "NODES"): nodes})
    with pytest.raises(DiscoveryError, match="malformed CLUSTER NODES reply"):
        cluster(addr(server.port))


@pytest.mark.parametrize("garbage", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b"\x16\x03\x01\x00\x05hello", b""],
                         ids=["http", "binary", "closed"])
def test_not_resp_is_a_discovery_error(fake: Callable[..., FakeRedis], garbage: bytes) -> None:
    server = fake({("CLUSTER",): send_and_close(garbage), ("SENTINEL",): send_and_close(garbage)})
    with pytest.raises(DiscoveryError, match=f"^127.0.0.1:{server.port}: "):
        cluster(addr(server.port))
    with pytest.raises(DiscoveryError, match=f"^127.0.0.1:{server.port}: "):
        sentinel(addr(server.port))


def test_a_silent_server_times_out(fake: Callable[..., FakeRedis]) -> None:
    server = fake({("CLUSTER",): lambda s: s.pause(30)})
    started = time.monotonic()
    with pytest.raises(DiscoveryError, match=f"^127.0.0.1:{server.port}: CLUSTER SHARDS: .*[Tt]imeout"):
        cluster_discover([addr(server.port)], username=None, password=None, tls=None, timeout=0.3)
    assert time.monotonic() - started < 5


def test_password_never_in_a_message(fake: Callable[..., FakeRedis]) -> None:
    secret = "hunter2-secret"
    server = fake({("AUTH",): f"-WRONGPASS invalid password {secret}\r\n".encode()})
    for call in (cluster, sentinel):
        with pytest.raises(DiscoveryError) as err:
            call(f"redis://{addr(server.port)}", password=secret)
        assert secret not in str(err.value) and "***" in str(err.value)
    for url in (f"redis://:{secret}@{addr(server.port)}", f"redis://:{secret}@127.0.0.1:notaport"):
        with pytest.raises(DiscoveryError, match="credentials in a seed URL are not allowed") as err:
            cluster(url)
        assert secret not in str(err.value)
    with pytest.raises(DiscoveryError, match="invalid port") as err:
        cluster(f"redis://127.0.0.1:{secret}")
    assert secret not in str(err.value)


def test_sentinel_slaves_fallback_and_unreachable_replicas(fake: Callable[..., FakeRedis]) -> None:
    def node(ip: str, port: int, flags: str) -> bytes:
        return array(bulk("name"), bulk("x"), bulk("ip"), bulk(ip), bulk("port"), bulk(str(port)),
                     bulk("flags"), bulk(flags))
    server = fake({("SENTINEL", "MASTER"): node("10.0.0.1", 6379, "master,s_down"),
                   ("SENTINEL", "REPLICAS"): b"-ERR Unknown sentinel subcommand 'replicas'\r\n",
                   ("SENTINEL", "SLAVES"): array(node("10.0.0.2", 6379, "slave"),
                                                 node("10.0.0.3", 6379, "slave,s_down"),
                                                 node("10.0.0.4", 6379, "slave,disconnected"),
                                                 node("10.0.0.1", 6379, "slave"))})
    # the primary stays even when down; replicas the sentinel cannot reach do not
    assert roles(sentinel(addr(server.port), name="x")) == {"10.0.0.1:6379": ("x", "primary"),
                                                            "10.0.0.2:6379": ("x", "replica")}


@pytest.mark.parametrize("master, replicas", [
    (array(bulk("ip"), bulk("10.0.0.1"), bulk("port")), array()),       # odd pairs
    (b":1\r\n", array()),                                               # not a list
    (array(bulk("ip"), bulk("10.0.0.1"), bulk("port"), bulk("abc")), array()),  # port not a number
    (array(bulk("ip"), bulk("10.0.0.1"), bulk("port"), bulk("6379")), bulk("nope")),  # replicas not a list
], ids=["odd-pairs", "integer", "bad-port", "replicas-not-list"])
def test_sentinel_malformed_reply(fake: Callable[..., FakeRedis], master: bytes, replicas: bytes) -> None:
    server = fake({("SENTINEL", "MASTER"): master, ("SENTINEL", "REPLICAS"): replicas})
    with pytest.raises(DiscoveryError, match="malformed SENTINEL reply"):
        sentinel(addr(server.port), name="x")


def test_cluster_over_tls(redis_factory: Callable[..., RedisServer], tls_files: TLSFiles) -> None:
    # A one-node cluster serving every slot: enough to exercise the TLS handshake and the TLS port.
    node = redis_factory(tls=tls_files, args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                              "--cluster-port", str(free_port()), "--tls-cluster", "yes"])
    assert node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    tls = TLSConfig(ca_file=tls_files.ca, cert_file=tls_files.client_cert, key_file=tls_files.client_key)
    found = cluster_discover([f"rediss://{addr(node.port)}"], username=None, password=None, tls=tls, timeout=TIMEOUT)
    # the node has met no other, so it reports an empty ip: the seed's host stands for it
    assert roles(found) == {addr(node.port): ("0-16383", "primary")}
    with pytest.raises(DiscoveryError, match=f"^127.0.0.1:{node.port}: .*certificate verify failed"):
        cluster_discover([f"rediss://{addr(node.port)}"], username=None, password=None,
                         tls=TLSConfig(ca_file=tls_files.other_ca), timeout=TIMEOUT)


def _master(name: str, ip: str, port: int) -> bytes:
    return array(bulk("name"), bulk(name), bulk("ip"), bulk(ip), bulk("port"), bulk(str(port)),
                 bulk("flags"), bulk("master"))


def _replica(ip: str, port: int) -> bytes:
    return array(bulk("name"), bulk(f"{ip}:{port}"), bulk("ip"), bulk(ip), bulk("port"), bulk(str(port)),
                 bulk("flags"), bulk("slave"))


def test_sentinel_masters_each_asked_for_its_replicas(fake: Callable[..., FakeRedis]) -> None:
    def replicas_of(s: Session) -> None:  # the reply depends on the name asked for
        name = server.commands[-1][2]
        s.send({"a": array(_replica("10.0.0.2", 6379)), "b": array(_replica("10.0.1.2", 6379))}[name])
        server._handle(s)  # a callable reply ends the session: carry on with the next command
    server = fake({("SENTINEL", "MASTERS"): array(_master("a", "10.0.0.1", 6379), _master("b", "10.0.1.1", 6379)),
                   ("SENTINEL", "REPLICAS"): replicas_of})
    assert roles(sentinel(addr(server.port), name=None)) == {
        "10.0.0.1:6379": ("a", "primary"), "10.0.0.2:6379": ("a", "replica"),
        "10.0.1.1:6379": ("b", "primary"), "10.0.1.2:6379": ("b", "replica")}
    assert [c[1:] for c in server.commands if c[0] == "SENTINEL"] == [["MASTERS"], ["REPLICAS", "a"],
                                                                     ["REPLICAS", "b"]]
    empty = fake({("SENTINEL", "MASTERS"): array()})
    with pytest.raises(DiscoveryError, match="the sentinel monitors no master$"):
        sentinel(addr(empty.port), name=None)
    nameless = fake({("SENTINEL", "MASTERS"): array(array(bulk("ip"), bulk("10.0.0.1"), bulk("port"), bulk("1")))})
    with pytest.raises(DiscoveryError, match="malformed SENTINEL reply: a master has no name"):
        sentinel(addr(nameless.port), name=None)


# --- what one seed's answer may cost --------------------------------------------------------

def test_more_than_max_nodes_is_refused(fake: Callable[..., FakeRedis]) -> None:
    from exporter.discovery import redis_cluster

    n = redis_cluster.MAX_NODES + 1
    nodes = "".join(f"n{i} 10.{i >> 16}.{(i >> 8) & 255}.{i & 255}:7000@17000 master - 0 0 1 connected\n"
                    for i in range(n))
    server = fake({("CLUSTER", "SHARDS"): b"-ERR unknown subcommand\r\n", ("CLUSTER", "NODES"): bulk(nodes)})
    with pytest.raises(DiscoveryError, match=f"CLUSTER NODES lists {n} nodes, more than 10000$"):
        cluster(addr(server.port))
    # exactly the limit is fine
    server.replies[("CLUSTER", "NODES")] = bulk(nodes.split("\n", 1)[1])
    assert len(cluster(addr(server.port))) == redis_cluster.MAX_NODES
    masters = fake({("SENTINEL", "MASTERS"): array(*(_master(f"m{i}", "10.0.0.1", 1 + i % 60000)
                                                      for i in range(n)))})
    with pytest.raises(DiscoveryError, match=f"lists {n} masters, more than 10000$"):
        sentinel(addr(masters.port), name=None)
    assert [c[1] for c in masters.commands if c[0] == "SENTINEL"] == ["MASTERS"]  # no replica asked for


def test_a_reply_larger_than_the_cap_is_cut_off(fake: Callable[..., FakeRedis]) -> None:
    from exporter.discovery import redis_cluster

    cap = redis_cluster.MAX_REPLY_BYTES
    chunk = b"x" * 2**20

    def endless_bulk(s: Session) -> None:  # declares 4 GB, then sends up to four times the cap
        s.send(b"$4000000000\r\n")
        for _ in range(4 * cap // len(chunk)):
            s.send(chunk)
        s.pause(30)
    server = fake({("CLUSTER",): endless_bulk})
    started = time.monotonic()
    with pytest.raises(DiscoveryError, match=f"^127.0.0.1:{server.port}: CLUSTER SHARDS: the answer is larger "
                                             "than 16 MiB$"):
        cluster(addr(server.port))
    assert time.monotonic() - started < 10
    # Cut off at the cap: what the fake got out is the cap plus what the kernel's buffers held.
    assert server.max_sent < 2 * cap


def test_a_trickling_seed_is_cut_off_at_its_deadline(fake: Callable[..., FakeRedis]) -> None:
    def trickle(s: Session) -> None:  # every byte well within the timeout, for 5 s (past the deadline)
        s.send(b"$100000\r\n")
        for _ in range(250):
            s.send(b"x")
            s.pause(0.02)
        s.pause(30)
    server = fake({("SENTINEL",): trickle})
    started = time.monotonic()
    with pytest.raises(DiscoveryError, match="no complete answer within 10 timeouts"):
        sentinel_discover([addr(server.port)], master_name="m", username=None, password=None, tls=None,
                          timeout=0.1)
    assert time.monotonic() - started < 1 + 4  # the deadline (10 x 0.1 s) and slack for a busy machine
