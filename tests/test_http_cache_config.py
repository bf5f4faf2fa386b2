"""Config for http_cache targets: what is accepted, and the message each mistake gets."""

from __future__ import annotations

import pytest

from exporter.config import ConfigError, build_config
from exporter.targets import Bypass, HttpCacheTarget, ProbeURL


def target(**entry: object) -> HttpCacheTarget:
    t = build_config({"targets": [{"name": "edge", "type": "http_cache", **entry}]}, "f.yml").config.targets[0]
    assert isinstance(t, HttpCacheTarget)
    return t


def problems(**entry: object) -> str:
    with pytest.raises(ConfigError) as info:
        build_config({"targets": [{"name": "edge", "type": "http_cache", **entry}]}, "f.yml")
    return str(info.value)


def test_defaults() -> None:
    t = target(url="http://gw.internal/api/health?full=1")
    assert t.urls == (ProbeURL("http://gw.internal/api/health?full=1", "http", "gw.internal", 80,
                               "/api/health?full=1"),)
    assert (t.method, t.error_statuses, t.bypass, t.max_redirects) == ("GET", ((500, 599),), None, 0)
    assert t.interval == 30.0  # its own cadence, not the stores' global interval
    assert t.request_timeout == 5.0 and t.timeout == 6.0  # the poll covers every request + 1 s
    assert t.is_error(503) and not t.is_error(404)


def test_url_plus_paths_and_every_option() -> None:
    t = target(url="https://cdn.example.com/", paths=["/a", "/b?x=1"], method="HEAD", interval="1m", timeout="2s",
               headers={"Host": "api.example.com", "X-Probe": 1}, error_statuses=["5xx", 404, "429-429"],
               bypass={"origin_url": "http://10.0.0.5:8080/base/"}, max_redirects=3)
    assert [u.url for u in t.urls] == ["https://cdn.example.com/a", "https://cdn.example.com/b?x=1"]
    assert t.urls[0].port == 443
    assert t.headers == (("Host", "api.example.com"), ("X-Probe", "1"))
    assert t.error_statuses == ((404, 404), (429, 429), (500, 599))
    assert t.bypass == Bypass(origin=ProbeURL("http://10.0.0.5:8080/base/", "http", "10.0.0.5", 8080, "/base/"))
    assert t.timeout == 2.0 * 2 * 2 + 1  # 2 URLs, each possibly with a bypass request
    assert t.address == "https://cdn.example.com/a (+1 more)"


@pytest.mark.parametrize("entry,message", [
    ({}, "targets[0]: set either url (optionally with paths) or urls"),
    ({"url": "http://a/", "urls": ["http://b/"]}, "set either url"),
    ({"urls": []}, "targets[0].urls: expected a non-empty list of URLs"),
    ({"urls": ["http://a/", 5]}, "targets[0].urls[1]: expected a URL, got a number"),
    ({"url": "http://a/", "paths": ["x"]}, "targets[0].paths[0]: a path must start with /"),
    ({"urls": ["http://a/"], "paths": ["/x"]}, "paths go with a single url"),
    ({"url": "ftp://a/"}, "expected an http:// or https:// URL"),
    ({"url": "http://a/b c"}, "must not contain spaces"),
    ({"url": "http://user:s3cret@a/"}, "credentials in the URL are not allowed"),
    ({"url": "http://a:99999/"}, "port must be a number from 1 to 65535"),
    ({"urls": ["http://a/", "http://a/"]}, "the same URL is listed twice"),
    ({"urls": [f"http://a/{i}" for i in range(51)]}, "at most 50 per target"),
    ({"url": "http://a/", "method": "POST"}, "targets[0].method: must be one of: GET, HEAD"),
    ({"url": "http://a/", "error_statuses": ["6xx"]}, "is not a status"),
    ({"url": "http://a/", "error_statuses": ["504-500"]}, "is not a status"),
    ({"url": "http://a/", "error_statuses": []}, "list at least one status"),
    ({"url": "http://a/", "headers": {"Authorization": "Bearer x"}}, "secrets do not belong in the config"),
    ({"url": "http://a/", "headers": {"Bad Name": "x"}}, "not a valid header name"),
    ({"url": "http://a/", "headers": {"X-A": "a\r\nX-Injected: 1"}}, "one line"),
    ({"url": "http://a/", "bypass": {"query_param": "cb", "header": {"X": "1"}}}, "choose one of"),
    ({"url": "http://a/", "bypass": {"query_param": "c&b"}}, "plain parameter name"),
    ({"url": "http://a/", "bypass": {"header": {"X-A": "1", "X-B": "2"}}}, "expected one header"),
    ({"url": "http://a/", "bypass": {"origin_url": "backend:8080"}}, "expected an http:// or https:// URL"),
    ({"url": "http://a/", "bypass": {"cache_bust": True}}, "unknown key"),
    ({"url": "http://a/", "max_redirects": 11}, "from 0 to 10"),
    ({"url": "http://a/", "memory_limit": "1GiB"}, "does not apply to http_cache targets"),
    ({"url": "http://a/", "tls": {"insecure_skip_verify": True}}, "TLS settings need an https:// URL"),
    ({"url": "http://a/", "interval": "10s", "timeout": "20s"}, "must not exceed interval"),
])
def test_mistakes_are_named_with_their_path(entry: dict, message: str) -> None:
    text = problems(**entry)
    assert message in text
    assert text.startswith("f.yml: targets[0]")
    assert "s3cret" not in text
