"""``cache-exporter demo``: throwaway redis-servers and a memcached under load, the exporter.

Three Redis servers show the three cases the exporter tells apart: one that rejects writes
when full (noeviction), one that evicts (allkeys-lru), and one with no maxmemory at all (its
limit falls back to the target's memory_limit). A small memcached fills up and evicts. When
nginx is installed, a caching proxy with ``proxy_cache_valid any 1m`` sits in front of an
origin that answers 503 for the first seconds and then recovers: the http_cache probe shows
the cached 503 and then the stale error after recovery.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import build_config
from exporter.daemon import Daemon
from exporter.http import parse_listen

MiB = 2**20
SERVERS = [
    # name, redis-server args, extra target config
    ("sessions", ["--maxmemory", "16mb", "--maxmemory-policy", "noeviction"], {}),
    ("catalog", ["--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru"], {}),
    ("unbounded", [], {"memory_limit": "256MiB"}),
]


# A caching reverse proxy, as the tests and the demo run it: nginx in the foreground, one process,
# every path under ``dir``. ``valid`` is the proxy_cache_valid line under test.
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
            add_header X-Cache-Status $upstream_cache_status{always};
            # A request with X-Cache-Bypass skips the cache and does not overwrite it.
            proxy_cache_bypass $http_x_cache_bypass;
            proxy_no_cache $http_x_cache_bypass;
        }}
        location /loop {{ return 302 /loop; }}
    }}
}}
"""
ORIGIN_FAILS_FOR = 6.0  # seconds the demo origin answers 503 before it recovers


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
                client.set(f"{name}:{i}", value, ex=ttl)
                client.get(f"{name}:{i // 2}")  # mostly hits...
                client.get(f"{name}:missing:{i}")  # ...and some misses
            except redis.exceptions.ResponseError:
                pass  # OOM on 'sessions' once full: exactly what the demo shows
            except redis.exceptions.ConnectionError:
                return
        if i % 50 == 0:
            stop.wait(0.05)


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
                                      valid="proxy_cache_valid any 1m;", always=" always"))
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


def _table(values: dict[tuple[str, str], float]) -> str:
    rows = [f"  {'target':<10} {'up':>2} {'used':>11} {'limit':>11} {'used%':>6} {'evicts':>6} "
            f"{'hit%':>5} {'evicted':>8} {'rejected':>8}"]
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
            f"{int(get('cache_evictions_total') or 0):>8} {int(get('cache_write_rejections_total') or 0):>8}")
    return "\n".join(rows)


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

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM ends the demo like Ctrl-C: servers stopped, files removed

    signal.signal(signal.SIGTERM, interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="cache-exporter-demo-"))
    procs: list[subprocess.Popen] = []
    servers: list[ThreadingHTTPServer] = []
    stop = threading.Event()
    daemon = None
    try:
        ports = {}
        targets = []
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
        config = build_config({"global": {"interval": "2s", "timeout": "1s", "labels": {"env": "demo"}},
                               "targets": targets}, "<demo>").config
        threading.Thread(target=_load, args=(ports, stop), daemon=True).start()
        if memcached:
            threading.Thread(target=_load_memcached, args=(mc_port, stop), daemon=True).start()
        from exporter.config import LoadResult

        daemon = Daemon(LoadResult(config), listen, None)
        daemon.start()
        host, port = daemon.address
        base = f"http://{host}:{port}"
        print(f"cache-exporter demo: throwaway servers under load (data in {workdir})")
        for name, args, extra in SERVERS:
            desc = " ".join(args) or f"no maxmemory, memory_limit {extra.get('memory_limit')}"
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
        print(f"\nLook at:  {base}/metrics   {base}/targets   {base}/\n")
        deadline = None if duration <= 0 else time.monotonic() + duration
        time.sleep(2.5)
        while deadline is None or time.monotonic() < deadline:
            values = _scrape(base + "/metrics")
            print(time.strftime("%H:%M:%S"), "live figures from /metrics:")
            print(_table(values), flush=True)
            if edge:
                print(_probe_line(values), flush=True)
            remaining = 5.0 if deadline is None else min(5.0, deadline - time.monotonic())
            if remaining <= 0:
                break
            time.sleep(remaining)
        print("\nsessions rejects writes when full (noeviction): watch 'rejected' grow once used% nears 100.")
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
