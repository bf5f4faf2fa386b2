"""The check: where a request is actually cached, would nginx serve a cached error after the backend recovers?

``proxy_cache_valid <time>`` alone caches only 200/301/302; ``any`` or explicit 5xx codes also
cache errors, including the 502/504 nginx itself returns when the upstream is unreachable. The same
holds for ``fastcgi_``, ``uwsgi_`` and ``scgi_cache_valid``.

The walk is the proxy module's merge: an inner ``proxy_cache`` overrides the outer one, and any
``proxy_cache_valid`` in a block replaces the inherited list entirely (array directive). A status
takes the time of the first entry that matches it or ``any`` (``ngx_http_file_cache_valid``).
A finding is reported per ``location`` that passes to the backend (``proxy_pass`` etc., also inside
``if``/``limit_except``) with the cache enabled there. A file without a top-level ``http`` block is
a fragment (a sites-enabled file or a snippet): its outer context is unknown, so a ``*_cache`` it
does not set is assumed on, and a top level without server/location blocks counts as a proxying
location when it sets ``*_cache_valid``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from exporter.audit import CRITICAL, INFO, WARNING, Finding, ReportKind, TargetReport, by_severity
from exporter.nginxconf.lexer import NginxConfigError, show
from exporter.nginxconf.times import parse_nginx_time
from exporter.nginxconf.tree import Directive, load

CHECK_ERRORS = "nginx_caches_errors"
CHECK_NOT_FOUND = "nginx_caches_not_found"
MICROCACHE_SECONDS = 10  # errors cached for at most this long: warning instead of critical
MODULES = ("proxy", "fastcgi", "uwsgi", "scgi")
_SCOPES = ("http", "server", "location")  # blocks whose loc conf the request-time merge walks
_PASS_CARRIERS = ("if", "limit_except")  # nested loc confs that inherit everything of their location


@dataclass(frozen=True)
class _Entry:
    status: int  # 0 = any
    seconds: int
    directive: Directive


_UNKNOWN = Directive("(inherited)", [], "", "", 0)  # fragment: the including context's *_cache


@dataclass(frozen=True)
class _Effective:
    cache: Directive | None  # the *_cache directive in effect, _UNKNOWN, or None (off by default)
    valid: tuple[_Entry, ...]


def _valid_entries(d: Directive) -> list[_Entry]:
    """``ngx_http_file_cache_valid_set_slot``."""
    if d.block is not None:
        raise NginxConfigError(d.file, d.line, f'directive "{d.name}" is not terminated by ";"')
    if not d.args:
        raise NginxConfigError(d.file, d.line, f'invalid number of arguments in "{d.name}" directive')
    try:
        seconds = parse_nginx_time(d.args[-1], is_sec=True)
    except ValueError:
        raise NginxConfigError(d.file, d.line, f'invalid time value "{d.args[-1]}" in "{d.name}"') from None
    if len(d.args) == 1:
        return [_Entry(status, seconds, d) for status in (200, 301, 302)]
    out = []
    for arg in d.args[:-1]:
        if arg == "any":
            status = 0
        elif re.fullmatch(r"[0-9]+", arg) and 100 <= int(arg) <= 599:
            status = int(arg)
        else:
            raise NginxConfigError(d.file, d.line, f'invalid status "{arg}" in "{d.name}"')
        out.append(_Entry(status, seconds, d))
    return out


_CACHE_DIRECTIVES = {f"{m}_cache": m for m in MODULES}
_VALID_DIRECTIVES = {f"{m}_cache_valid": m for m in MODULES}
_PASS_DIRECTIVES = {f"{m}_pass": m for m in MODULES}


def _passes(nodes: list[Directive]) -> set[str]:
    """The modules whose ``*_pass`` is set in this location (also inside its ``if``/``limit_except``)."""
    out = set()
    for d in nodes:
        if d.block is None:
            if d.name in _PASS_DIRECTIVES:
                out.add(_PASS_DIRECTIVES[d.name])
        elif d.name in _PASS_CARRIERS:
            out |= _passes(d.block)
    return out


def _lookup(entries: tuple[_Entry, ...], status: int) -> _Entry | None:
    return next((e for e in entries if e.status in (0, status)), None)


def _ranges(codes: list[int]) -> str:
    out: list[str] = []
    for code in codes:
        if out and out[-1].split("-")[-1] == str(code - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{code}"
        else:
            out.append(str(code))
    return " ".join(out)


def _context(chain: list[Directive], top: str) -> str:
    """``server api.example.com, location /api/ > /api/v2/``, from the blocks enclosing a location."""
    parts = []
    server = next((d for d in reversed(chain) if d.name == "server"), None)
    if server is not None:
        names = next((s.args for s in server.block or [] if s.name == "server_name" and s.args), None)
        if names:
            parts.append("server " + " ".join(names[:3]) + (" ..." if len(names) > 3 else ""))
        else:
            parts.append(f"server at {server.where()} (no server_name)")
    locations = [" ".join(d.args) for d in chain if d.name == "location"]
    if locations:
        parts.append("location " + " > ".join(locations))
    return ", ".join(parts) or f"the top level of {top}"


def _evaluate(module: str, eff: _Effective, chain: list[Directive], top: str) -> list[Finding]:
    if eff.cache is None or (eff.cache is not _UNKNOWN and eff.cache.args[:1] == ["off"]):
        return []
    if eff.cache is _UNKNOWN:
        cache_note = f"{module}_cache is not set in this file; assuming the including context enables it"
    else:
        cache_note = f"{eff.cache.raw} at {eff.cache.where()}"
    where = show(_context(chain, top))
    findings = []
    cached = {}
    if any(e.status == 0 or e.status >= 500 for e in eff.valid):
        cached = {code: e for code in range(500, 600) if (e := _lookup(eff.valid, code)) and e.seconds > 0}
    if cached:
        directives = list(dict.fromkeys(e.directive.where() + ": `" + e.directive.raw + "`"
                                        for e in cached.values()))
        worst = max(e.seconds for e in cached.values())
        if len(cached) == 100 and any(e.status == 0 for e in cached.values()):
            what = "every status (5xx included)"
        else:
            what = f"{_ranges(sorted(cached))} responses"
        if worst > MICROCACHE_SECONDS:
            severity, effect = CRITICAL, ("a backend error, or nginx's own 502/504 while the backend is down, is "
                                          "still served from the cache after the backend recovers; cache only "
                                          f"200 301 302 (`{module}_cache_valid <time>`)")
        else:
            severity, effect = WARNING, ("microcaching of errors: every client gets the cached error for up to "
                                         f"{worst} s after the backend recovers")
        findings.append(Finding(CHECK_ERRORS, severity, show(
            f"{'; '.join(directives)} caches {what} for up to {worst} s in {where} ({cache_note}): {effect}")))
    e404 = _lookup(eff.valid, 404)
    if e404 is not None and e404.status == 404 and e404.seconds > 0:
        findings.append(Finding(CHECK_NOT_FOUND, INFO, show(
            f"{e404.directive.where()}: `{e404.directive.raw}` caches 404 for {e404.seconds} s in {where} "
            f"({cache_note}): a path that 404s while a deploy rolls out stays 404 that long")))
    return findings


def _walk(nodes: list[Directive], outer: dict[str, _Effective], chain: list[Directive], top: str,
          fragment: bool, out: list[Finding]) -> None:
    caches: dict[str, Directive] = {}
    valid: dict[str, list[_Entry]] = {}
    for d in nodes:
        if d.name in _CACHE_DIRECTIVES:
            if d.block is not None:
                raise NginxConfigError(d.file, d.line, f'directive "{d.name}" is not terminated by ";"')
            if len(d.args) != 1:
                raise NginxConfigError(d.file, d.line, f'invalid number of arguments in "{d.name}" directive')
            if _CACHE_DIRECTIVES[d.name] in caches:
                raise NginxConfigError(d.file, d.line, f'"{d.name}" directive is duplicate')
            caches[_CACHE_DIRECTIVES[d.name]] = d
        elif d.name in _VALID_DIRECTIVES:
            valid.setdefault(_VALID_DIRECTIVES[d.name], []).extend(_valid_entries(d))
    effective = outer
    if caches or valid:
        effective = {m: _Effective(caches.get(m) or outer[m].cache, tuple(valid.get(m, ())) or outer[m].valid)
                     for m in MODULES}
    if chain and chain[-1].name == "location":
        sites = _passes(nodes)
    elif fragment and not chain:
        # A snippet's top level may be a location body (then its *_cache_valid applies to what that
        # location proxies), unless it holds server or location blocks: then it is http or server level.
        nested = any(d.block is not None and d.name in ("server", "location") for d in nodes)
        sites = _passes(nodes) | (set() if nested else set(valid))
    else:
        sites = set()
    for module in MODULES:
        if module in sites:
            out.extend(_evaluate(module, effective[module], chain, top))
    for d in nodes:
        if d.block is not None and d.name in _SCOPES:
            _walk(d.block, effective, [*chain, d], top, fragment, out)


def analyze(tree: list[Directive], name: str = "<string>") -> list[Finding]:
    """Findings for a parsed config, most severe first. A tree without ``http {}`` is a fragment."""
    fragment = not any(d.name == "http" and d.block is not None for d in tree)
    outer = {m: _Effective(_UNKNOWN if fragment else None, ()) for m in MODULES}
    out: list[Finding] = []
    _walk(tree, outer, [], name, fragment, out)
    return by_severity(out)


def check_nginx_config(path: str) -> list[Finding]:
    """Findings for the config at ``path`` (and its includes). Raises NginxConfigError."""
    return analyze(load(path), path)


def audit_report(path: str) -> TargetReport:
    """One ``cache-exporter audit`` row for an nginx config file.

    A config that cannot be parsed becomes an error row with reason "config"; the audit then exits 2
    (invalid configuration input, like an invalid --config), not 3 (unreachable target).
    """
    report = TargetReport(name=f"nginx:{path}", type="nginx", address=path, kind=ReportKind.NGINX_CONFIG)
    try:
        report.findings = check_nginx_config(path)
    except NginxConfigError as exc:
        report.error, report.reason = str(exc), "config"
    return report
