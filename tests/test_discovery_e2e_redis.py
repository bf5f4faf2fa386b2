"""Redis Cluster and Sentinel discovery in a running exporter: the templates, the kinds' modules
and the runner together, on the real cluster and sentinel of tests/conftest.py.

The kinds, and the ``redis_cluster``/``redis_sentinel`` fixtures, come from the Redis discovery
branch (exporter/discovery/redis_cluster.py, redis_sentinel.py): without them these tests skip
locally and fail in CI (``need``)."""

from __future__ import annotations

import conftest
import pytest
from conftest import need, wait_until

from exporter.discovery import registry

pytestmark = pytest.mark.servers


@pytest.fixture(autouse=True)
def _kinds_present() -> None:
    need(registry.available("cluster") and registry.available("sentinel") and hasattr(conftest, "redis_cluster"),
         "the Redis Cluster and Sentinel discovery kinds and their fixtures")


def _by_role(ep, template: str) -> dict[str, str]:
    return {t["name"]: t["labels"].get("discovered_role") for t in ep.targets() if t["discovered_by"] == template}


def test_a_cluster_template_polls_every_node_and_follows_a_failover(request, exporter_factory):
    ports = request.getfixturevalue("redis_cluster")
    ep = exporter_factory({"global": {"interval": "0.5s", "timeout": "0.4s"}, "targets": [
        {"name": "c", "type": "redis", "url": f"redis://127.0.0.1:{ports[0]}", "discover": "cluster",
         "refresh_interval": "0.3s"}]})
    names = {f"c/127.0.0.1:{p}" for p in ports}
    wait_until(lambda: set(_by_role(ep, "c")) == names
               and all(ep.metrics().value("cache_up", target=n) == 1 for n in names), timeout=20,
               message="every cluster node a target, up")
    roles = _by_role(ep, "c")
    assert sorted(roles.values()) == ["primary"] * 3 + ["replica"] * 3
    m = ep.metrics()
    for name, role in roles.items():
        (sample,) = m.find("cache_up", target=name)
        assert sample[1]["discovered_role"] == role and sample[1]["shard"]
    replica = next(n for n, r in roles.items() if r == "replica")
    import redis

    redis.Redis(port=int(replica.rsplit(":", 1)[1])).execute_command("CLUSTER", "FAILOVER")
    wait_until(lambda: _by_role(ep, "c").get(replica) == "primary", timeout=20, message="the promoted replica")
    assert sorted(_by_role(ep, "c").values()) == ["primary"] * 3 + ["replica"] * 3


def test_a_sentinel_template(request, exporter_factory):
    setup = request.getfixturevalue("redis_sentinel")
    ep = exporter_factory({"global": {"interval": "0.5s", "timeout": "0.4s"}, "targets": [
        {"name": "s", "type": "redis", "url": f"redis://127.0.0.1:{setup.sentinel_port}", "discover": "sentinel",
         "master_name": setup.master_name, "refresh_interval": "0.3s"},
        # no master_name: every primary the sentinel monitors (here the one) and its replicas
        {"name": "all", "type": "redis", "url": f"redis://127.0.0.1:{setup.sentinel_port}", "discover": "sentinel",
         "refresh_interval": "0.3s"}]})
    wait_until(lambda: len(_by_role(ep, "s")) == 2 and len(_by_role(ep, "all")) == 2, timeout=20,
               message="primary and replica, from both templates")
    roles = _by_role(ep, "s")
    assert sorted(roles.values()) == ["primary", "replica"]
    assert {n.replace("all/", "s/", 1): r for n, r in _by_role(ep, "all").items()} == roles
    assert {t["labels"].get("master_name") for t in ep.targets() if t["discovered_by"] == "all"} == {setup.master_name}
    for template in ("s", "all"):
        (sample,) = ep.metrics().find("cache_exporter_discovery_targets", template=template, kind="sentinel")
        assert sample[2] == 2
