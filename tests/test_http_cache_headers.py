"""What caching headers say: RFC 9211 Cache-Status (its own examples), vendor headers, Age, TTL."""

from __future__ import annotations

import pytest

from exporter.sources.http_cache import (
    CacheStatusMember,
    Response,
    URLState,
    _repeated_date,
    classify,
    parse_cache_status,
)

# RFC 9211 section 3, each example with what it must mean.
RFC_9211_EXAMPLES = [
    # (field lines, status, from cache?, layer, cache_status, ttl)
    (["ExampleCache; hit"], 200, "hit", "ExampleCache", "hit", None),
    (["ExampleCache; hit; ttl=376"], 200, "hit", "ExampleCache", "hit", 376),
    (["ExampleCache; hit; ttl=-412"], 200, "hit", "ExampleCache", "stale", -412),
    (["ExampleCache; fwd=uri-miss"], 200, "miss", "ExampleCache", "miss", None),
    # a miss that validated on the origin: the body is the cache's, revalidated (304 upstream)
    (["ExampleCache; fwd=stale; fwd-status=304"], 200, "hit", "ExampleCache", "revalidated", None),
    (["ExampleCache; fwd=uri-miss; collapsed"], 200, "miss", "ExampleCache", "miss", None),
    (["ExampleCache; fwd=uri-miss; collapsed=?0"], 200, "miss", "ExampleCache", "miss", None),
    # two layers, both hits: the one nearest the user (last) served it
    (['OriginCache; hit; ttl=1100, "CDN Company Here"; hit; ttl=545'], 200, "hit", "CDN Company Here", "hit", 545),
    # three field lines, combined into one list: the reverse proxy served it
    (["ReverseProxyCache; hit", "ForwardProxyCache; fwd=uri-miss; collapsed; stored",
      "BrowserCache; fwd=uri-miss"], 200, "hit", "ReverseProxyCache", "hit", None),
]


@pytest.mark.parametrize("lines,status,state,layer,cache_status,ttl", RFC_9211_EXAMPLES)
def test_rfc9211_examples(lines: list[str], status: int, state: str, layer: str, cache_status: str,
                          ttl: int | None) -> None:
    v = classify([("Cache-Status", line) for line in lines], status)
    assert (v.state, v.indicator, v.layer, v.cache_status) == (state, "cache-status", layer, cache_status)
    assert v.ttl == ttl
    assert v.malformed == []


def test_parse_keeps_every_rfc_parameter() -> None:
    members = parse_cache_status(['Edge; fwd=vary-miss; fwd-status=503; stored; key="/a?b"; detail=abc; ttl=30'])
    assert members == [CacheStatusMember(cache="Edge", hit=False, fwd="vary-miss", fwd_status=503, ttl=30,
                                         stored=True, collapsed=False, key="/a?b", detail="abc")]


def test_an_error_the_cache_forwarded_and_stored_is_a_miss_that_was_stored() -> None:
    v = classify([("Cache-Status", "Edge; fwd=uri-miss; fwd-status=503; stored")], 503)
    assert (v.state, v.stored) == ("miss", True)


def test_stale_if_error_serves_the_stored_200_while_the_origin_fails() -> None:
    # The cache went forward, got a 503 and answered with its stored 200: served from the cache.
    v = classify([("Cache-Status", "Edge; fwd=stale; fwd-status=503; ttl=-30")], 200)
    assert (v.state, v.cache_status, v.ttl) == ("hit", "stale", -30)


@pytest.mark.parametrize("value", ["hit;;", 'Edge; hit, "unterminated', "Edge; ttl=1.5.5", "Edge; hit,", "Édge; hit"])
def test_invalid_cache_status_is_ignored_as_a_whole_and_counted(value: str) -> None:
    v = classify([("Cache-Status", value), ("X-Cache-Status", "MISS")], 503)
    assert v.malformed == ["cache-status"]
    assert (v.state, v.indicator) == ("miss", "x-cache-status")  # the other headers still count


def test_wrongly_typed_parameters_are_absent() -> None:
    # hit must be a boolean and ttl an integer (RFC 9211 2.1, 2.4): otherwise they are absent.
    v = classify([("Cache-Status", 'Edge; hit="yes"; ttl=1.5')], 200)
    assert (v.state, v.ttl) == ("miss", None)


@pytest.mark.parametrize("header,value,state,cache_status", [
    ("X-Cache-Status", "HIT", "hit", "hit"),  # nginx $upstream_cache_status
    ("X-Cache-Status", "STALE", "hit", "stale"),
    ("X-Cache-Status", "UPDATING", "hit", "updating"),
    ("X-Cache-Status", "REVALIDATED", "hit", "revalidated"),
    ("X-Cache-Status", "MISS", "miss", "miss"),
    ("X-Cache-Status", "EXPIRED", "miss", "expired"),
    ("X-Cache-Status", "BYPASS", "miss", "bypass"),
    ("CF-Cache-Status", "HIT", "hit", "hit"),
    ("CF-Cache-Status", "DYNAMIC", "miss", "bypass"),
    ("X-Cache", "Hit from cloudfront", "hit", "hit"),
    ("X-Cache", "RefreshHit from cloudfront", "hit", "revalidated"),
    ("X-Cache", "Miss from cloudfront", "miss", "miss"),
    ("X-Cache", "Error from cloudfront", "unknown", "unknown"),  # says nothing about caching
    ("X-Cache", "MISS, HIT", "hit", "hit"),  # Fastly shield missed, edge hit
    ("X-Cache", "TCP_MEM_HIT", "hit", "hit"),  # Squid
    ("x-cache-status", "hit", "hit", "hit"),  # names and values are case-insensitive
    ("X-Cache-Status", "SOMETHING", "unknown", "unknown"),
])
def test_vendor_headers(header: str, value: str, state: str, cache_status: str) -> None:
    v = classify([(header, value)], 200)
    assert (v.state, v.cache_status) == (state, cache_status)
    if state != "unknown":
        assert v.indicator == header.lower()


def test_any_hit_wins_over_an_inner_miss_stored_by_an_outer_cache() -> None:
    # nginx said MISS when the CDN stored the response; the CDN now serves it from its cache.
    v = classify([("X-Cache-Status", "MISS"), ("X-Cache", "Hit from cloudfront")], 503)
    assert (v.state, v.indicator) == ("hit", "x-cache")


@pytest.mark.parametrize("age,state,parsed", [
    ("0", "unknown", 0),  # fetched just now: says nothing
    ("37", "hit", 37),
    ("9" * 40, "hit", 2**31),  # RFC 9111 1.2.2: cap
    ("-5", "unknown", None),
    ("1e3", "unknown", None),
])
def test_age(age: str, state: str, parsed: int | None) -> None:
    v = classify([("Age", age)], 200)
    assert (v.state, v.age) == (state, parsed)
    assert v.malformed == ([] if parsed is not None else ["age"])


def test_conflicting_age_lines_are_ignored() -> None:
    v = classify([("Age", "10"), ("Age", "20")], 200)
    assert (v.age, v.malformed) == (None, ["age"])


@pytest.mark.parametrize("fields,ttl", [
    ([("Cache-Control", "public, max-age=60"), ("Age", "15")], 45),
    ([("Cache-Control", "max-age=60, s-maxage=300"), ("Age", "100")], 200),  # shared caches use s-maxage
    ([("Cache-Control", "max-age=10"), ("Age", "30")], -20),  # stale
    ([("Expires", "Sun, 22 Nov 2026 10:01:00 GMT"), ("Date", "Sun, 22 Nov 2026 10:00:00 GMT")], 60),
    ([("Expires", "0"), ("Date", "Sun, 22 Nov 2026 10:00:00 GMT")], None),  # invalid Expires: no guess
    ([("Cache-Status", "Edge; hit; ttl=5"), ("Cache-Control", "max-age=600")], 5),  # the cache knows best
])
def test_ttl_left(fields: list[tuple[str, str]], ttl: float | None) -> None:
    assert classify(fields, 200).ttl == ttl


def test_layer_label_is_short_and_printable() -> None:
    v = classify([("Cache-Status", '"' + "x" * 500 + '"; hit')], 200)
    assert v.layer == "x" * 64


def test_no_headers_means_unknown() -> None:
    v = classify([("Content-Type", "text/plain")], 503)
    assert (v.state, v.indicator, v.layer, v.cache_status, v.ttl) == ("unknown", "none", "", "unknown", None)


# --- the repeated Date: a stored copy without any cache header ----------------------------------

def _dated(*dates: str) -> Response:
    return Response(503, [("Date", d) for d in dates], 0.01)


DATE = "Sat, 05 Dec 2026 03:00:00 GMT"


@pytest.mark.parametrize(("first", "second", "gap", "repeated"), [
    ((DATE,), (DATE,), 2.0, True),                      # the same second 2 s later: stored
    ((DATE,), (DATE,), 1.9, False),                     # within Date's resolution: could be fresh
    ((DATE,), ("Sat, 05 Dec 2026 03:00:30 GMT",), 30, False),
    ((DATE,), (), 30, False),                           # no Date at all says nothing
    ((DATE, DATE), (DATE, "Sat, 05 Dec 2026 03:00:30 GMT"), 30, False),  # two different Dates: ignored
    (("garbage\x00",), ("garbage\x00",), 30, True),     # compared as text: still one stored response
])
def test_repeated_date(first: tuple[str, ...], second: tuple[str, ...], gap: float, repeated: bool) -> None:
    state = URLState()
    assert _repeated_date(_dated(*first), state, 100.0) is False  # nothing to compare with yet
    assert _repeated_date(_dated(*second), state, 100.0 + gap) is repeated


def test_a_stored_date_keeps_its_first_sighting() -> None:
    """Probes 1.5 s apart never compare two sightings 2 s apart with each other, yet a copy that
    keeps being served is recognized once 2 s have passed since its Date was first seen."""
    state = URLState()
    results = [_repeated_date(_dated(DATE), state, t) for t in (0.0, 1.5, 3.0)]
    assert results == [False, False, True]
