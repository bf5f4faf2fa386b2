"""``cache-exporter demo``: throwaway redis-servers and a memcached under load, the exporter.

One Redis fills toward its maxmemory at a steady pace and runs out about two minutes after the
start: the demo shows the exporter's countdown to full and the alert the shipped rules would
raise (alerts/build_rules.py, evaluated here the way Prometheus would), then the store running
out at about the predicted time. To show that within a minute, the exporter runs at ``SPEED``
times the speed: its forecast window and poll interval, and the rules' horizons, ``for:``
durations and ranges (the builder's own ``scale``), are all divided by ``SPEED``; the shipped
defaults are untouched.

Three more Redis servers show the other cases the exporter tells apart: one that rejects writes
when full (noeviction), one that evicts (allkeys-lru), and one with no maxmemory at all (its
limit falls back to the target's memory_limit). A small memcached fills up and evicts. When
nginx is installed, a caching proxy with ``proxy_cache_valid any 1m`` sits in front of an
origin that answers 503 for the first seconds and then recovers: the http_cache probe shows
the cached 503 and then the stale error after recovery.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import redis
from prometheus_client.parser import text_string_to_metric_families

from exporter import catalog
from exporter.config import build_config
from exporter.daemon import Daemon
from exporter.http import parse_listen
from exporter.targets import DEFAULT_FORECAST_WINDOW, DEFAULT_INTERVAL
from exporter.units import parse_duration

MiB = 2**20
# The demo's clock: the forecast window, the poll interval and the alert rules' times are all
# divided by this, so an hour of forecast window is a minute here (the rules' end-to-end tests
# use the same scale). Timeouts and the HTTP cache probe stay in real time: nginx's cache TTL does.
SPEED = 60
# Prometheus's default scrape and rule evaluation interval (1m), at the demo's speed.
EVALUATION_INTERVAL = 60.0 / SPEED
FILLING = "filling"
# The filling store reaches its maxmemory this long after its writer starts. The exporter gives a
# countdown once it has seen the growth for half the time left, a third of this in (~37 s), and the
# warning's for: (5 s at this speed) then fires it: ~45 s after the start, inside the minute promised.
FILL_SECONDS = 110.0
TABLE_EVERY = 5.0
SERVERS = [
    # name, redis-server args, extra target config
    (FILLING, ["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"], {}),
    ("sessions", ["--maxmemory", "16mb", "--maxmemory-policy", "noeviction"], {}),
    ("catalog", ["--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru"], {}),
    ("unbounded", [], {"memory_limit": "256MiB"}),
]


# The demo's caching reverse proxy (benchmarks/bench_stale_error.py runs it too): nginx in the
# foreground, one process, every path under ``dir``. ``valid`` is the proxy_cache_valid line.
NGINX_CONF = """\
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=api:1m max_size=10m inactive=10m;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_cache api;
            {valid}
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""
ORIGIN_FAILS_FOR = 6.0  # seconds the demo origin answers 503 before it recovers
UNBOUNDED_KEYS = 8192  # 'unbounded' rewrites this many keys (~20 MiB): a long demo must not eat the host
REPO = Path(__file__).resolve().parent.parent
BUILD_RULES = REPO / "alerts" / "build_rules.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(binary: str, workdir: Path, port: int, args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(workdir / f"redis-{port}.log"), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=1)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server on port {port} did not start")


def _start_memcached(binary: str, port: int) -> subprocess.Popen:
    user = ["-u", "root"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([binary, *user, "-U", "0", "-l", "127.0.0.1", "-p", str(port), "-m", "8"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"memcached on port {port} did not start")


def _load_memcached(port: int, stop: threading.Event) -> None:
    """Sets of mixed sizes (several slab classes) until it evicts, with hits and misses."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return
    i = 0
    with sock:
        while not stop.is_set():
            i += 1
            size = 200 + (i % 7) * 900
            value = b"m" * size
            sock.sendall(b"set frag:%d 0 0 %d noreply\r\n%s\r\nget frag:%d\r\nget nope:%d\r\n"
                         % (i, size, value, i // 2, i))
            reply = b""
            try:
                while reply.count(b"END\r\n") < 2 and not stop.is_set():
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    reply += chunk
            except OSError:
                return
            if i % 50 == 0:
                stop.wait(0.05)


def _load(ports: dict[str, int], stop: threading.Event) -> None:
    """Grow 'sessions' until it rejects writes, churn 'catalog' so it evicts, read both."""
    clients = {name: redis.Redis(port=port, socket_timeout=1) for name, port in ports.items()}
    value = b"x" * 2048
    i = 0
    while not stop.is_set():
        i += 1
        for name, client in clients.items():
            try:
                ttl = 600 if name == "sessions" and i % 3 == 0 else None
                key = i % UNBOUNDED_KEYS if name == "unbounded" else i
                client.set(f"{name}:{key}", value, ex=ttl)
                client.get(f"{name}:{i // 2}")  # mostly hits...
                client.get(f"{name}:missing:{i}")  # ...and some misses
            except redis.exceptions.ResponseError:
                pass  # OOM on 'sessions' once full: exactly what the demo shows
            except redis.exceptions.TimeoutError:
                pass  # a busy machine: carry on
            except redis.exceptions.ConnectionError:
                return
        if i % 50 == 0:
            stop.wait(0.05)


class Filler:
    """Writes to a noeviction Redis so that its used memory climbs in a straight line from where it
    is to its maxmemory in ``seconds``, then keeps writing (and gets -OOM). The writer reads
    used_memory back every tick instead of assuming a size per key, so the line holds whatever the
    Redis version, the allocator or a busy CPU do to its pace."""

    TICK = 0.1
    VALUE = b"f" * 1000
    PER_KEY = 1100  # a first guess of used_memory per key (value, key, entry); the feedback corrects it

    def __init__(self, port: int, seconds: float) -> None:
        self.client = redis.Redis(port=port, socket_timeout=1)
        self.seconds = seconds
        memory = self.client.info("memory")
        self.limit = int(memory["maxmemory"])
        self.start_used = int(memory["used_memory"])
        self.rate = (self.limit - self.start_used) / seconds  # bytes per second
        self.started = time.monotonic()
        self.full_at: float | None = None  # monotonic time of the first -OOM

    def run(self, stop: threading.Event) -> None:
        i = 0
        while not stop.wait(self.TICK):
            try:
                used = int(self.client.info("memory")["used_memory"])
                due = self.start_used + self.rate * (time.monotonic() - self.started)
                # Once full, a few writes a tick keep the rejections (and their alert) coming.
                n = 5 if self.full_at is not None else min(200, max(0, math.ceil((due - used) / self.PER_KEY)))
                pipe = self.client.pipeline(transaction=False)
                for _ in range(n):
                    i += 1
                    pipe.set(f"{FILLING}:{i}", self.VALUE)
                replies = pipe.execute(raise_on_error=False)
            except redis.exceptions.TimeoutError:
                continue  # a busy machine; the next tick catches up with the line
            except redis.exceptions.ConnectionError:
                return
            if self.full_at is None and any(isinstance(r, redis.exceptions.OutOfMemoryError) for r in replies):
                self.full_at = time.monotonic()


def load_build_rules() -> ModuleType | None:
    """alerts/build_rules.py (a script of the repository, not part of the package); None when the
    exporter runs from an installed package without the repository around it."""
    if not BUILD_RULES.is_file():
        return None
    spec = importlib.util.spec_from_file_location("build_rules", BUILD_RULES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class AlertRule:
    """One shipped alert rule the demo evaluates, its thresholds read from the rule as built."""

    name: str
    severity: str
    hold: float  # the rule's for:, in seconds
    horizon: float | None = None  # exhaustion: the countdown is below this
    beyond: float | None = None  # ... and at least this (a shorter horizon's rule has it below)
    evidence: float | None = None  # ... and at most this many times the forecast basis
    window: float | None = None  # rejections: the counter rose within this range

    def value(self, target: str, values: dict[tuple[str, str], float],
              rejections: list[tuple[float, float]], now: float) -> float | None:
        """The rule's value for ``target`` when its expression holds, else None."""
        if self.window is not None:
            recent = [v for t, v in rejections if t >= now - self.window]
            rise = recent[-1] - recent[0] if len(recent) >= 2 else 0.0
            return rise if rise > 0 else None
        until_full = values.get((catalog.CACHE_MEMORY_UNTIL_FULL, target))
        if until_full is None or values.get((catalog.CACHE_EVICTS_WHEN_FULL, target)) == 1:
            return None
        basis = values.get((catalog.CACHE_MEMORY_FORECAST_BASIS, target))
        if self.horizon is not None and not until_full < self.horizon:
            return None
        if self.beyond is not None and not until_full >= self.beyond:
            return None
        if self.evidence is not None and (basis is None or not until_full <= self.evidence * basis):
            return None
        return until_full


EXHAUSTION = "CacheMemoryExhaustionPredicted"
REJECTIONS = "CacheWritesRejected"
_UNTIL_FULL_TERM = re.compile(r"(?:and )?min without \(instance, pod\) \(last_over_time\("
                              + catalog.CACHE_MEMORY_UNTIL_FULL + r'\{store!="app"\}\[[^\]]+\]\)\) '
                              r"(<|>=|<=) ([0-9.e+]+)( \* max without \(instance, pod\) \(last_over_time\("
                              + catalog.CACHE_MEMORY_FORECAST_BASIS + r'\{store!="app"\}\[[^\]]+\]\)\))?')
_EVICTS_GUARD = "unless ignoring (instance, pod) " + catalog.CACHE_EVICTS_WHEN_FULL + " == 1"
_REJECTIONS_EXPR = re.compile(r"increase\(" + catalog.CACHE_WRITE_REJECTIONS + r"\[([^\]]+)\]\) > 0")


def rules_at(build_rules: ModuleType, scale: float) -> list[AlertRule]:
    """The memory-exhaustion and write-rejection rules as ``build_rules.build(scale)`` writes them,
    read back from their expressions: the demo evaluates what Prometheus would load. The rules'
    last_over_time ranges and min/max across instances bridge an exporter's restart; one exporter
    that does not restart reads its latest values. Raises ValueError when a rule's expression has a
    shape this reader does not know (the builder changed: update the reader, do not guess)."""
    out = []
    for group in build_rules.build(scale)["groups"]:
        for rule in group["rules"]:
            if rule["alert"] not in (EXHAUSTION, REJECTIONS):
                continue
            head = dict(name=rule["alert"], severity=rule["labels"]["severity"],
                        hold=parse_duration(rule.get("for", "0s")))
            if rule["alert"] == REJECTIONS:
                match = _REJECTIONS_EXPR.fullmatch(rule["expr"])
                if match is None:
                    raise ValueError(f"{REJECTIONS}: unexpected expression {rule['expr']!r}")
                out.append(AlertRule(**head, window=parse_duration(match.group(1))))
                continue
            lines = rule["expr"].split("\n")
            if lines[-1] != _EVICTS_GUARD:
                raise ValueError(f"{EXHAUSTION}: expected {_EVICTS_GUARD!r} last, got {lines[-1]!r}")
            terms: dict[str, float] = {}
            for line in lines[:-1]:
                match = _UNTIL_FULL_TERM.fullmatch(line)
                if match is None or (match.group(1) == "<=") != bool(match.group(3)) or match.group(1) in terms:
                    raise ValueError(f"{EXHAUSTION} ({head['severity']}): unexpected line {line!r}")
                terms[match.group(1)] = float(match.group(2))
            if "<" not in terms:
                raise ValueError(f"{EXHAUSTION} ({head['severity']}): no horizon in {rule['expr']!r}")
            out.append(AlertRule(**head, horizon=terms["<"], beyond=terms.get(">="), evidence=terms.get("<=")))
    if {r.name for r in out} != {EXHAUSTION, REJECTIONS}:
        raise ValueError(f"the rules no longer define both {EXHAUSTION} and {REJECTIONS}")
    return out


class AlertWatch:
    """The rules' pending/firing states over the scrapes, as Prometheus keeps them: a rule fires once
    its expression has held on every evaluation for its ``for:``."""

    def __init__(self, rules: list[AlertRule]) -> None:
        self.rules = rules
        self.since: dict[tuple[AlertRule, str], float] = {}  # when each (rule, target) started to hold
        self.firing: dict[tuple[AlertRule, str], float] = {}  # its value, once it fires
        self.rejections: dict[str, list[tuple[float, float]]] = {}
        self.window = max((r.window or 0.0 for r in rules), default=0.0)

    def evaluate(self, now: float, values: dict[tuple[str, str], float],
                 targets: list[str]) -> list[tuple[str, AlertRule, str, float]]:
        """One evaluation; returns what changed: (pending|firing|resolved, rule, target, value)."""
        changes = []
        for target in targets:
            history = self.rejections.setdefault(target, [])
            count = values.get((catalog.CACHE_WRITE_REJECTIONS, target))
            if count is not None:
                history.append((now, count))
            history[:] = [(t, v) for t, v in history if t >= now - self.window]
            for rule in self.rules:
                key = (rule, target)
                value = rule.value(target, values, history, now)
                if value is None:
                    self.since.pop(key, None)
                    if self.firing.pop(key, None) is not None:
                        changes.append(("resolved", rule, target, math.nan))
                    continue
                if key not in self.since:
                    self.since[key] = now
                    if rule.hold > 0:
                        changes.append(("pending", rule, target, value))
                if now - self.since[key] >= rule.hold:
                    if key not in self.firing:
                        changes.append(("firing", rule, target, value))
                    self.firing[key] = value
        return changes


    def summary(self) -> str:
        """The firing alerts by target: ``sessions CacheWritesRejected (critical); filling ...``."""
        by_target: dict[str, dict[str, list[str]]] = {}
        for rule, target in self.firing:
            by_target.setdefault(target, {}).setdefault(rule.name, []).append(rule.severity)
        return "; ".join(f"{target} " + ", ".join(f"{name} ({'+'.join(severities)})"
                                                 for name, severities in alerts.items())
                         for target, alerts in by_target.items())


def _countdown(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _real_life(seconds: float) -> str:
    """A demo duration in real life (a demo second is SPEED seconds), to two units: 6h, 1h19m, 2m."""
    seconds = round(seconds * SPEED)
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    first = next((i for i, (_, size) in enumerate(units) if seconds >= size), len(units) - 1)
    (big, size), (small, step) = units[first], units[min(first + 1, len(units) - 1)]
    rest = (seconds % size) // step if first < len(units) - 1 else 0
    return f"{seconds // size}{big}" + (f"{rest}{small}" if rest else "")


def alert_line(state: str, rule: AlertRule, target: str, value: float) -> str:
    """``ALERT firing CacheMemoryExhaustionPredicted{target="filling", severity="warning"}: ...``"""
    head = f"ALERT {state:<8} {rule.name}{{target=\"{target}\", severity=\"{rule.severity}\"}}"
    if state == "resolved":
        return head
    if rule.window is not None:
        why = f"{value:g} writes rejected in the last {_countdown(rule.window)} ({_real_life(rule.window)} / {SPEED})"
    else:
        parts = [f"full in {_countdown(value)} < {_countdown(rule.horizon or 0)} "
                 f"({_real_life(rule.horizon or 0)} / {SPEED})"]
        if rule.beyond is not None:
            parts.append(f">= {_countdown(rule.beyond)}")
        if rule.evidence is not None:
            parts.append(f"<= {rule.evidence:g} x the growth seen")
        why = ", ".join(parts)
    hold = f"for: {_countdown(rule.hold)} ({_real_life(rule.hold)} / {SPEED})" if rule.hold else "no for:"
    return f"{head}: {why}; {hold}"


def start_failing_origin(fails_until: float) -> ThreadingHTTPServer:
    """An origin that answers 503 until ``fails_until`` (monotonic), then 200."""

    class Origin(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server hook
            ok = time.monotonic() >= fails_until
            body = b"ok\n" if ok else b"backend unavailable\n"
            self.send_response(200 if ok else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _start_nginx(binary: str, workdir: Path, upstream_port: int) -> tuple[subprocess.Popen, int] | None:
    directory = workdir / "nginx"
    directory.mkdir()
    port = _free_port()
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=directory, port=port, upstream_port=upstream_port,
                                      valid="proxy_cache_valid any 1m;"))
    proc = subprocess.Popen([binary, "-p", str(directory), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    return None  # the demo goes on without the probe


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


def _probe_line(values: dict[tuple[str, str], float]) -> str:
    get = lambda metric: values.get((metric, "edge"))  # noqa: E731
    status, cached = get("http_cache_response_status_code"), get("http_cache_error_from_cache")
    if status is None:
        return "  edge       no probe answer yet"
    bypass, stale = get("http_cache_bypass_status_code"), get("http_cache_stale_error_after_recovery")
    return (f"  edge       HTTP {int(status)}  error served from cache: {'yes' if cached else 'no '}  "
            f"origin past the cache: {'-' if bypass is None else int(bypass)}  "
            f"stale error after recovery: {'YES' if stale else 'no'}")


def _scrape(url: str) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if "target" in s.labels:
                out[(s.name, s.labels["target"])] = s.value
    return out


def _fmt_bytes(n: float | None) -> str:
    return "-" if n is None else f"{n / MiB:7.1f} MiB"


def _until_full(value: float | None) -> str:
    if value is None:
        return "-"
    return "no" if math.isinf(value) else _countdown(value)


def _table(values: dict[tuple[str, str], float]) -> str:
    rows = [f"  {'target':<10} {'up':>2} {'used':>11} {'limit':>11} {'used%':>6} {'evicts':>6} "
            f"{'hit%':>5} {'evicted':>8} {'rejected':>8} {'full in':>7}"]
    for name in [n for n, _, _ in SERVERS] + ["memcached"]:
        get = lambda metric, name=name: values.get((metric, name))  # noqa: E731
        hits, misses = get("cache_hits_total") or 0, get("cache_misses_total") or 0
        ratio = get("cache_memory_utilization_ratio")
        evicts = get("cache_evicts_when_full")
        rows.append(
            f"  {name:<10} {int(get('cache_up') or 0):>2} {_fmt_bytes(get('cache_memory_used_bytes')):>11} "
            f"{_fmt_bytes(get('cache_memory_limit_bytes')):>11} "
            f"{'-' if ratio is None else f'{ratio * 100:5.1f}%':>6} "
            f"{'-' if evicts is None else ('yes' if evicts else 'no'):>6} "
            f"{(hits / (hits + misses) * 100 if hits + misses else 0):4.0f}% "
            f"{int(get('cache_evictions_total') or 0):>8} {int(get('cache_write_rejections_total') or 0):>8} "
            f"{_until_full(get(catalog.CACHE_MEMORY_UNTIL_FULL)):>7}")
    return "\n".join(rows)


class _Countdown:
    """What the demo tells about the filling store: its countdown, then when it ran out."""

    def __init__(self, start: float, filler: Filler) -> None:
        self.start = start
        self.filler = filler
        self.first: tuple[float, float] | None = None  # (when, predicted full time) of the first countdown
        self.last: float | None = None  # the predicted full time of the latest countdown before full
        self.told_full = False

    def at(self, moment: float, wall: bool = True) -> str:
        """A monotonic time as the time since the demo's start, after the wall clock time."""
        elapsed = max(0, round(moment - self.start))
        since = f"+{elapsed // 60:02d}:{elapsed % 60:02d}"
        if not wall:
            return since
        clock = time.strftime("%H:%M:%S", time.localtime(time.time() - (time.monotonic() - moment)))
        return f"{clock} ({since})"

    def update(self, now: float, values: dict[tuple[str, str], float]) -> list[str]:
        """Lines to print now: the first countdown, and the store running out."""
        out = []
        left = values.get((catalog.CACHE_MEMORY_UNTIL_FULL, FILLING))
        if self.filler.full_at is None and left is not None and 0 < left < math.inf:
            self.last = now + left
            if self.first is None:
                self.first = (now, self.last)
                out.append(f"{self.at(now)} {self.line(values)}")
        if self.filler.full_at is not None and not self.told_full:
            self.told_full = True
            full = self.filler.full_at
            if self.first is None:
                out.append(f"{self.at(full)} {FILLING} is full (Redis answers -OOM) before any countdown was given")
            else:
                out.append(f"{self.at(full)} {FILLING} is full: Redis answers -OOM to its writes. Full at "
                           f"{self.at(full, False)}, predicted {self.at(self.last or full, False)} (the first "
                           f"countdown, at {self.at(self.first[0], False)}, said {self.at(self.first[1], False)})")
        return out

    def line(self, values: dict[tuple[str, str], float]) -> str:
        left = values.get((catalog.CACHE_MEMORY_UNTIL_FULL, FILLING))
        growth = values.get((catalog.CACHE_MEMORY_GROWTH, FILLING))
        basis = values.get((catalog.CACHE_MEMORY_FORECAST_BASIS, FILLING)) or 0.0
        if self.filler.full_at is not None:
            return f"{FILLING:<10} full since {self.at(self.filler.full_at)}: writes are rejected"
        if left is None or math.isinf(left) or left <= 0:
            return (f"{FILLING:<10} no countdown yet: the exporter gives one once it has seen the growth for half "
                    f"the time left ({_countdown(time.monotonic() - self.filler.started)} of writes so far)")
        rate = "" if growth is None else f", growing {growth / 1024:.0f} KiB/s"
        return (f"{FILLING:<10} countdown to full: {_countdown(left)}, full at {self.at(time.monotonic() + left)}"
                f"{rate}, seen growing for {_countdown(basis)} (in real life: full in {_real_life(left)})")


def run_demo(duration: float, listen: str) -> int:
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    binary = shutil.which("redis-server")
    if binary is None:
        print("demo: redis-server is not installed; `make demo` installs it when run as root "
              "(apt-get install redis-server), otherwise install it and retry.", file=sys.stderr)
        return 1
    host = "127.0.0.1" if host == "0.0.0.0" else host
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        if probe.connect_ex((host, port)) == 0:  # the usual port is busy: pick another
            listen = f"[{host}]:{_free_port()}" if ":" in host else f"{host}:{_free_port()}"
    build_rules = load_build_rules()
    try:
        rules = rules_at(build_rules, 1 / SPEED) if build_rules else []
        rules_problem = None if build_rules else f"{BUILD_RULES} is not here (an installed package)"
    except ValueError as exc:
        rules, rules_problem = [], str(exc)

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM ends the demo like Ctrl-C: servers stopped, files removed

    signal.signal(signal.SIGTERM, interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="cache-exporter-demo-"))
    procs: list[subprocess.Popen] = []
    servers: list[ThreadingHTTPServer] = []
    stop = threading.Event()
    daemon = None
    base = None
    try:
        ports = {}
        targets: list[dict[str, object]] = []
        for name, args, extra in SERVERS:
            port = _free_port()
            procs.append(_start_server(binary, workdir, port, args))
            ports[name] = port
            targets.append({"name": name, "type": "redis", "url": f"redis://127.0.0.1:{port}", **extra})
        memcached = shutil.which("memcached")
        if memcached:
            mc_port = _free_port()
            procs.append(_start_memcached(memcached, mc_port))
            targets.append({"name": "memcached", "type": "memcached", "address": f"127.0.0.1:{mc_port}"})
        nginx = nginx_binary()
        edge = None
        if nginx:
            origin = start_failing_origin(time.monotonic() + ORIGIN_FAILS_FOR)
            servers.append(origin)
            edge = _start_nginx(nginx, workdir, origin.server_address[1])
        if edge:
            procs.append(edge[0])
            targets.append({"name": "edge", "type": "http_cache", "url": f"http://127.0.0.1:{edge[1]}/api/catalog",
                            "interval": "2s", "timeout": "1s", "bypass": {"query_param": "cache_bust"}})
        interval = DEFAULT_INTERVAL / SPEED
        window = DEFAULT_FORECAST_WINDOW / SPEED
        config = build_config({"global": {"interval": f"{interval:g}s", "timeout": f"{interval:g}s",
                                          "forecast_window": f"{window:g}s", "labels": {"env": "demo"}},
                               "targets": targets}, "<demo>").config
        start = time.monotonic()
        filler = Filler(ports[FILLING], FILL_SECONDS)
        threading.Thread(target=filler.run, args=(stop,), daemon=True).start()
        threading.Thread(target=_load, args=({n: p for n, p in ports.items() if n != FILLING}, stop),
                         daemon=True).start()
        if memcached:
            threading.Thread(target=_load_memcached, args=(mc_port, stop), daemon=True).start()
        from exporter.config import LoadResult

        daemon = Daemon(LoadResult(config), listen, None)
        daemon.start()
        host, port = daemon.address
        base = f"http://{host}:{port}"
        print(f"cache-exporter demo: throwaway servers under load, the exporter at {SPEED}x speed "
              f"(data in {workdir})")
        if duration > 0:
            print(f"  Runs for {duration:g} s, then stops everything (`make demo DURATION=0`, or "
                  "--duration 0, keeps it running until Ctrl-C).")
        else:
            print("  Runs until Ctrl-C (DURATION=0), then stops everything.")
        print(f"  Status page: {base}/   (while the demo runs)")
        print(f"  {SPEED}x speed: the forecast window is {window:g}s ({_real_life(window)} / {SPEED}), targets "
              f"are polled every {interval:g}s ({_real_life(interval)} / {SPEED}), and the alert rules are "
              f"alerts/build_rules.py at scale 1/{SPEED}\n  (their horizons and for: durations divided by {SPEED}), "
              f"evaluated every {EVALUATION_INTERVAL:g}s: a countdown of 1m here is 1h in real life.")
        if rules_problem:
            print(f"  No alerts shown: {rules_problem}.")
        for name, args, extra in SERVERS:
            desc = " ".join(args) or f"no maxmemory, memory_limit {extra.get('memory_limit')}"
            if name == FILLING:
                desc += (f": a writer adds {filler.rate / 1024:.0f} KiB/s, full about "
                         f"{_countdown(FILL_SECONDS)} after the start")
            print(f"  {name:<10} redis://127.0.0.1:{ports[name]:<5}  {desc}")
        if memcached:
            print(f"  {'memcached':<10} 127.0.0.1:{mc_port:<13}  -m 8 (evicts when full)")
        else:
            print("  (memcached is not installed: the demo runs without it)")
        if edge:
            print(f"  {'edge':<10} http://127.0.0.1:{edge[1]:<6}  nginx, proxy_cache_valid any 1m, in front of an "
                  f"origin that answers 503 for {ORIGIN_FAILS_FOR:.0f} s, then 200")
        else:
            print("  (nginx is not installed: the demo runs without the HTTP cache probe)")
        print(f"\nLook at:  {base}/   {base}/metrics   {base}/targets\n", flush=True)
        deadline = None if duration <= 0 else start + duration
        watch = AlertWatch(rules)
        story = _Countdown(start, filler)
        names = [t.name for t in config.targets]
        next_table = start + 2.5
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            values = _scrape(base + "/metrics")
            lines = story.update(now, values)
            lines += [f"{story.at(now)} {alert_line(state, rule, target, value)}"
                      for state, rule, target, value in watch.evaluate(now, values, names)]
            if now >= next_table:
                next_table += TABLE_EVERY
                lines.append(f"{story.at(now)} live figures from /metrics:\n{_table(values)}")
                if edge:
                    lines.append(_probe_line(values))
                lines.append("  " + story.line(values))
                lines.append(f"  alerts firing: {watch.summary() or 'none'}")
            if lines:
                print("\n".join(lines), flush=True)
            wake = now + EVALUATION_INTERVAL
            time.sleep(max(0.0, min(wake, deadline or wake) - time.monotonic()))
        if filler.full_at is not None and story.first is not None:
            print(f"\n{FILLING} rejects writes now that it is full (noeviction): the exporter counted down to it "
                  f"from {story.at(story.first[0], False)} and {EXHAUSTION} fired before it ran out.")
        elif story.first is not None:
            print(f"\n{FILLING} runs out at about {story.at(story.last or story.first[1], False)}: run the demo "
                  "longer to see it.")
        else:
            print(f"\n{FILLING} fills toward its maxmemory: its countdown comes about "
                  f"{_countdown(FILL_SECONDS / 3)} in; run the demo longer to see it.")
        print("sessions rejects writes when full (noeviction): watch 'rejected' grow once used% nears 100.")
        print("catalog evicts (allkeys-lru): at 100% it is working as designed; watch 'evicted' and hit%.")
        print("unbounded has no maxmemory: its limit is the memory_limit from the config.")
        print("memcached counts slab pages (total_malloced) against -m: at 100% it evicts by design.")
        if edge:
            print("edge: nginx cached the origin's 503 and serves it for a minute after the origin recovered;\n"
                  "      the probe asks past the cache (?cache_bust=...) and sees the origin answer 200.")
        if deadline is not None:
            print("Run `make demo DURATION=0` to keep it running until Ctrl-C.")
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop.set()
        if daemon is not None:
            daemon.stop()
        for server in servers:
            server.shutdown()
            server.server_close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
        if base is not None:
            print(f"\nThe demo has ended: its servers are stopped and {base}/ (and the links above) no longer "
                  "answer.", flush=True)
