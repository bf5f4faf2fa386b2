"""The status page at ``/``: rendered from the stored state, every value escaped, behind the web
config's basic auth, and checked in a real browser (Debian's headless ``chromium``) against the
live exporter's /targets.

``STATUS_PAGE_SCREENSHOT=docs/status-page.png`` copies the browser test's screenshot there (how the
one in the repository was made); without it the screenshot stays in the test's tmp dir.
"""

from __future__ import annotations

import html
import os
import shutil
import struct
import subprocess
import threading
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import bcrypt
import yaml
from conftest import REPO, fast_global, free_port, need, redis_target

from exporter import statuspage
from exporter.http import Endpoints, make_server
from exporter.secrets import remember

PASSWORD = "s3cret-status"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()  # cost 4: the test checks, not guards
EVIL = "<script>alert(1)</script>"
MiB = 2**20
CHROMIUM_TIMEOUT = 60  # seconds: a cold start on a loaded 2-core machine, far above the usual 2 s


class Page(HTMLParser):
    """The page as a browser user reads it: the summary, each row's cells (by class) as text, the
    finding codes and bar widths per row, the links, and every tag seen."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.links: list[str] = []
        self.rows: list[dict[str, str]] = []
        self.findings: list[list[str]] = []
        self.bars: list[str] = []
        self.summary = ""
        self._cell: str | None = None
        self._finding: str | None = None
        self._in_summary = False
        self._in_body = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        self.tags.add(tag)
        if tag == "a":
            self.links.append(a.get("href") or "")
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append({})
            self.findings.append([])
            self.bars.append("")
        elif tag == "td" and self._in_body and self.rows:
            self._cell = a.get("class") or ""
            self.rows[-1][self._cell] = ""
        elif tag == "br" and self._cell is not None:
            self.rows[-1][self._cell] += "\n"
        elif tag == "span" and "finding" in classes:
            self._finding = ""
        elif tag == "div" and "fill" in classes and self.rows:
            self.bars[-1] = a.get("style") or ""
        elif a.get("id") == "summary":
            self._in_summary = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "span" and self._finding is not None:
            self.findings[-1].append(self._finding)
            self._finding = None
        elif tag == "strong":
            self._in_summary = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self.rows[-1][self._cell] += data
        if self._finding is not None:
            self._finding += data
        if self._in_summary:
            self.summary += data

    def row(self, name: str) -> tuple[dict[str, str], list[str], str]:
        for cells, findings, bar in zip(self.rows, self.findings, self.bars, strict=True):
            if cells.get("name", "").split("\n")[0] == name:
                return cells, findings, bar
        raise AssertionError(f"no row for {name!r} in {self.rows}")


def write_web(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


# --- rendering, no servers ---------------------------------------------------------------------

def test_every_value_is_escaped_and_the_cells_say_what_the_records_hold():
    """A hostile string in every field a target, store or config can set shows as text, never as
    markup; the cells render the record's memory, countdown, policy, findings and poll time."""
    bad = '<i onmouseover="x">&amp;\'</i>'
    now = 1_760_000_000.0
    records = [
        {"name": bad, "type": bad, "address": bad, "up": True, "interval_seconds": 15,
         "last_poll_time": now - 12,
         "memory": {"used": 48 * MiB, "limit": 64 * MiB, "evicts_when_full": True, "eviction_policy": bad},
         "details": {"forecast": {"seconds_until_full": 2 * 3600 + 5 * 60},
                     "findings": [{"check": bad, "severity": bad, "message": bad, "acknowledged": False},
                                  {"check": "maxmemory_unset", "severity": "critical", "message": "m",
                                   "acknowledged": True}]}},
        {"name": "q", "type": "redis", "address": "a", "up": False, "interval_seconds": 2,
         "last_poll_time": now, "last_error": {"reason": bad, "message": bad}},
        {"name": "fresh", "type": "memcached", "address": "m", "up": None, "interval_seconds": 30},
        {"name": "full", "type": "redis", "address": "f", "up": True, "last_poll_time": now,
         "memory": {"used": 63.5 * MiB, "limit": 64 * MiB, "evicts_when_full": False},
         "details": {"forecast": {"seconds_until_full": 0.0}}},
        {"name": "unbounded", "type": "app", "address": "u", "up": True, "last_poll_time": now,
         "memory": {"used": 3 * MiB, "limit": None}, "details": {"forecast": {"seconds_until_full": None}}},
    ]
    text = statuspage.render(records, version=bad, now=now)
    page = Page(text)
    assert "i" not in page.tags and "script" not in page.tags
    assert bad not in text and html.escape(bad) in text  # the raw string never reaches the markup
    assert '<meta http-equiv="refresh" content="5">' in text  # the fastest interval, raised to the floor
    assert page.summary == "5 targets: 3 up, 1 down, 1 not polled yet"

    cells, findings, bar = page.row(bad)
    assert cells["type"] == bad and cells["name"] == f"{bad}\n{bad}"
    assert cells["status"] == "up"
    assert cells["memory"].startswith("48.0 MiB / 64.0 MiB (75.0%)") and bar == "width:75.0%"
    assert cells["countdown"] == "2 h 05 min"
    assert cells["policy"] == f"evicts ({bad})"
    assert findings == [bad, "maxmemory_unset (acknowledged)"]
    assert cells["last-poll"] == "12 s ago\n2025-10-09 08:53:08 UTC"

    cells, _, _ = page.row("q")
    assert cells["status"] == f"down\n{bad}: {bad}"
    assert cells["memory"] == cells["countdown"] == cells["policy"] == "—"
    assert page.row("fresh")[0]["status"] == "not polled yet" and page.row("fresh")[0]["last-poll"] == "—"
    cells, _, bar = page.row("full")
    assert cells["countdown"] == "full now" and cells["policy"] == "rejects writes" and bar == "width:99.2%"
    assert 'class="fill crit" style="width:99.2%"' in text
    assert page.row("unbounded")[0]["memory"] == "3.0 MiB (no limit)"
    assert page.row("unbounded")[0]["countdown"] == "—"


def test_formatting_edges():
    assert [statuspage.format_bytes(n) for n in (0, 1023, 1024, 1536, 64 * MiB, 2**50 * 3000)] == \
        ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "64.0 MiB", "3000.0 PiB"]
    assert [statuspage.format_countdown(s) for s in (None, float("inf"), -3, 0.4, 59, 60, 3599, 86399, 90000)] == \
        ["—", "—", "full now", "full now", "59 s", "1 min", "59 min", "23 h 59 min", "1 d 1 h"]
    assert statuspage.refresh_seconds([]) == statuspage.REFRESH_DEFAULT
    assert statuspage.refresh_seconds([{"interval_seconds": 600}, {"interval_seconds": 15.2}]) == 16
    assert statuspage.refresh_seconds([{"interval_seconds": 3600}]) == statuspage.REFRESH_MAX


def test_a_secret_in_a_stored_error_is_redacted_on_the_page():
    """The page shows the /targets records after the same redaction: a password a server echoed in
    its error never reaches the HTML, escaped or not; the operator's own names stay readable."""
    secret = "pw&<Zk41-status-page>"
    remember(secret)
    payload = [{"name": "cache-a", "type": "redis", "address": "10.0.0.5:6379", "up": False,
                "interval_seconds": 15, "last_poll_time": time.time(),
                "last_error": {"reason": "auth", "message": f"server said: WRONGPASS {secret}"}}]
    server = make_server("127.0.0.1:0", Endpoints(metrics=lambda _: [], targets=lambda: payload,
                                                  ready=lambda: True, reload=lambda: (True, "")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/", timeout=10) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert secret not in text and html.escape(secret) not in text and "Zk41" not in text
    cells, _, _ = Page(text).row("cache-a")
    assert cells["status"] == "down\nauth: server said: WRONGPASS <redacted>"


# --- the live exporter over plain HTTP ---------------------------------------------------------

def test_status_page_is_behind_basic_auth_and_escapes_a_hostile_target_name(exporter_factory, tmp_path):
    web = write_web(tmp_path / "web.yml", {"basic_auth_users": {"prom": HASH}})
    ep = exporter_factory({"global": fast_global(), "targets": [
        {"name": EVIL, "type": "redis", "url": f"redis://127.0.0.1:{free_port()}"}]},
        args=["--web.config.file", str(web)], auth=("prom", PASSWORD))
    for auth in ("", "Basic cHJvbTp3cm9uZw=="):  # none, and prom:wrong
        status, body, headers = ep.get("/", headers={"Authorization": auth})
        assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Basic"), auth
        assert b"alert" not in body
    status, body, headers = ep.get("/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    text = body.decode()
    assert "<script" not in text.lower() and html.escape(EVIL) in text
    page = Page(text)
    cells, _, _ = page.row(EVIL)
    target = ep.target(EVIL)
    assert target["up"] is False
    assert cells["status"] == f"down\n{target['last_error']['reason']}: {target['last_error']['message']}"
    assert "refused" in cells["status"]
    # No external assets: nothing to fetch besides the page itself; links are relative.
    for needle in ("src=", "<link", "@import", "url(", "http://", "https://"):
        assert needle not in text, needle
    assert page.links == ["metrics", "targets", "healthz", "readyz"]
    assert '<meta http-equiv="refresh" content="5">' in text
    assert "docs/" in text


# --- the live exporter in a real browser -------------------------------------------------------

def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Root needs --no-sandbox; a private profile keeps runs independent; /dev/shm is small in containers.
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={profile}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT)
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


def _fill(server, values: int) -> None:
    # Just under 1 MiB each: one jemalloc size class, so used memory is predictable under a small maxmemory.
    client = server.client(decode_responses=False)
    for i in range(values):
        client.set(f"fill:{i}", b"x" * (MiB - 256))


def test_status_page_in_headless_chromium(redis_factory, exporter_factory, tmp_path):
    """Two Redis up (one evicting, one rejecting writes) and one target down: what the browser shows
    matches /targets, the hostile name is text, and the screenshot is a real rendering."""
    chromium = shutil.which("chromium")
    need(chromium is not None, "chromium not installed (Debian package chromium; `make test` installs it as root)")
    sessions = redis_factory(args=["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"])
    queue = redis_factory(args=["--maxmemory", "16mb", "--maxmemory-policy", "noeviction"])
    _fill(sessions, 40)
    _fill(queue, 12)
    # A 5 minute interval: every target is polled once at start and not again during the test, so the
    # page and /targets describe the same polls.
    ep = exporter_factory({"global": {"interval": "5m", "timeout": "2s"}, "targets": [
        redis_target("sessions", sessions), redis_target("queue", queue),
        {"name": EVIL, "type": "redis", "url": f"redis://127.0.0.1:{free_port()}"}]})
    before = {t["name"]: t for t in ep.targets()}

    profile = tmp_path / "chromium-profile"
    dom = _chromium(chromium, profile, "--dump-dom", f"{ep.url}/").stdout
    screenshot = tmp_path / "status-page.png"
    _chromium(chromium, profile, f"--screenshot={screenshot}", "--window-size=1280,800", f"{ep.url}/")
    targets = {t["name"]: t for t in ep.targets()}
    assert {n: t["last_poll_time"] for n, t in targets.items()} == \
        {n: t["last_poll_time"] for n, t in before.items()}, "a target was polled again during the test"

    page = Page(dom)
    assert "script" not in page.tags, "the hostile target name became markup"
    assert page.summary == "3 targets: 2 up, 1 down"
    for name, policy in (("sessions", "evicts (allkeys-lru)"), ("queue", "rejects writes (noeviction)")):
        t = targets[name]
        cells, findings, bar = page.row(name)
        assert cells["status"] == "up" and t["up"] is True
        used, limit = t["memory"]["used"], t["memory"]["limit"]
        assert limit == {"sessions": 64, "queue": 16}[name] * MiB
        assert cells["memory"] == f"{used / MiB:.1f} MiB / {limit / MiB:.1f} MiB ({used / limit * 100:.1f}%)"
        assert bar == f"width:{used / limit * 100:.1f}%"
        assert cells["policy"] == policy
        assert findings == [f["check"] + (" (acknowledged)" if f["acknowledged"] else "")
                            for f in t["details"]["findings"]]
        assert cells["countdown"] == statuspage.format_countdown(t["details"]["forecast"].get("seconds_until_full"))
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t["last_poll_time"]))
        assert cells["last-poll"].endswith(f"s ago\n{when}")
    assert 60 < targets["sessions"]["memory"]["used"] / (64 * MiB) * 100 < 70  # 40 MiB of 64: the fill shows

    down = targets[EVIL]
    cells, _, _ = page.row(EVIL)
    assert down["up"] is False and down["last_error"]["reason"] == "refused"
    assert cells["status"] == f"down\nrefused: {down['last_error']['message']}"

    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (1280, 800)
    # A blank 1280x800 page compresses to ~5 KB; this one has a table of text, bars and badges.
    assert len(png) > 25_000, f"screenshot is only {len(png)} bytes"
    if os.environ.get("STATUS_PAGE_SCREENSHOT"):
        shutil.copyfile(screenshot, REPO / os.environ["STATUS_PAGE_SCREENSHOT"])

