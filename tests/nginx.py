"""A real nginx caching reverse proxy in front of an upstream the test switches between healthy and failing."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import free_port, need, stop_process, wait_until

# nginx in the foreground, one process, every path under ``dir``. ``valid`` is the proxy_cache_valid
# line under test; ``always`` is " always" or "" (without it, add_header skips error responses).
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


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


class Upstream:
    """The origin: answers 200 while healthy, 503 while failing; counts requests by path.

    Subclasses change the answers by overriding ``answer``.
    """

    def __init__(self) -> None:
        self.healthy = True
        self.requests: list[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server hook
                upstream.requests.append(self.path)
                status, headers, body = upstream.answer(self.path)
                self.send_response(status)
                for name, value in {"Content-Type": "text/plain", **headers,
                                    "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return (200, {}, b"ok\n") if self.healthy else (503, {}, b"backend unavailable\n")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_LOST_PORT = object()  # readiness' answer when another server took the port first


def listening_pid_owns(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a TCP socket listening on ``port`` (from /proc, Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    try:
        return any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process or one of its descriptors went away meanwhile
        return False


class Nginx:
    def __init__(self, directory: Path, upstream: Upstream, valid: str, always: bool = True) -> None:
        binary = nginx_binary()
        need(binary is not None, "nginx is not installed (apt-get install nginx)")
        assert binary is not None
        self.dir = directory
        self.conf = directory / "nginx.conf"
        # free_port() only says the port was free a moment ago: another test's server may bind it
        # before nginx does. nginx then exits ("Address already in use") while a readiness check
        # by connecting would have reached that other server, so readiness asks whether nginx owns
        # the listener, and a lost race is retried on a new port.
        for attempt in range(3):
            self.port = free_port()
            self.conf.write_text(NGINX_CONF.format(dir=directory, port=self.port, upstream_port=upstream.port,
                                                   valid=valid, always=" always" if always else ""))
            if attempt == 0:
                test = subprocess.run([binary, "-t", "-p", str(directory), "-c", str(self.conf)],
                                      capture_output=True, text=True, timeout=30)
                assert test.returncode == 0, test.stderr
            self.proc = subprocess.Popen([binary, "-p", str(directory), "-c", str(self.conf)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if wait_until(self._ready, timeout=10, message="nginx listening") is not _LOST_PORT:
                return
        raise AssertionError("nginx lost its port to another listener three times")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> object:
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            if "Address already in use" in err:
                return _LOST_PORT
            raise AssertionError(f"nginx exited: {err}")
        return listening_pid_owns(self.proc.pid, self.port)

    def stop(self) -> None:
        stop_process(self.proc)


@contextmanager
def caching_proxy(directory: Path, valid: str, always: bool = True) -> Iterator[tuple[Nginx, Upstream]]:
    directory.mkdir(parents=True, exist_ok=True)
    upstream = Upstream()
    try:
        proxy = Nginx(directory, upstream, valid, always)
        try:
            yield proxy, upstream
        finally:
            proxy.stop()
    finally:
        upstream.stop()
