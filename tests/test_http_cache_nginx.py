"""The http_cache probe against a real nginx caching reverse proxy.

The upstream is switched between healthy (200) and failing (503). With ``proxy_cache_valid any
1m`` nginx stores the 503 and keeps serving it after the upstream recovers: the probe must
report the cached error, and with a bypass the stale error after recovery. With a config that
caches only 200 it must report no cached error at all.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest
from conftest import fast_global, need, wait_until
from nginx import caching_proxy
from promlab import Prometheus, load_build_rules

from exporter.config import build_config
from exporter.sources import http_cache
from exporter.sources.http_cache import HttpCacheSource
from exporter.targets import HttpCacheTarget

CACHE_ANY = "proxy_cache_valid any 1m;"
CACHE_200 = "proxy_cache_valid 200 1m;"


def probe_target(url: str | list[str], **extra: object) -> HttpCacheTarget:
    """A target for one URL, or (given a list) for several."""
    entry = {"name": "edge", "type": "http_cache", "urls" if isinstance(url, list) else "url": url,
             "timeout": "2s", **extra}
    target = build_config({"targets": [entry]}, "test").config.targets[0]
    assert isinstance(target, HttpCacheTarget)
    return target


def probe_source(url: str | list[str], **extra: object) -> closing[HttpCacheSource]:
    """An HttpCacheSource for ``probe_target(url, **extra)``, closed when the ``with`` ends."""
    return closing(HttpCacheSource(probe_target(url, **extra)))


def detection(seen: dict[str, float]) -> str:
    """The one state http_cache_detection marks 1 in a probe's samples."""
    states = [k.split(".", 1)[1] for k, v in seen.items() if k.startswith("detection.") and v == 1]
    assert len(states) == 1 and len([k for k in seen if k.startswith("detection.")]) == 4, seen
    return states[0]


def probe(source: HttpCacheSource) -> dict[str, float]:
    """One probe round; the samples of the first URL as {family: value} (+ info labels)."""
    reading = source.poll(time.monotonic() + 10)
    out: dict[str, float] = {}
    for s in reading.samples:
        out[s.family] = s.value
        if s.family == "http_cache_detection":
            out[f"detection.{dict(s.labels)['state']}"] = s.value
        if s.family == "http_cache_response_info":
            out.update({f"info.{k}": v for k, v in s.labels if k != "url"})  # type: ignore[misc]
    return out


@pytest.fixture
def proxy_any(tmp_path: Path):
    with caching_proxy(tmp_path / "nginx", CACHE_ANY) as pair:
        yield pair


@pytest.mark.servers
def test_cached_503_then_stale_error_after_recovery(proxy_any) -> None:
    nginx, upstream = proxy_any
    with probe_source(f"{nginx.url}/api/users", bypass={"query_param": "cache_bust"}) as source:
        upstream.healthy = False
        first = probe(source)
        assert first["http_cache_response_status_code"] == 503
        assert first["info.cache_status"] == "miss"
        assert first["http_cache_response_from_cache"] == 0
        assert first["http_cache_error_from_cache"] == 0
        assert "http_cache_bypass_status_code" not in first  # a miss passed the origin's error on: no bypass

        second = probe(source)  # nginx now serves the stored 503
        assert second["http_cache_response_status_code"] == 503
        assert (second["info.indicator"], second["info.cache_status"]) == ("x-cache-status", "hit")
        assert second["http_cache_error_from_cache"] == 1
        assert second["http_cache_bypass_status_code"] == 503  # the origin still fails: an outage
        assert second["http_cache_stale_error_after_recovery"] == 0
        assert second["http_cache_stale_errors_after_recovery_total"] == 0

        upstream.healthy = True
        third = probe(source)  # the upstream recovered; the cache still has the 503 for a minute
        assert third["http_cache_response_status_code"] == 503
        assert third["http_cache_error_from_cache"] == 1
        assert third["http_cache_bypass_status_code"] == 200
        assert third["http_cache_stale_error_after_recovery"] == 1
        assert third["http_cache_stale_errors_after_recovery_total"] == 1
        assert detection(third) == "header"
        assert third["http_cache_errors_from_cache_total"] == 2
        assert third["http_cache_responses_from_cache_total"] == 2
        assert third["http_cache_hit_ratio"] == pytest.approx(2 / 3)
        # The bypass went to the origin with a unique key, so the cached entry was left alone.
        assert any("cache_bust=" in p for p in upstream.requests)
        assert probe(source)["http_cache_response_status_code"] == 503


@pytest.mark.servers
@pytest.mark.parametrize("bypass", ["header", "origin_url"])
def test_other_bypasses_confirm_the_stale_error(proxy_any, bypass: str) -> None:
    nginx, upstream = proxy_any
    config = {"header": {"header": {"X-Cache-Bypass": "1"}},
              "origin_url": {"origin_url": f"http://127.0.0.1:{upstream.port}"}}[bypass]
    with probe_source(f"{nginx.url}/api/{bypass}", bypass=config) as source:
        upstream.healthy = False
        probe(source)
        upstream.healthy = True
        seen = probe(source)
        assert seen["http_cache_error_from_cache"] == 1
        assert seen["http_cache_bypass_status_code"] == 200
        assert seen["http_cache_stale_error_after_recovery"] == 1


@pytest.mark.servers
def test_caching_only_200_reports_no_cached_error(tmp_path: Path) -> None:
    with caching_proxy(tmp_path / "nginx", CACHE_200) as (nginx, upstream):
        with probe_source(f"{nginx.url}/api/items", bypass={"query_param": "cb"}) as source:
            upstream.healthy = False
            for _ in range(3):
                seen = probe(source)
                assert seen["http_cache_response_status_code"] == 503
                assert seen["http_cache_response_from_cache"] == 0
                assert seen["http_cache_error_from_cache"] == 0
                assert seen["http_cache_stale_error_after_recovery"] == 0
            upstream.healthy = True
            assert probe(source)["http_cache_response_from_cache"] == 0  # first 200: a miss, stored
            cached = probe(source)
            assert cached["http_cache_response_status_code"] == 200
            assert cached["http_cache_response_from_cache"] == 1
            assert cached["http_cache_error_from_cache"] == 0
            assert cached["http_cache_stale_error_after_recovery"] == 0
            assert cached["http_cache_errors_from_cache_total"] == 0


@pytest.mark.servers
def test_without_always_the_header_is_missing_on_errors_and_the_bypass_still_tells(tmp_path: Path) -> None:
    """`add_header` without `always` skips 5xx responses: no header says "cached", the bypass does."""
    with caching_proxy(tmp_path / "nginx", CACHE_ANY, always=False) as (nginx, upstream):
        with probe_source(f"{nginx.url}/api/quiet", bypass={"query_param": "cb"}) as source:
            upstream.healthy = False
            probe(source)
            upstream.healthy = True
            seen = probe(source)
            assert seen["http_cache_response_status_code"] == 503
            assert "http_cache_response_from_cache" not in seen  # unknown, not "no"
            assert seen["info.indicator"] == "none"
            assert "http_cache_error_from_cache" not in seen  # no header vouches for it: not 0 either
            assert seen["http_cache_stale_error_after_recovery"] == 1
            assert seen["http_cache_stale_errors_after_recovery_total"] == 1
            assert detection(seen) == "bypass"


@pytest.mark.servers
def test_redirect_loop_is_a_counted_failure(proxy_any) -> None:
    nginx, _ = proxy_any
    with probe_source([f"{nginx.url}/loop", f"{nginx.url}/ok"], max_redirects=5) as source:
        reading = source.poll(time.monotonic() + 10)
        values = {(s.family, dict(s.labels).get("url"), dict(s.labels).get("reason")): s.value
                  for s in reading.samples}
        loop, ok = f"{nginx.url}/loop", f"{nginx.url}/ok"
        assert values[("http_cache_probe_success", loop, None)] == 0
        assert values[("http_cache_probe_failures_total", loop, "redirect")] == 1
        assert values[("http_cache_probe_success", ok, None)] == 1


def test_daemon_exports_the_verdicts_and_promtool_accepts_them(proxy_any, exporter_factory) -> None:
    nginx, upstream = proxy_any
    upstream.healthy = False
    ep = exporter_factory({"global": fast_global(), "targets": [{
        "name": "edge", "type": "http_cache", "url": nginx.url, "paths": ["/a", "/b"], "interval": "0.5s",
        "timeout": "0.4s", "bypass": {"query_param": "cb"}, "labels": {"team": "api"}}]})
    ep.wait_polls("edge", 2)
    upstream.healthy = True

    def stale() -> bool:
        m = ep.metrics()
        return all(m.value("http_cache_stale_error_after_recovery", target="edge", url=f"{nginx.url}{p}") == 1
                   for p in ("/a", "/b"))
    wait_until(stale, timeout=15, message="stale error after recovery on both URLs")
    m = ep.metrics()
    assert m.value("http_cache_up", target="edge") == 1
    assert m.value("cache_up", target="edge", store="http_cache") == 1
    assert m.value("http_cache_error_from_cache", target="edge", url=f"{nginx.url}/a", team="api") == 1
    assert m.value("http_cache_bypass_status_code", target="edge", url=f"{nginx.url}/b") == 200
    target = ep.target("edge")
    assert target["up"] is True
    _, body, _ = ep.get("/metrics")
    check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


# --- short TTLs: the stale error is counted, a microcache's is not --------------------------------

@pytest.mark.servers
def test_a_short_ttl_stale_error_is_counted(tmp_path: Path) -> None:
    """A 5 s negative cache (the issue's 1 min at 1/12): the one probe that sees the stale error
    counts it, after looking again STALE_CONFIRM_DELAY later."""
    with caching_proxy(tmp_path / "nginx", "proxy_cache_valid any 5s;") as (nginx, upstream):
        with probe_source(f"{nginx.url}/api/short", bypass={"query_param": "cb"}) as source:
            upstream.healthy = False
            assert probe(source)["http_cache_stale_errors_after_recovery_total"] == 0  # the miss that stores
            upstream.healthy = True
            started = time.monotonic()
            seen = probe(source)
            assert time.monotonic() - started >= http_cache.STALE_CONFIRM_DELAY  # it did look again
            assert seen["http_cache_response_status_code"] == 503
            assert seen["http_cache_stale_error_after_recovery"] == 1
            assert seen["http_cache_stale_errors_after_recovery_total"] == 1
            time.sleep(5)  # the entry expires: nothing more is counted
            after = probe(source)
            assert after["http_cache_response_status_code"] == 200
            assert after["http_cache_stale_errors_after_recovery_total"] == 1


@pytest.mark.servers
def test_a_microcache_stale_error_is_not_counted(tmp_path: Path) -> None:
    """``proxy_cache_valid any 1s``: the probe right after the recovery may get the cached 503 and a
    good bypass; the second look, STALE_CONFIRM_DELAY later, gets the origin's 200."""
    with caching_proxy(tmp_path / "nginx", "proxy_cache_valid any 1s;") as (nginx, upstream):
        with probe_source(f"{nginx.url}/api/micro", bypass={"query_param": "cb"}) as source:
            for _ in range(5):  # the stored 503 must still be there for the second probe
                upstream.healthy = False
                probe(source)
                upstream.healthy = True
                seen = probe(source)
                if seen.get("http_cache_bypass_status_code") == 200:
                    break
                time.sleep(1.1)
            else:
                pytest.fail("never caught the microcached 503 after the recovery")
            assert seen["http_cache_response_status_code"] == 503 and seen["info.cache_status"] == "hit"
            assert seen["http_cache_stale_error_after_recovery"] == 0
            assert seen["http_cache_stale_errors_after_recovery_total"] == 0


# --- no cache header, no bypass: "cannot tell", or the repeated Date ------------------------------

@pytest.mark.servers
def test_no_header_and_no_bypass_is_cannot_tell_not_zero(tmp_path: Path) -> None:
    with caching_proxy(tmp_path / "nginx", CACHE_ANY, always=False) as (nginx, upstream):
        with probe_source(f"{nginx.url}/api/fine") as source:
            ok = probe(source)
            assert ok["http_cache_response_status_code"] == 200
            assert ok["http_cache_error_from_cache"] == 0  # not an error: that much is known
            assert detection(ok) == "header"  # add_header without `always` marks only good answers
        with probe_source(f"{nginx.url}/api/opaque") as source:
            upstream.healthy = False
            for _ in range(2):
                seen = probe(source)
                assert seen["http_cache_response_status_code"] == 503
                assert "http_cache_error_from_cache" not in seen
                assert "http_cache_response_from_cache" not in seen
                assert detection(seen) == "unknown"


@pytest.mark.servers
def test_the_origin_date_repeated_across_probes_tells_a_stored_copy(tmp_path: Path) -> None:
    """A cache that keeps the origin's Date (nginx with ``proxy_pass_header Date``, as CDNs do) and
    adds no cache header: the same Date 2 s later is a stored response."""
    keep_date = "proxy_pass_header Date;"
    with caching_proxy(tmp_path / "nginx", f"{CACHE_ANY} {keep_date}", always=False) as (nginx, upstream):
        with probe_source(f"{nginx.url}/api/dated") as source:
            upstream.healthy = False
            first = probe(source)
            assert detection(first) == "unknown" and "http_cache_error_from_cache" not in first
            time.sleep(http_cache.DATE_REPEAT_MIN_GAP + 0.1)
            upstream.healthy = True
            seen = probe(source)
            assert seen["http_cache_response_status_code"] == 503
            assert detection(seen) == "date"
            assert (seen["info.indicator"], seen["info.cache_status"]) == ("date", "hit")
            assert seen["http_cache_error_from_cache"] == 1
            assert seen["http_cache_errors_from_cache_total"] == 1

    # The look-alike: an origin that is down and answers every probe itself stamps a new Date.
    with caching_proxy(tmp_path / "nginx200", f"{CACHE_200} {keep_date}", always=False) as (nginx, upstream):
        with probe_source(f"{nginx.url}/api/dated") as source:
            upstream.healthy = False
            probe(source)
            time.sleep(http_cache.DATE_REPEAT_MIN_GAP + 0.1)
            seen = probe(source)
            assert seen["http_cache_response_status_code"] == 503
            assert detection(seen) == "unknown"
            assert "http_cache_error_from_cache" not in seen


# --- the alert end to end, every timer scaled together --------------------------------------------

# 30 s probes -> 6 s, 15 s scrapes -> 3 s (promlab evaluates the rules at each scrape), the rules' 3 min
# window -> 36 s, the 1 min TTL -> 12 s. STALE_CONFIRM_DELAY (2.2 s) is not scaled: it is measured
# against nginx's one-second microcache granularity, not against the alerting timers.
SCALE = 1 / 5


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_a_one_minute_cache_of_a_503_pages_and_caching_only_200_stays_silent(tmp_path: Path,
                                                                               exporter_factory) -> None:
    """The issue's case at 1/5 of real time: nginx caches a 503 for a minute, the origin recovers
    right after the error is stored, and the stale error lasts under a minute (12 s here) -- shorter
    than any sustained-state ``for``. The probe at the default interval counts it while users still
    get it, and CacheHTTPStaleErrorAfterRecovery fires; the same outage behind a cache that keeps only
    200s never pages."""
    need(shutil.which("prometheus") is not None, "prometheus not installed")
    rules_module = load_build_rules()
    ttl = round(60 * SCALE)
    with caching_proxy(tmp_path / "cached", f"proxy_cache_valid any {ttl}s;") as (cached, cached_up), \
            caching_proxy(tmp_path / "good", f"proxy_cache_valid 200 {ttl}s;") as (good, good_up):
        cached_up.healthy = good_up.healthy = False
        interval = rules_module.duration(30 * SCALE)  # the default probe interval, scaled
        ep = exporter_factory({"targets": [
            {"name": name, "type": "http_cache", "url": f"{proxy.url}/v1/quotes", "interval": interval,
             "timeout": "1s", "bypass": {"query_param": "cb"}}
            for name, proxy in (("cached", cached), ("good", good))]})
        rules = tmp_path / "rules.yml"
        rules.write_text(rules_module.render(scale=SCALE))
        prom = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{ep.port}"], [rules],
                          scrape_interval=rules_module.duration(15 * SCALE))
        try:
            prom.wait_ready()
            # increase() needs a sample before the rise: Prometheus must hold the counter at 0 first (on a
            # busy machine its first scrape can come after the first probes).
            wait_until(lambda: prom.result('http_cache_stale_errors_after_recovery_total{target="cached"} == 0'),
                       timeout=30, interval=0.5, message="Prometheus to hold the counter at 0")
            # Recover right after nginx stored a fresh 503 (a fetch of the plain path, not a bypass probe),
            # so the stale error lasts nearly the whole TTL whenever the wait above ended.
            fetched = cached_up.requests.count("/v1/quotes")
            wait_until(lambda: cached_up.requests.count("/v1/quotes") > fetched and good_up.requests,
                       timeout=4 * ttl, interval=0.05, message="a fresh 503 stored")
            cached_up.healthy = good_up.healthy = True  # the 503 is stored; from now on it is stale
            recovered = time.monotonic()
            url = f"{cached.url}/v1/quotes"

            def counted() -> bool:
                return ep.metrics().value("http_cache_stale_errors_after_recovery_total",
                                          target="cached", url=url) == 1
            wait_until(counted, timeout=4 * 30 * SCALE, interval=0.2, message="the stale error counted")
            counted_after = time.monotonic() - recovered
            assert _status(url) == 503, "counted only after the cache stopped serving the error"

            def firing() -> list[dict]:
                return prom.result('ALERTS{alertname="CacheHTTPStaleErrorAfterRecovery", alertstate="firing"}')
            wait_until(firing, timeout=2 * 60 * SCALE + 15, interval=0.5, message="the critical alert")
            fired_after = time.monotonic() - recovered
            assert {a["metric"]["target"] for a in firing()} == {"cached"}
            wait_until(lambda: _status(url) == 200, timeout=2 * ttl, interval=0.5, message="the entry expiring")
            print(f"scale {SCALE:g}: a {ttl} s stale error counted {counted_after:.1f} s and paged "
                  f"{fired_after:.1f} s after the recovery")

            # Silent: the 200-only cache never served the error, so nothing counted or fired for it.
            good_url = f"{good.url}/v1/quotes"
            assert ep.metrics().value("http_cache_stale_errors_after_recovery_total", target="good",
                                      url=good_url) == 0
            ever = prom.result('max_over_time(ALERTS{target="good"}[5m])')
            assert ever == []
        finally:
            prom.stop()


@pytest.mark.servers
def test_the_second_look_waits_once_per_round_for_every_stale_url(proxy_any) -> None:
    nginx, upstream = proxy_any
    urls = [f"{nginx.url}/api/many/{i}" for i in range(4)]
    with probe_source(urls, bypass={"query_param": "cb"}) as source:
        upstream.healthy = False
        source.poll(time.monotonic() + 30)
        upstream.healthy = True
        started = time.monotonic()
        reading = source.poll(time.monotonic() + 30)
        took = time.monotonic() - started
        assert http_cache.STALE_CONFIRM_DELAY <= took < 2 * http_cache.STALE_CONFIRM_DELAY  # not once per URL
        totals = {dict(s.labels)["url"]: s.value for s in reading.samples
                  if s.family == "http_cache_stale_errors_after_recovery_total"}
        assert totals == dict.fromkeys(urls, 1)
        gauges = [s.value for s in reading.samples if s.family == "http_cache_stale_error_after_recovery"]
        assert gauges == [1, 1, 1, 1]
