"""The status page at ``/``: one HTML table row per target, rendered from the /targets records.

It reads only what the daemon already stored (the same records /targets serves, redacted), so a
page view never contacts a target. Plain HTML with inline CSS and a meta refresh: no script, no
external asset, so it works behind the web config's basic auth and in a locked-down browser.
Every value from a target, a store or the config goes through ``html.escape``.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

REFRESH_MIN, REFRESH_MAX = 5, 60  # seconds; the shortest poll interval, kept within these bounds
REFRESH_DEFAULT = 10  # with no targets
WARN_SHARE, CRIT_SHARE = 0.80, 0.95  # bar colours: the share of the limit used

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #ddd;padding:.45em .6em;text-align:left;vertical-align:top}
th{background:#eee;font-weight:600}
.up{color:#1a7f37;font-weight:600}.down{color:#c62828;font-weight:600}.pending{color:#777}
.reason{color:#c62828;font-size:.9em;display:inline-block;max-width:26em}
.addr,.muted{color:#777;font-size:.9em}
.bar{width:12em;height:.8em;background:#e6e6e6;border-radius:3px;overflow:hidden;margin-top:.2em}
.fill{height:100%;background:#2e7d32}.fill.warn{background:#ef6c00}.fill.crit{background:#c62828}
.finding{display:inline-block;padding:0 .35em;margin:0 .2em .2em 0;border-radius:3px;font-size:.85em;
  background:#fff3e0;border:1px solid #ef6c00}
.finding.critical{background:#ffebee;border-color:#c62828}.finding.info{background:#e3f2fd;border-color:#1565c0}
.finding.ack{background:#f0f0f0;border-color:#bbb;color:#777}
footer{margin-top:1em;color:#555}
""".strip()


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def format_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``64.0 MiB``: binary units, one decimal."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024 or unit == "PiB":
            break
    return f"{n:.1f} {unit}"


def format_countdown(seconds: float | None) -> str:
    """The time to full as an operator reads it: ``45 s``, ``12 min``, ``3 h 05 min``, ``2 d 4 h``;
    ``—`` when there is none (no limit, not growing, or not sure yet)."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = max(0, int(seconds))
    if s == 0:
        return "full now"
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def refresh_seconds(targets: Sequence[Mapping[str, Any]]) -> int:
    """Reload about as often as the fastest target is polled: faster shows nothing new."""
    intervals = [t["interval_seconds"] for t in targets if isinstance(t.get("interval_seconds"), (int, float))]
    if not intervals:
        return REFRESH_DEFAULT
    return int(min(REFRESH_MAX, max(REFRESH_MIN, math.ceil(min(intervals)))))


def render(targets: Sequence[Mapping[str, Any]], version: str, now: float | None = None) -> str:
    """The whole page for ``targets`` (records shaped like /targets' entries)."""
    now = time.time() if now is None else now
    up = sum(1 for t in targets if t.get("up") is True)
    down = sum(1 for t in targets if t.get("up") is False)
    pending = len(targets) - up - down
    summary = f"{len(targets)} targets: {up} up, {down} down" + (f", {pending} not polled yet" if pending else "")
    rows = "\n".join(_row(t, now) for t in targets) or \
        '<tr><td colspan="8" class="muted">no targets configured</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh_seconds(targets)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cache-exporter status</title>
<style>{_STYLE}</style></head>
<body>
<h1>cache-exporter {_e(version)}</h1>
<p>A Prometheus exporter that warns before a cache runs out of memory. <strong id="summary">{_e(summary)}</strong>
<span class="muted">(as of {_e(_timestamp(now))}; from the stored polls: a page view never contacts a
target)</span></p>
<table id="targets">
<thead><tr><th>Target</th><th>Type</th><th>Status</th><th>Memory used / limit</th><th>Time to full</th>
<th>When full</th><th>Audit findings</th><th>Last poll</th></tr></thead>
<tbody>
{rows}
</tbody></table>
<footer>
<a href="metrics">/metrics</a> (Prometheus metrics) &middot; <a href="targets">/targets</a> (the same state as JSON)
&middot; <a href="healthz">/healthz</a> &middot; <a href="readyz">/readyz</a>
&middot; POST /-/reload re-reads the config (with --web.enable-lifecycle; SIGHUP always works)
&middot; Documentation: <code>README.md</code> and the <code>docs/</code> directory of the cache-exporter repository.
</footer>
</body></html>
"""


def _row(t: Mapping[str, Any], now: float) -> str:
    memory = t.get("memory") or {}
    details = t.get("details") or {}
    forecast = details.get("forecast") or {}
    cells = [
        f'<td class="name">{_e(t.get("name", ""))}<br><span class="addr">{_e(t.get("address", ""))}</span></td>',
        f'<td class="type">{_e(t.get("type", ""))}</td>',
        f'<td class="status">{_status(t)}</td>',
        f'<td class="memory">{_memory(memory)}</td>',
        f'<td class="countdown">{_e(format_countdown(forecast.get("seconds_until_full")))}</td>',
        f'<td class="policy">{_policy(memory)}</td>',
        f'<td class="findings">{_findings(details.get("findings") or [])}</td>',
        f'<td class="last-poll">{_last_poll(t.get("last_poll_time"), now)}</td>',
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _status(t: Mapping[str, Any]) -> str:
    if t.get("up") is True:
        return '<span class="up">up</span>'
    if t.get("up") is None:
        return '<span class="pending">not polled yet</span>'
    error = t.get("last_error") or {}
    reason = error.get("reason") or "error"
    message = error.get("message") or ""
    return f'<span class="down">down</span><br><span class="reason">{_e(reason)}: {_e(message)}</span>'


def _memory(memory: Mapping[str, Any]) -> str:
    used, limit = memory.get("used"), memory.get("limit")
    if used is None:
        return "—"
    if not limit:
        return f"{_e(format_bytes(used))} <span class=\"muted\">(no limit)</span>"
    share = used / limit
    level = " crit" if share >= CRIT_SHARE else " warn" if share >= WARN_SHARE else ""
    width = min(100.0, max(0.0, share * 100))
    label = f"{format_bytes(used)} / {format_bytes(limit)} ({share * 100:.1f}%)"
    return (f'{_e(label)}<div class="bar" title="{_e(label)}">'
            f'<div class="fill{level}" style="width:{width:.1f}%"></div></div>')


def _policy(memory: Mapping[str, Any]) -> str:
    evicts, policy = memory.get("evicts_when_full"), memory.get("eviction_policy")
    text = "evicts" if evicts is True else "rejects writes" if evicts is False else "—"
    return _e(text) + (f' <span class="muted">({_e(policy)})</span>' if policy else "")


def _findings(findings: Sequence[Mapping[str, Any]]) -> str:
    if not findings:
        return '<span class="muted">none</span>'
    out = []
    for f in findings:
        ack = bool(f.get("acknowledged"))
        css = "ack" if ack else str(f.get("severity", "warning"))
        tip = f"{f.get('severity', '')}{', acknowledged' if ack else ''}: {f.get('message', '')}"
        out.append(f'<span class="finding {_e(css)}" title="{_e(tip)}">{_e(f.get("check", ""))}'
                   f'{" (acknowledged)" if ack else ""}</span>')
    return "".join(out)


def _last_poll(when: object, now: float) -> str:
    if not isinstance(when, (int, float)):
        return "—"
    return f"{max(0, now - when):.0f} s ago<br><span class=\"muted\">{_e(_timestamp(when))}</span>"


def _timestamp(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))
