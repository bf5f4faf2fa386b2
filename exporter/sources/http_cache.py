"""Probe URLs behind an HTTP response cache and tell whether errors are served from the cache.

The incident: a gateway cached a backend's 503 and kept serving it after the backend
recovered (Apigee ResponseCache without ExcludeErrorResponse, nginx ``proxy_cache_valid any``,
CDN negative caching). Each probe round requests every configured URL once and reads only the
status line and headers; the body is never needed, so it is dropped when small and declared,
and otherwise the connection is closed instead of reading it.

Whether a response came from a cache is read from the headers in ``INDICATORS`` (a table,
strongest first): RFC 9211 ``Cache-Status``, nginx's ``X-Cache-Status``
(``$upstream_cache_status``), ``CF-Cache-Status``, ``X-Cache`` (CloudFront, Fastly, Varnish,
Squid) and ``Age`` > 0. An inner cache's header is stored along with the response by an outer
cache, so an inner "MISS" can ride on an outer hit: the response counts as cached when *any*
indicator says hit, as not cached when some say miss and none hit, and as unknown otherwise.

When a response is an error (``error_statuses``, default 5xx) the optional bypass asks the
origin past the cache (a cache-busting query parameter, a bypass header, or the origin's own
URL). An error the cache serves while the origin answers is the stale error after recovery;
an error the origin also returns is an outage, which the cache did not cause. Each probe that
sees the stale error is counted (``http_cache_stale_errors_after_recovery_total``): with the
default 30 s probes a cache TTL of a minute leaves a stale error of under a minute, which one or
two probes see and no sustained-state alert would.

Without any cache header, a response whose ``Date`` is the very one of the previous probe (at
least ``DATE_REPEAT_MIN_GAP`` later) is a stored copy: a server generating the answer stamps the
current second (RFC 9110 6.6.1), caches keep the origin's stamp. When neither headers nor the
Date tell, an error's ``http_cache_error_from_cache`` is left out rather than read 0, and
``http_cache_detection{state="unknown"}`` says so.
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import ClassVar
from urllib.parse import urljoin

import http_sf

from exporter import __version__, catalog
from exporter import errors as E
from exporter.errors import PollError
from exporter.netio import Guard, GuardedHTTPConnection, authorization, classify_http_error, poll_tls_context
from exporter.secrets import redact
from exporter.snapshot import Samples, SeriesLimits
from exporter.sources.base import Reading, read_password
from exporter.targets import HttpCacheTarget, ProbeURL

log = logging.getLogger(__name__)

STORE = "http_cache"
DRAIN_LIMIT = 64 * 1024  # a declared body up to this size is read and dropped to keep the connection
HIT_WINDOW = 100  # probes behind the observed hit ratio
MAX_LAYER_LENGTH = 64  # the layer label comes from the server: keep it short and printable
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
AGE_CAP = 2**31  # RFC 9111 1.2.2: larger delta-seconds mean "at least 2^31"
# Date has a resolution of one second: two fresh answers 2 s apart never carry the same one.
DATE_REPEAT_MIN_GAP = 2.0
# How the cache verdict of the last response was reached (http_cache_detection's state label).
DETECTION_STATES = ("header", "date", "bypass", "unknown")
# A stale error is counted only if the cache still serves it this much later: an nginx microcache
# (``proxy_cache_valid any 1s``) keeps an entry until the second after next (valid_sec = now + 1,
# checked against whole seconds), so under 2 s, and must not page.
STALE_CONFIRM_DELAY = 2.2

U = ("url",)
UP = catalog.gauge("http_cache_up", "1 if the last probe round got an HTTP answer from at least one URL.",
                   (), STORE)
PROBE_SUCCESS = catalog.gauge("http_cache_probe_success", "1 if the last probe of the URL got an HTTP answer.",
                              U, STORE)
STATUS = catalog.gauge("http_cache_response_status_code", "HTTP status of the last probe response.", U, STORE)
DURATION = catalog.gauge("http_cache_probe_duration_seconds",
                         "Time to the response headers of the last probe (redirects included).", U, STORE)
FROM_CACHE = catalog.gauge(
    "http_cache_response_from_cache",
    "1 if a cache says it served the last response, 0 if caches say they did not; absent if no header says.",
    U, STORE)
RESPONSE_INFO = catalog.gauge(
    "http_cache_response_info",
    "Constant 1: which header decided (indicator), the cache that said so (layer) and what it said "
    "(cache_status: hit, stale, revalidated, updating, miss, expired, bypass, unknown).",
    U + ("indicator", "layer", "cache_status"), STORE)
AGE = catalog.gauge("http_cache_response_age_seconds", "Age header of the last response (RFC 9111).", U, STORE)
TTL = catalog.gauge(
    "http_cache_response_ttl_seconds",
    "Freshness left for the last response: Cache-Status ttl, else max-age/s-maxage minus Age, else Expires "
    "minus Date; negative when stale.", U, STORE)
ERROR = catalog.gauge("http_cache_error_response",
                      "1 if the last response status counts as an error (error_statuses).", U, STORE)
ERROR_FROM_CACHE = catalog.gauge(
    "http_cache_error_from_cache",
    "1 if the last response is an error and a cache header (or a repeated Date) says a cache served it; "
    "absent for an error when nothing tells (http_cache_detection{state=\"unknown\"}).", U, STORE)
DETECTION = catalog.gauge(
    "http_cache_detection",
    "How the last response's cache verdict was reached, one series per state, 1 for the current one: "
    "header (a cache header), date (the same Date as the previous probe: a stored copy), bypass (no header; "
    "an error compared with the origin past the cache), unknown (nothing tells).",
    U + ("state",), STORE)
ERROR_STORED = catalog.gauge(
    "http_cache_error_stored",
    "1 if the last response is an error a cache says it stored (Cache-Status stored): the next ones will "
    "come from the cache.", U, STORE)
BYPASS_STATUS = catalog.gauge(
    "http_cache_bypass_status_code",
    "HTTP status of the request past the cache, made when the normal response was an error.", U, STORE)
STALE_ERROR = catalog.gauge(
    "http_cache_stale_error_after_recovery",
    "1 if the cache serves an error while the request past the cache succeeds; only with a bypass.", U, STORE)
HIT_RATIO = catalog.gauge(
    "http_cache_hit_ratio", f"Share of the last {HIT_WINDOW} probes with a known answer that came from a cache.",
    U, STORE)
PROBES = catalog.counter("http_cache_probes_total", "Probes sent (redirects not counted separately).", U, STORE)
FAILURES = catalog.counter(
    "http_cache_probe_failures_total", "Probes that got no HTTP answer, by reason.", U + ("reason",), STORE)
FROM_CACHE_TOTAL = catalog.counter("http_cache_responses_from_cache_total",
                                   "Probe responses a cache says it served.", U, STORE)
ERRORS_FROM_CACHE_TOTAL = catalog.counter("http_cache_errors_from_cache_total",
                                          "Probe responses that were errors served from a cache.", U, STORE)
STALE_ERRORS_TOTAL = catalog.counter(
    "http_cache_stale_errors_after_recovery_total",
    "Probes that got an error from the cache while the request past the cache succeeded; only with a bypass.",
    U, STORE)
BYPASS_FAILURES = catalog.counter(
    "http_cache_bypass_failures_total", "Requests past the cache that got no HTTP answer.", U, STORE)


# --- what the headers say ------------------------------------------------------------

HIT, MISS, UNKNOWN = "hit", "miss", "unknown"


@dataclass(frozen=True)
class Indicator:
    """A vendor header and what its values mean: value (upper-cased) -> (hit|miss, cache_status)."""

    header: str
    values: dict[str, tuple[str, str]]


_UPSTREAM_CACHE_STATUS = {  # nginx $upstream_cache_status; Cloudflare uses the same words plus two
    "HIT": (HIT, "hit"), "STALE": (HIT, "stale"), "UPDATING": (HIT, "updating"),
    "REVALIDATED": (HIT, "revalidated"), "MISS": (MISS, "miss"), "EXPIRED": (MISS, "expired"),
    "BYPASS": (MISS, "bypass"),
}
INDICATORS: list[Indicator] = [
    Indicator("x-cache-status", _UPSTREAM_CACHE_STATUS),
    Indicator("cf-cache-status", {**_UPSTREAM_CACHE_STATUS, "DYNAMIC": (MISS, "bypass"), "NONE": (MISS, "bypass")}),
    # X-Cache: the first word of each comma-separated layer ("Hit from cloudfront", "MISS, HIT",
    # "TCP_MEM_HIT"); CloudFront's "Error from cloudfront" says nothing about caching.
    Indicator("x-cache", {"HIT": (HIT, "hit"), "TCP_HIT": (HIT, "hit"), "TCP_MEM_HIT": (HIT, "hit"),
                          "REFRESHHIT": (HIT, "revalidated"), "TCP_REFRESH_HIT": (HIT, "revalidated"),
                          "MISS": (MISS, "miss"), "TCP_MISS": (MISS, "miss"),
                          "TCP_REFRESH_MISS": (MISS, "expired")}),
]


@dataclass(frozen=True)
class CacheStatusMember:
    """One cache's entry in an RFC 9211 Cache-Status list (first = nearest the origin)."""

    cache: str
    hit: bool = False
    fwd: str | None = None
    fwd_status: int | None = None
    ttl: int | None = None
    stored: bool = False
    collapsed: bool = False
    key: str | None = None
    detail: str | None = None


def parse_cache_status(lines: list[str]) -> list[CacheStatusMember] | None:
    """Parse the Cache-Status field lines as one RFC 8941 list; None when it is not valid.

    A field that fails to parse is ignored as a whole (RFC 8941 section 4.2). Members that are
    inner lists, and parameters of the wrong type, are skipped: RFC 9211 defines them as absent.
    """
    if not lines:
        return None
    try:
        parsed = http_sf.parse(", ".join(lines).encode("latin-1"), tltype="list")
    except (http_sf.StructuredFieldError, ValueError, UnicodeEncodeError):
        return None
    members: list[CacheStatusMember] = []
    if not isinstance(parsed, list):
        return None
    for member in parsed:
        if not isinstance(member, tuple):  # the parser pairs every member with its parameters
            continue
        value, params = member
        if not isinstance(value, (str, http_sf.Token)):  # an inner list (or a number) is not a cache
            continue
        fwd, key, detail = params.get("fwd"), params.get("key"), params.get("detail")
        members.append(CacheStatusMember(
            cache=str(value),
            hit=params.get("hit") is True,
            fwd=str(fwd) if isinstance(fwd, http_sf.Token) else None,
            fwd_status=_int_param(params.get("fwd-status")),
            ttl=_int_param(params.get("ttl")),
            stored=params.get("stored") is True,
            collapsed=params.get("collapsed") is True,
            key=key if isinstance(key, str) else None,
            detail=str(detail) if isinstance(detail, (str, http_sf.Token)) else None,
        ))
    return members


def _int_param(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class Verdict:
    """What one response's headers say about caching."""

    state: str = UNKNOWN  # hit | miss | unknown
    indicator: str = "none"
    layer: str = ""
    cache_status: str = "unknown"
    age: int | None = None
    ttl: float | None = None
    stored: bool = False
    malformed: list[str] = field(default_factory=list)  # header names that could not be parsed


def _layer(text: str) -> str:
    # Redact before cutting: a server that echoes a credential as its cache name must not get
    # it (or its first 64 characters) into a label.
    clean = redact("".join(ch for ch in text if ch.isprintable()))
    return clean[:MAX_LAYER_LENGTH]


def classify(fields: list[tuple[str, str]], status: int) -> Verdict:
    """Read the caching headers of one response (``fields`` as received, repeats kept)."""
    by_name: dict[str, list[str]] = {}
    for name, value in fields:
        by_name.setdefault(name.strip().lower(), []).append(value.strip())
    v = Verdict()
    votes: list[tuple[str, str, str, str]] = []  # (state, indicator, layer, cache_status), strongest first

    members = parse_cache_status(by_name.get("cache-status", []))
    if members is None and "cache-status" in by_name:
        v.malformed.append("cache-status")
    if members:
        served = [m for m in members if _served_by(m, status)]
        v.stored = any(m.stored for m in members)
        if served:
            m = served[-1]  # the cache nearest the user that answered itself
            votes.append((HIT, "cache-status", m.cache, _member_status(m)))
            v.ttl = float(m.ttl) if m.ttl is not None else None
        else:
            m = members[-1]
            votes.append((MISS, "cache-status", m.cache, {"bypass": "bypass", "stale": "expired"}.get(m.fwd or "",
                                                                                                     "miss")))
    for ind in INDICATORS:
        raw = by_name.get(ind.header)
        if not raw:
            continue
        words = [part.strip().split(" ", 1)[0].upper() for line in raw for part in line.split(",") if part.strip()]
        meanings = [ind.values[w] for w in words if w in ind.values]
        hits = [mn for mn in meanings if mn[0] == HIT]
        if hits:
            votes.append((HIT, ind.header, ind.header, hits[0][1]))
        elif meanings:
            votes.append((MISS, ind.header, ind.header, meanings[0][1]))
    v.age = _age(by_name.get("age", []), v)
    if v.age is not None and v.age > 0:
        votes.append((HIT, "age", "age", "hit"))
    hit_votes = [x for x in votes if x[0] == HIT]
    chosen = hit_votes[0] if hit_votes else (votes[0] if votes else None)
    if chosen is not None:
        v.state, v.indicator, v.layer, v.cache_status = chosen[0], chosen[1], _layer(chosen[2]), chosen[3]
    if v.ttl is None:
        v.ttl = _freshness_left(by_name, v.age or 0, v)
    return v


def _member_status(m: CacheStatusMember) -> str:
    if m.hit:
        return "stale" if m.ttl is not None and m.ttl < 0 else "hit"
    return "revalidated" if m.fwd_status == 304 else "stale"  # validated, or served stale on error


def _served_by(m: CacheStatusMember, status: int) -> bool:
    # `hit`: answered without going forward. A cache that went forward but answered with a
    # different status than it got (fwd-status) served its stored response instead (stale-if-error).
    return m.hit or (m.fwd is not None and m.fwd_status is not None and m.fwd_status != status)


def _age(lines: list[str], v: Verdict) -> int | None:
    if not lines:
        return None
    if len(set(lines)) != 1 or not lines[0].isdigit() or not lines[0].isascii():
        v.malformed.append("age")
        return None
    return _delta_seconds(lines[0])


def _delta_seconds(digits: str) -> int:
    """RFC 9111 1.2.2 delta-seconds (ASCII digits, checked by the caller), capped at 2^31.

    Leading zeros are dropped before the length check: "0005" is 5, not a prefix of it.
    """
    digits = digits.lstrip("0") or "0"
    return AGE_CAP if len(digits) > 10 else min(int(digits), AGE_CAP)


def _freshness_left(by_name: dict[str, list[str]], age: int, v: Verdict) -> float | None:
    directives: dict[str, str] = {}
    for line in by_name.get("cache-control", []):
        for part in line.split(","):
            name, _, value = part.strip().partition("=")
            directives.setdefault(name.strip().lower(), value.strip().strip('"'))
    for name in ("s-maxage", "max-age"):
        text = directives.get(name)
        if text is None:
            continue
        if text.isdigit() and text.isascii():
            return float(_delta_seconds(text) - age)
        v.malformed.append("cache-control")
        return None
    expires, date = by_name.get("expires"), by_name.get("date")
    if expires and date:
        try:
            left = (email.utils.parsedate_to_datetime(expires[0]) - email.utils.parsedate_to_datetime(date[0]))
        except (TypeError, ValueError, IndexError, OverflowError):
            return None  # RFC 9111 5.3: an invalid Expires means "already expired"; say nothing rather than guess
        return left.total_seconds() - age
    return None


# --- the source ------------------------------------------------------------------------

@dataclass
class URLState:
    """Counters and history for one probed URL; they live as long as the target's config."""

    probes: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    from_cache: int = 0
    errors_from_cache: int = 0
    bypass_failures: int = 0
    stale_errors: int = 0
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=HIT_WINDOW))
    last_date: str | None = None  # Date of the previous response, and when it was received
    last_date_at: float = 0.0


@dataclass
class _Judged:
    """One URL's probe after the first looks: ``status`` is set while a stale error awaits its second look."""

    probe: ProbeURL
    state: URLState
    labels: tuple[tuple[str, str], ...]
    malformed: int
    status: int | None = None


@dataclass
class Response:
    status: int
    fields: list[tuple[str, str]]
    seconds: float


class HttpCacheSource:
    """Probes one target's URLs each round over persistent connections (one per origin)."""

    store: ClassVar[str] = STORE
    up_family: ClassVar[str] = UP

    def __init__(self, target: HttpCacheTarget) -> None:
        self.target = target
        self.guard = Guard(target.max_header_bytes + DRAIN_LIMIT)
        self.pool: dict[tuple[str, str, int], GuardedHTTPConnection] = {}
        self.states = {u.url: URLState() for u in target.urls}
        self.last_failure: PollError | None = None
        self.connections_opened = 0
        self._tls: ssl.SSLContext | None = None
        self._headers_at = 0.0  # monotonic time the last response head was in
        self._aborted = threading.Event()  # wakes the stale-error confirmation wait

    # -- Source protocol ---------------------------------------------------------------

    def abort(self) -> None:
        self.guard.tripped = E.TIMEOUT
        self._aborted.set()
        for conn in list(self.pool.values()):
            if conn.sock is not None:
                conn.sock.abort()

    def close(self) -> None:
        pool, self.pool = self.pool, {}
        for conn in pool.values():
            conn.close()

    def poll(self, deadline: float) -> Reading:
        t = self.target
        self._aborted.clear()
        headers = self._headers()
        out = Samples(SeriesLimits.of(t))
        failures: list[PollError] = []
        malformed = 0
        pending: list[_Judged] = []  # stale errors waiting for their second look
        for probe in t.urls:
            labels = (("url", probe.url),)
            state = self.states[probe.url]
            state.probes += 1
            try:
                response = self._request(probe, headers, deadline)
            except PollError as err:
                failures.append(err)
                state.failures[err.reason] = state.failures.get(err.reason, 0) + 1
                out.add(PROBE_SUCCESS, 0, labels)
                log.debug("target %s: probe of %s failed: %s", t.name, probe.url, err)
                self._counters(out, state, labels)
                continue
            candidate = self._judge(out, probe, state, labels, response, headers, deadline)
            malformed += candidate.malformed
            if candidate.status is None:
                self._counters(out, state, labels)
            else:
                pending.append(candidate)
        self._confirm(out, pending, headers, deadline)
        if len(failures) == len(t.urls):
            self.last_failure = failures[0]
            raise failures[0]
        self.last_failure = None
        details: dict[str, object] = {"urls": len(t.urls), "failed": len(failures),
                                      "connections_opened": self.connections_opened}
        return Reading(out, details=details, malformed_fields=malformed)

    # -- one URL -------------------------------------------------------------------------

    def _judge(self, out: Samples, probe: ProbeURL, state: URLState, labels: tuple[tuple[str, str], ...],
               response: Response, headers: dict[str, str], deadline: float) -> _Judged:
        t = self.target
        verdict = classify(response.fields, response.status)
        detection = "header" if verdict.state != UNKNOWN else "unknown"
        if _repeated_date(response, state, self._headers_at) and verdict.state == UNKNOWN:
            verdict.state, verdict.indicator, verdict.layer, verdict.cache_status = HIT, "date", "date", "hit"
            detection = "date"
        error = t.is_error(response.status)
        cached = verdict.state == HIT
        out.add(PROBE_SUCCESS, 1, labels)
        out.add(STATUS, response.status, labels)
        out.add(DURATION, response.seconds, labels)
        out.add(ERROR, int(error), labels)
        if verdict.state != UNKNOWN:
            out.add(FROM_CACHE, int(cached), labels)
            state.recent.append(cached)
        out.add(RESPONSE_INFO, 1, labels + (("indicator", verdict.indicator), ("layer", verdict.layer),
                                            ("cache_status", verdict.cache_status)))
        out.add(AGE, verdict.age, labels)
        out.add(TTL, verdict.ttl, labels)
        if not error or verdict.state != UNKNOWN:  # an error nothing vouches for is "cannot tell", not 0
            out.add(ERROR_FROM_CACHE, int(error and cached), labels)
        out.add(ERROR_STORED, int(error and verdict.stored), labels)
        if state.recent:
            out.add(HIT_RATIO, sum(state.recent) / len(state.recent), labels)
        state.from_cache += cached
        state.errors_from_cache += error and cached
        judged = _Judged(probe, state, labels, len(verdict.malformed))
        if t.bypass is not None:
            stale = False
            # Only an error needs confirming; a cache that says "miss" passed the origin's error on.
            if error and verdict.state != MISS:
                bypass_status = self._bypass(probe, headers, deadline, state)
                out.add(BYPASS_STATUS, bypass_status, labels)
                stale = bypass_status is not None and bypass_status < 500 and not t.is_error(bypass_status)
                if detection == "unknown" and bypass_status is not None:
                    detection = "bypass"
            if stale:
                judged.status = response.status  # STALE_ERROR and the counters come after the second look
            else:
                out.add(STALE_ERROR, 0, labels)
        for name in DETECTION_STATES:
            out.add(DETECTION, int(name == detection), labels + (("state", name),))
        return judged

    def _confirm(self, out: Samples, pending: list[_Judged], headers: dict[str, str], deadline: float) -> None:
        """The second look at each stale error, STALE_CONFIRM_DELAY after the round's first looks
        (one wait for all of them); then their STALE_ERROR and counters.

        Without looking again -- one observation of two agreeing requests stands -- when the poll
        interval is under twice the delay (a poll must not wait through most of its interval), when
        the poll's deadline leaves no room, or when the poll is aborted.
        """
        if not pending:
            return
        look = (self.target.interval >= 2 * STALE_CONFIRM_DELAY
                and time.monotonic() + STALE_CONFIRM_DELAY + self.target.request_timeout / 4 <= deadline)
        if look and self._aborted.wait(STALE_CONFIRM_DELAY):
            look = False
        for judged in pending:
            stale = True
            if look:
                try:
                    again = self._request(judged.probe, headers, deadline)
                    stale = again.status == judged.status and classify(again.fields, again.status).state != MISS
                except PollError:
                    pass  # no answer is no evidence that the cache stopped serving it
            out.add(STALE_ERROR, int(stale), judged.labels)
            judged.state.stale_errors += stale
            self._counters(out, judged.state, judged.labels)

    def _counters(self, out: Samples, state: URLState, labels: tuple[tuple[str, str], ...]) -> None:
        out.add(PROBES, state.probes, labels)
        for reason in sorted(state.failures):
            out.add(FAILURES, state.failures[reason], labels + (("reason", reason),))
        out.add(FROM_CACHE_TOTAL, state.from_cache, labels)
        out.add(ERRORS_FROM_CACHE_TOTAL, state.errors_from_cache, labels)
        if self.target.bypass is not None:
            out.add(BYPASS_FAILURES, state.bypass_failures, labels)
            out.add(STALE_ERRORS_TOTAL, state.stale_errors, labels)

    def _bypass(self, probe: ProbeURL, headers: dict[str, str], deadline: float, state: URLState) -> int | None:
        bypass = self.target.bypass
        assert bypass is not None
        request = probe
        extra = dict(headers)
        if bypass.query_param:
            sep = "&" if "?" in probe.path else "?"
            request = replace(probe, path=f"{probe.path}{sep}{bypass.query_param}={time.time_ns():x}")
        elif bypass.header:
            extra[bypass.header[0]] = bypass.header[1]
        elif bypass.origin:
            base = bypass.origin.path.split("?", 1)[0].rstrip("/")
            request = replace(bypass.origin, path=base + probe.path)
        try:
            return self._request(request, extra, deadline).status
        except PollError as err:
            state.bypass_failures += 1
            log.debug("target %s: bypass request for %s failed: %s", self.target.name, probe.url, err)
            return None

    # -- HTTP ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        t = self.target
        headers = {"User-Agent": f"cache-exporter/{__version__} (http_cache probe)", "Accept": "*/*"}
        headers.update(t.headers)
        password = read_password(t.credentials)
        if password is not None:
            headers["Authorization"] = authorization(t.credentials.username, password)
        return headers

    def _request(self, probe: ProbeURL, headers: dict[str, str], deadline: float) -> Response:
        """One request, following up to ``max_redirects`` redirects; raises PollError."""
        t = self.target
        started = time.monotonic()
        self.guard.arm(min(deadline, started + t.request_timeout))
        seen = {probe.url}
        current = probe
        for hop in range(t.max_redirects + 1):
            status, fields = self._exchange(current, headers)
            if status not in REDIRECT_STATUSES or t.max_redirects == 0:
                return Response(status, fields, self._headers_at - started)
            location = next((v for k, v in fields if k.lower() == "location"), None)
            if location is None:
                return Response(status, fields, self._headers_at - started)
            previous, current = current, self._redirect_target(current, location)
            if not _may_keep_credentials(previous, current):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if current.url in seen:
                raise PollError(E.REDIRECT, f"redirect loop after {hop + 1} hops")
            seen.add(current.url)
        raise PollError(E.REDIRECT, f"more than {t.max_redirects} redirects")

    def _redirect_target(self, current: ProbeURL, location: str) -> ProbeURL:
        try:
            return ProbeURL.parse(urljoin(current.url, location.strip()))  # urljoin raises too ("http://[::1")
        except ValueError as exc:
            raise PollError(E.PROTOCOL, f"redirect to an unusable URL: {exc}") from None

    def _exchange(self, probe: ProbeURL, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]]]:
        conn = self._connection(probe)
        before = conn.connects
        try:
            status, fields = conn.head(self.target.method, probe.path, headers, DRAIN_LIMIT,
                                       self.target.max_header_bytes)
            self._headers_at = conn.headers_at  # the duration ends at the head, not after draining a body
        except (OSError, ValueError, http.client.HTTPException) as exc:
            conn.close()
            raise self._classify(exc) from None
        finally:
            self.connections_opened += conn.connects - before
        # head() cut the reading at max_header_bytes plus one read buffer; the header fields
        # themselves must fit max_header_bytes ("Name: value" CRLF, as received).
        size = sum(len(name) + len(value) + 4 for name, value in fields)
        if size > self.target.max_header_bytes:
            conn.close()
            raise PollError(E.TOO_LARGE, f"response header fields of {size} bytes, more than max_header_bytes "
                                         f"({self.target.max_header_bytes})")
        return status, fields

    def _classify(self, exc: BaseException) -> PollError:
        reason = self.guard.tripped or classify_http_error(exc) or E.classify_os_error(exc) or E.ERROR
        return PollError(reason, E.describe(exc))

    def _connection(self, probe: ProbeURL) -> GuardedHTTPConnection:
        conn = self.pool.get(probe.origin)
        if conn is not None:
            return conn
        context = None
        if probe.scheme == "https":
            if self._tls is None:
                self._tls = poll_tls_context(self.target.tls)
            context = self._tls
        server_name = self.target.tls.server_name if self.target.tls else None
        if len(self.pool) >= len(self.target.urls) + 4:  # redirects to ever new hosts must not pile up connections
            self.close()
        conn = GuardedHTTPConnection(probe.host, probe.port, self.guard, context, server_name)
        self.pool[probe.origin] = conn
        return conn


def _repeated_date(response: Response, state: URLState, received_at: float) -> bool:
    """Whether the response carries the previous probe's Date although it came at least
    DATE_REPEAT_MIN_GAP later (the Date is remembered for the next probe either way).

    Compared as received text: a fresh answer stamps a new second, so equal text means one stored
    response; an unparsable Date compares the same way and is no more trusted than that.
    """
    dates = [v.strip() for k, v in response.fields if k.strip().lower() == "date"]
    date = dates[0] if len(set(dates)) == 1 else None
    repeated = (date is not None and date == state.last_date
                and received_at - state.last_date_at >= DATE_REPEAT_MIN_GAP)
    if date != state.last_date:  # keep the first time this Date was seen: a stored copy keeps ageing
        state.last_date, state.last_date_at = date, received_at
    return repeated


def _may_keep_credentials(old: ProbeURL, new: ProbeURL) -> bool:
    """Whether a redirect may carry the Authorization header (the rule of curl and requests):
    to the same origin, or from http to https on the same host with the default ports."""
    return old.origin == new.origin or (
        old.host == new.host and (old.scheme, old.port, new.scheme, new.port) == ("http", 80, "https", 443))
