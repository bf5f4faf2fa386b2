"""The http_cache target type: URLs to probe through someone else's cache, with the request's
method and headers, what counts as an error, and how to bypass the cache."""

from __future__ import annotations

import re
from typing import Any

from exporter.config import rules, sections
from exporter.config.checker import Checker, join, kind_of
from exporter.config.urls import http_url
from exporter.config.values import int_between, one_of, positive_size, string
from exporter.targets import Bypass, HttpCacheTarget, ProbeURL, Target

MAX_PROBE_URLS = 50  # each URL is a label value: keep the series count bounded
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_QUERY_NAME = re.compile(r"^[A-Za-z0-9_.~-]+$")
_STATUS_CLASS = re.compile(r"^([1-5])xx$")
_STATUS_RANGE = re.compile(r"^([1-5][0-9]{2})-([1-5][0-9]{2})$")


def http_cache_target(c: Checker, t: dict[str, Any], path: str, common: dict[str, Any]) -> Target | None:
    urls = probe_urls(c, t, path)
    tls = sections.tls(c, t.get("tls"), join(path, "tls"))
    rules.tls_needs_https(c, path, tls, [u.scheme for u in urls])
    cache_bypass = bypass(c, t.get("bypass"), join(path, "bypass"))
    request_timeout = common["timeout"]
    requests = max(1, len(urls)) * (2 if cache_bypass else 1)
    return HttpCacheTarget(
        **{**common, "timeout": request_timeout * requests + 1.0},
        urls=urls,
        method=c.take(t, "method", path, one_of(("GET", "HEAD")), "GET"),
        headers=headers(c, t.get("headers"), join(path, "headers")),
        error_statuses=c.take(t, "error_statuses", path, status_ranges, ((500, 599),)),
        bypass=cache_bypass,
        max_redirects=c.take(t, "max_redirects", path, int_between(0, 10), 0),
        request_timeout=request_timeout,
        max_header_bytes=c.take(t, "max_header_bytes", path, positive_size(1024), 64 * 1024),
        credentials=sections.credentials(c, t, path, username_required=False),
        tls=tls,
    )


def probe_urls(c: Checker, t: dict[str, Any], path: str) -> tuple[ProbeURL, ...]:
    """``url`` (optionally with ``paths`` under it) or ``urls``: at most MAX_PROBE_URLS, none twice."""
    has_url, has_urls = t.get("url") is not None, t.get("urls") is not None
    if has_url == has_urls:
        c.error(path, "set either url (optionally with paths) or urls")
        return ()
    listed = t["urls"] if has_urls else t.get("paths")
    if isinstance(listed, list) and len(listed) > MAX_PROBE_URLS:  # before parsing thousands of them
        c.error(path, f"{len(listed)} URLs; at most {MAX_PROBE_URLS} per target (each is a label value)")
        return ()
    found: list[ProbeURL] = []
    if has_urls:
        if not isinstance(t["urls"], list) or not t["urls"]:
            c.error(join(path, "urls"), "expected a non-empty list of URLs")
            return ()
        if "paths" in t:
            c.error(join(path, "paths"), "paths go with a single url, not with urls")
        for i, item in enumerate(t["urls"]):
            here = join(join(path, "urls"), i)
            if not isinstance(item, str) or not item.strip():
                c.error(here, f"expected a URL, got {kind_of(item)}")
            elif (probe := http_url(c, item, here)) is not None:
                found.append(probe)
    else:
        base = c.take(t, "url", path, string)
        first = http_url(c, base, join(path, "url")) if base else None
        if first is None:
            return ()
        paths = t.get("paths")
        if paths is None:
            found.append(first)
        elif not isinstance(paths, list) or not paths:
            c.error(join(path, "paths"), "expected a non-empty list of paths such as /api/health")
        else:
            root = base.split("?", 1)[0].split("#", 1)[0].rstrip("/")
            for i, item in enumerate(paths):
                here = join(join(path, "paths"), i)
                if not isinstance(item, str) or not item.startswith("/"):
                    c.error(here, "a path must start with /")
                elif (joined := http_url(c, root + item, here)) is not None:
                    found.append(joined)
    if len(found) > MAX_PROBE_URLS:
        c.error(path, f"{len(found)} URLs; at most {MAX_PROBE_URLS} per target (each is a label value)")
    if len({p.url for p in found}) != len(found):
        c.error(path, "the same URL is listed twice")
    return tuple(found)


def status_ranges(value: Any) -> tuple[tuple[int, int], ...]:
    """``[5xx, 429, 500-504]`` (or one of them alone) as sorted, distinct (low, high) ranges."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("list at least one status, e.g. [5xx, 429]")
    out = []
    for item in items:
        text = str(item).strip().lower() if not isinstance(item, bool) else ""
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            out.append((item, item))
        elif m := _STATUS_CLASS.match(text):
            out.append((int(m.group(1)) * 100, int(m.group(1)) * 100 + 99))
        elif (m := _STATUS_RANGE.match(text)) and int(m.group(1)) <= int(m.group(2)):
            out.append((int(m.group(1)), int(m.group(2))))
        else:
            raise ValueError(f"{str(item)[:40]!r} is not a status: use a code (404), a class (5xx) "
                             "or a range (500-504)")
    return tuple(sorted(set(out)))


def header_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"header values must be strings, got {kind_of(value)}")
    text = str(value)
    if any(ch in text for ch in "\r\n\0") or len(text) > 8192:
        raise ValueError("header values must be one line of at most 8192 characters")
    return text


def headers(c: Checker, node: Any, path: str) -> tuple[tuple[str, str], ...]:
    if node is None:
        return ()
    if not isinstance(node, dict):
        c.error(path, f"expected a mapping of header names to values, got {kind_of(node)}")
        return ()
    out = []
    for name, value in node.items():
        here = join(path, str(name))
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            c.error(here, "not a valid header name")
        elif name.lower() in ("authorization", "proxy-authorization"):
            c.error(here, "secrets do not belong in the config: use username and password_env/password_file")
        else:
            try:
                out.append((name, header_value(value)))
            except ValueError as exc:
                c.error(here, str(exc))
    return tuple(out)


def bypass(c: Checker, node: Any, path: str) -> Bypass | None:
    b = c.mapping(node, path, {"query_param", "header", "origin_url"})
    if not b:
        return None
    if len(b) != 1:
        c.error(path, "choose one of query_param, header or origin_url")
        return None
    if "query_param" in b:
        name = c.take(b, "query_param", path, string)
        if name is not None and not _QUERY_NAME.match(name):
            c.error(join(path, "query_param"), "use a plain parameter name such as cache_bust")
            return None
        return Bypass(query_param=name) if name else None
    if "header" in b:
        before = len(c.problems)
        pair = headers(c, b["header"], join(path, "header"))
        if len(pair) != 1:
            if len(c.problems) == before:
                c.error(join(path, "header"), "expected one header, e.g. {X-Cache-Bypass: \"1\"}")
            return None
        return Bypass(header=pair[0])
    url = c.take(b, "origin_url", path, string)
    origin = http_url(c, url, join(path, "origin_url")) if url else None
    return Bypass(origin=origin) if origin else None
