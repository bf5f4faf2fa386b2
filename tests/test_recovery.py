"""Recovery from real outages, at the shipped defaults and with every timer scaled together.

The issue "Keep watching through every outage, at the default settings": after an outage a
target was never polled successfully again at the default settings, and the old suite hid it
with a 0.5 s reconnect backoff cap. Defaults are the product, so nothing here is tuned for the
test: the ``defaults`` run sets no interval, timeout or reconnect setting at all (15 s and 5 s,
http_cache 30 s), and the ``scaled`` run divides every one of those timers by 15 together
(1 s and 333 ms, http_cache 2 s) and changes nothing else.

One exporter per scale watches real servers: a redis, a memcached, the Node.js app of
tests/apps/node_heap_app (type app) and nginx in front of an upstream (type http_cache), each
faulted by its own thread, all in parallel; a second redis for one long outage (150 s at
defaults: the old code took a median 209 s to notice a server back after 120 s or more); and
two control targets, a redis and a memcached, that nobody touches. The faults: freeze (SIGSTOP
for D, then SIGCONT), kill -9 and a restart on the same port after D, a graceful stop and a
restart after D, for nginx kill -9 and stop (and freeze, scaled), and for the Node app a crash
loop: kill -9 and restart at once, life after life, each of which must be polled successfully.
D is two of the target's intervals, so several polls fail.

For each fault, ``t_back`` is when the test's own client (PING, ``version``, an HTTP GET) saw
the server answer again, and ``t_up`` the end of the exporter's first successful poll of the
target that began after the fault was in place (``/targets``: ``last_poll_time`` minus
``last_poll_duration_seconds``; Unix times). Asserted per fault:

* ``t_up - t_back <= interval + timeout + slack``: back to ``cache_up 1`` within one interval
  (plus the poll's own deadline) of the server being back;
* no poll that began after ``t_back`` failed (a new life is watched from its first poll: a stale
  connection, or a wait before reconnecting, costs a whole interval, which the slack could hide);
* the outage was seen: at least one poll failed, with the reason the fault calls for.

Over the run: the controls were polled on schedule (elapsed / interval, +-2) with no error, no
target ever had a poll skipped (``cache_exporter_polls_skipped_total`` 0), and the exporter's
fds and threads came back to their warm-up level. The figures are printed (``pytest -s``) and
written to ``recovery-<scale>.json`` in the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    REPO,
    ExporterProcess,
    MemcachedServer,
    RedisServer,
    free_port,
    memcached_target,
    need,
    redis_target,
)
from nginx import Nginx, Upstream, nginx_binary

NODE_APP = REPO / "tests" / "apps" / "node_heap_app"

# --- the two timer scales ------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    name: str
    divisor: int  # every shipped timer is divided by this, all of them together
    config_global: dict[str, str] | None  # the config's `global` section; None: no section at all
    probe_interval: str | None  # the http_cache target's `interval`; None: not set
    # Slack on top of interval + timeout. It is for the machine, not for the exporter: a poll is
    # due on the target's grid, and what can make it end later than interval + timeout after
    # the server is back is a late wake-up of the timer thread, of a pool thread, and GIL
    # hand-offs in the exporter, each one a scheduling latency on a busy 2-core box (tens of ms,
    # a few hundred at worst with two CPU hogs, as in the busy-CPU run). Those costs do not
    # shrink when the timers do, hence no division by 15 here. It stays small next to the
    # interval at defaults (10 %); at the scaled run it is an interval, so a defect that costs
    # one whole interval (a stale connection, a wait before reconnecting) could hide in it: the
    # per-fault "no poll that began after t_back failed" check catches exactly those, whatever
    # the slack.
    slack: float
    cycles: int  # how many times each server's plan of faults is run
    lives: int  # lives of the Node app's crash loop, per cycle
    nginx_kinds: tuple[str, ...]
    observe: float  # seconds between two reads of /targets

    @property
    def interval(self) -> float:
        return 15.0 / self.divisor

    @property
    def timeout(self) -> float:
        return round(5.0 / self.divisor, 3)  # 0.333: the config takes milliseconds

    @property
    def probe(self) -> float:
        return 30.0 / self.divisor


SCALES = {
    "defaults": Scale("defaults", 1, None, None, slack=1.5, cycles=1, lives=3, nginx_kinds=("kill9", "stop"),
                      observe=0.2),
    "scaled": Scale("scaled", 15, {"interval": "1s", "timeout": "333ms"}, "2s", slack=1.0, cycles=3, lives=6,
                    nginx_kinds=("kill9", "stop", "freeze"), observe=0.1),
}
LONG_OUTAGE = 150.0  # seconds at defaults (divided like every timer at the scaled run)
ROUTINE_OUTAGE_INTERVALS = 2  # D, in intervals of the faulted target
GOLDEN = (5**0.5 - 1) / 2  # pauses between faults: k * GOLDEN mod 1 intervals, spread evenly over [0, 1)
START_MARGIN = 0.2  # a poll "began after t_back" when its start is later than t_back + this
EXPECTED_REASONS = {"freeze": {"timeout"}, "kill9": {"refused", "reset"}, "stop": {"refused", "reset"},
                    "long-outage": {"refused", "reset"}, "crash-loop": {"refused", "reset"}}

FAULTY_REDIS, LONG_REDIS, FAULTY_MEMCACHED = "redis-faulty", "redis-long", "memcached-faulty"
FAULTY_APP, FAULTY_EDGE = "node-faulty", "edge-faulty"
CONTROL_REDIS, CONTROL_MEMCACHED = "redis-control", "memcached-control"
CONTROLS = (CONTROL_REDIS, CONTROL_MEMCACHED)


# --- processes the test starts, faults and always stops -----------------------------------


class Stopped(Exception):
    """The test is being torn down: start nothing more."""


class Processes:
    """Every server process of the test; ``close`` kills them all (thawed first) and, from then
    on, ``popen`` refuses, so a fault thread can never start a server after teardown."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closed = False
        self.procs: list[subprocess.Popen] = []

    def popen(self, cmd: list[str], **kw: Any) -> subprocess.Popen:
        with self.lock:
            if self.closed:
                raise Stopped
            proc = subprocess.Popen(cmd, **kw)
            self.procs.append(proc)
            return proc

    def adopt(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs.append(proc)

    def close(self) -> None:
        with self.lock:
            self.closed = True
        for proc in self.procs:
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(10)


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on ``port`` (and not some other process)."""
    wanted = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    wanted.add(f"socket:[{fields[9]}]")
    for fd in os.listdir(f"/proc/{pid}/fd") if wanted else ():
        with suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                return True
    return False


def _task_states(pid: int) -> set[str]:
    states = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with suppress(FileNotFoundError):
            states.add(Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()[0])
    return states


class Server:
    """A real server the test freezes, kills, stops and restarts on the same port.

    While it is down its port is held by a bound socket that does not listen: a connection is
    refused exactly as to a free port, but no other process (other test sessions run in this
    checkout at the same time) can get the port from ``free_port()`` and start its own server
    there, which the test would then take for this one being back.
    """

    graceful = signal.SIGTERM
    port: int

    def __init__(self, target: str, procs: Processes, proc: subprocess.Popen | None) -> None:
        self.target = target
        self.procs = procs
        self.proc = proc
        self.placeholder: socket.socket | None = None
        if proc is not None:
            procs.adopt(proc)

    def command(self) -> list[str]:
        raise NotImplementedError

    def popen_kwargs(self) -> dict[str, Any]:
        return {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}

    def answers(self) -> bool:
        raise NotImplementedError

    def started(self, proc: subprocess.Popen) -> None:
        """Hook: the fixture's object learns its new process (so its teardown kills it too)."""

    def hold_port(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT entries of the old server
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError as exc:
            sock.close()
            raise AssertionError(f"{self.target}: port {self.port} was taken as soon as the server was gone: "
                                 f"{exc}") from None
        self.placeholder = sock

    def release_port(self) -> None:
        if self.placeholder is not None:
            self.placeholder.close()
            self.placeholder = None

    def spawn(self) -> float:
        """Start it (again, on the same port); return when it answers (that moment, Unix time)."""
        self.release_port()
        self.proc = self.procs.popen(self.command(), **self.popen_kwargs())
        self.started(self.proc)
        return self.wait_answering()

    def wait_answering(self, timeout: float = 30.0) -> float:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.procs.closed:
                raise Stopped
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.target}: the server exited with {self.proc.returncode}")
            try:
                if self.answers():
                    answered = time.time()
                    if _listens(self.proc.pid, self.port):
                        return answered
                    if self.proc.poll() is None:  # the answer came from another process on the port
                        raise AssertionError(f"{self.target}: something else answers on port {self.port}")
            except AssertionError:
                raise
            except Exception:  # not answering yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.target}: the server did not answer within {timeout:g}s")
            time.sleep(0.02)

    def freeze(self) -> float:
        """SIGSTOP; return once every thread of the process is stopped."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while _task_states(self.proc.pid) - {"T", "t"}:
            assert time.monotonic() < deadline, f"{self.target}: still running 10s after SIGSTOP"
            time.sleep(0.005)
        return time.time()

    def thaw(self) -> float:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        return self.wait_answering()

    def kill(self) -> float:
        """kill -9; return once the process is gone."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.hold_port()
        return time.time()

    def stop(self) -> float:
        """Graceful stop; return once the process is gone."""
        assert self.proc is not None
        self.proc.send_signal(self.graceful)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.target}: did not stop within 15s of {self.graceful!r}") from None
        self.hold_port()
        return time.time()


class StoreProc(Server):
    """A redis-server or memcached started by its conftest fixture, restarted with the same command."""

    def __init__(self, target: str, procs: Processes, server: RedisServer | MemcachedServer) -> None:
        super().__init__(target, procs, server.proc)
        self.server = server
        self.port = server.port

    def command(self) -> list[str]:
        return self.server.command()

    def started(self, proc: subprocess.Popen) -> None:
        self.server.proc = proc


class RedisProc(StoreProc):
    server: RedisServer

    def answers(self) -> bool:
        client = self.server.client(socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()


class MemcachedProc(StoreProc):
    def answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=1) as s:
            s.sendall(b"version\r\n")
            return s.recv(64).startswith(b"VERSION ")


class NodeApp(Server):
    """tests/apps/node_heap_app on a port chosen once (PORT), as tests/test_app_node.py starts it,
    growing at its slowest (one 4 KiB entry per tick), without a heap cap: it must outlive the run."""

    def __init__(self, target: str, procs: Processes) -> None:
        super().__init__(target, procs, None)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def command(self) -> list[str]:
        return [shutil.which("node") or "node", str(NODE_APP / "app.js")]

    def popen_kwargs(self) -> dict[str, Any]:
        env = {"PORT": str(self.port), "GROW_BYTES_PER_SEC": "1", "CHURN_BYTES_PER_SEC": "0",
               "EXPORT_HEAP_LIMIT": "0", "PATH": "/usr/bin:/bin"}
        return {**super().popen_kwargs(), "env": env, "cwd": NODE_APP}

    def answers(self) -> bool:
        with urllib.request.urlopen(self.url, timeout=1) as resp:
            resp.read()
            return resp.status == 200


class NginxProc(Server):
    graceful = signal.SIGQUIT  # nginx's graceful shutdown (its SIGTERM is the fast one)

    def __init__(self, target: str, procs: Processes, nginx: Nginx) -> None:
        super().__init__(target, procs, nginx.proc)
        self.nginx = nginx
        self.port = nginx.port

    @property
    def url(self) -> str:
        return self.nginx.url + "/probe"

    def command(self) -> list[str]:
        return [nginx_binary() or "nginx", "-p", str(self.nginx.dir), "-c", str(self.nginx.conf)]

    def started(self, proc: subprocess.Popen) -> None:
        self.nginx.proc = proc

    def answers(self) -> bool:
        with urllib.request.urlopen(self.url, timeout=1) as resp:
            resp.read()
            return resp.status == 200


# --- what the exporter did, from /targets ----------------------------------------------------


@dataclass(frozen=True)
class Poll:
    """One poll outcome as /targets showed it."""

    end: float  # last_poll_time: Unix time the exporter recorded the outcome
    start: float  # end minus last_poll_duration_seconds
    up: bool
    reason: str | None


def exporter_resources(pid: int) -> tuple[int, int]:
    """(threads, open fds) of the exporter process."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^Threads:\s+(\d+)", status, re.M)
    assert match, status
    return int(match.group(1)), len(os.listdir(f"/proc/{pid}/fd"))


class Monitor:
    """Reads /targets every ``period`` seconds in a thread and keeps every target's poll outcomes."""

    def __init__(self, ep: ExporterProcess, names: list[str], period: float, stop: threading.Event) -> None:
        self.ep = ep
        self.period = period
        self.stop = stop
        self.polls: dict[str, list[Poll]] = {n: [] for n in names}
        self.latest: dict[str, dict] = {}
        self.failed_reads = 0
        self.peak_threads = 0
        self.cond = threading.Condition()
        self.quiet = threading.Lock()  # held during a request: resources() measures without one in flight
        self.thread = threading.Thread(target=self._run, name="recovery-monitor", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with self.quiet:
                    entries = self.ep.targets()
                self.peak_threads = max(self.peak_threads, exporter_resources(self.ep.proc.pid)[0])
            except Exception:
                self.failed_reads += 1
            else:
                self._update(entries)
            self.stop.wait(self.period)

    def _update(self, entries: list[dict]) -> None:
        with self.cond:
            for t in entries:
                name = t["name"]
                if name not in self.polls:
                    continue
                prev = self.latest.get(name)
                self.latest[name] = t
                end, success = t["last_poll_time"], t["last_success_time"]
                if end is None or (prev is not None and end == prev["last_poll_time"]):
                    continue
                if success is not None and success != end and (prev is None or success != prev["last_success_time"]):
                    # A success that came and went between two reads: its start is unknown.
                    self.polls[name].append(Poll(success, success, True, None))
                err = t["last_error"]
                self.polls[name].append(Poll(end, end - (t["last_poll_duration_seconds"] or 0.0), bool(t["up"]),
                                             None if t["up"] or err is None else err["reason"]))
                self.polls[name].sort(key=lambda p: p.end)
            self.cond.notify_all()

    def first(self, name: str, match: Callable[[Poll], bool]) -> Poll | None:
        with self.cond:
            return next((p for p in self.polls[name] if match(p)), None)

    def between(self, name: str, began_after: float, ended_by: float) -> list[Poll]:
        with self.cond:
            return [p for p in self.polls[name] if p.start > began_after and p.end <= ended_by]

    def wait_up(self, name: str, began_after: float, timeout: float) -> Poll | None:
        """The first successful poll of ``name`` that began after ``began_after``; None on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = self.first(name, lambda p: p.up and p.start > began_after)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.stop.is_set():
                    return None
                self.cond.wait(min(left, 0.5))

    def all_up(self) -> bool:
        with self.cond:
            return len(self.latest) == len(self.polls) and all(t["up"] for t in self.latest.values())

    def resources(self, samples: int = 5) -> tuple[int, int]:
        """Threads and fds with no request of ours in flight: the least of a few samples (a
        request's handler thread and socket can outlive its response by a moment)."""
        with self.quiet:
            seen = []
            for _ in range(samples):
                time.sleep(0.05)
                seen.append(exporter_resources(self.ep.proc.pid))
        return min(s[0] for s in seen), min(s[1] for s in seen)


# --- faults --------------------------------------------------------------------------------


@dataclass
class Fault:
    target: str
    kind: str
    down_for: float  # D: seconds between the fault being in place and the restart / SIGCONT
    bound: float  # interval + timeout + slack
    t_fault: float = 0.0  # Unix time the fault was in place (process stopped or gone)
    t_back: float | None = None  # Unix time the test saw the server answer again
    up: Poll | None = None  # the exporter's first successful poll that began after t_fault
    failed: list[Poll] = field(default_factory=list)  # polls that began after t_fault and failed before `up`
    late: list[Poll] = field(default_factory=list)  # of those, the ones that began after t_back
    eventually: float | None = None  # not up in time: when it was, after all (seconds after t_back)

    @property
    def recovery(self) -> float | None:
        if self.up is None or self.t_back is None:
            return None
        return self.up.end - self.t_back


class Lab:
    """Runs each faulty server's plan in its own thread and records every fault."""

    def __init__(self, scale: Scale, monitor: Monitor, stop: threading.Event, timers: dict[str, tuple[float, float]]):
        self.scale = scale
        self.monitor = monitor
        self.stop = stop
        self.timers = timers  # target -> (interval, timeout), as /targets reports them
        self.faults: list[Fault] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.pauses: dict[str, int] = {}

    def bound(self, target: str) -> float:
        interval, timeout = self.timers[target]
        return interval + timeout + self.scale.slack

    def wait_limit(self, target: str) -> float:
        """How long to wait for a recovery before recording it as missing and moving on."""
        return 2 * self.bound(target) + 5 * self.scale.slack

    def sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped

    def pause(self, target: str) -> None:
        """Wait a different fraction of an interval before each fault: a fault begins (and the
        server comes back) at a different phase of the target's poll grid each time, instead of
        always just after the poll that saw the last recovery."""
        with self.lock:
            k = self.pauses[target] = self.pauses.get(target, 0) + 1
        self.sleep((k * GOLDEN) % 1.0 * self.timers[target][0])

    def run(self, server: Server, plan: list[tuple[str, float]]) -> None:
        def body() -> None:
            try:
                for kind, down_for in plan:
                    self.pause(server.target)
                    self._fault(server, kind, down_for)
            except Stopped:
                pass
            except Exception:
                with self.lock:
                    self.errors.append(f"{server.target}: {traceback.format_exc()}")
        thread = threading.Thread(target=body, name=f"faults-{server.target}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _fault(self, server: Server, kind: str, down_for: float) -> None:
        if kind == "crash-loop":  # kill -9 and start again at once, life after life
            for life in range(self.scale.lives):
                if life:
                    self.pause(server.target)
                fault = Fault(server.target, kind, 0.0, self.bound(server.target))
                fault.t_fault = server.kill()
                fault.t_back = server.spawn()
                self._settle(fault)
            return
        fault = Fault(server.target, kind, down_for, self.bound(server.target))
        if kind == "freeze":
            fault.t_fault = server.freeze()
            self.sleep(down_for)
            fault.t_back = server.thaw()
        else:
            fault.t_fault = server.stop() if kind == "stop" else server.kill()
            self.sleep(down_for)
            fault.t_back = server.spawn()
        self._settle(fault)

    def _settle(self, fault: Fault) -> None:
        """Wait for the exporter's first successful poll after the fault, and note what failed before it."""
        assert fault.t_back is not None
        fault.up = self.monitor.wait_up(fault.target, fault.t_fault, self.wait_limit(fault.target))
        if self.stop.is_set():
            raise Stopped
        ended_by = fault.up.end if fault.up is not None else time.time()
        fault.failed = [p for p in self.monitor.between(fault.target, fault.t_fault, ended_by) if not p.up]
        fault.late = [p for p in fault.failed if p.start > fault.t_back + START_MARGIN]
        with self.lock:
            self.faults.append(fault)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


# --- figures -------------------------------------------------------------------------------


def _stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {"n": len(values), "min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def figures_table(fig: dict[str, Any]) -> str:
    t = fig["timers"]
    lines = [f"== recovery at scale {fig['scale']!r}: interval {t['interval']:g}s, timeout {t['timeout']:g}s, "
             f"http_cache interval {t['probe_interval']:g}s; slack {t['slack']:g}s; wall {fig['wall_seconds']:.0f}s",
             "   seconds from the server answering again to the exporter's first successful poll "
             "(0 = before the test's own check)",
             f"   {'fault kind':<13}{'target':<18}{'n':>3}{'min':>8}{'median':>8}{'max':>8}{'bound':>8}"
             f"{'not up':>8}{'failed polls/fault':>20}"]
    for row in fig["recovery"]:
        s = row["seconds"]
        lines.append(f"   {row['kind']:<13}{row['target']:<18}{s['n']:>3}{_fmt(s['min']):>8}{_fmt(s['median']):>8}"
                     f"{_fmt(s['max']):>8}{row['bound']:>8.2f}{row['not_up']:>8}{row['failed_polls_mean']:>20.1f}")
    for kind, s in fig["recovery_by_kind"].items():
        lines.append(f"   {kind:<13}{'(all)':<18}{s['n']:>3}{_fmt(s['min']):>8}{_fmt(s['median']):>8}"
                     f"{_fmt(s['max']):>8}")
    lines.append("   polls over the fault phase (expected = elapsed / interval):")
    for name, p in fig["polls"].items():
        lines.append(f"   {name:<20} polls {p['polls']:>4}  expected {p['expected']:>6.1f}  "
                     f"missed {p['missed']:>5.1f}  skipped {p['skipped']:>3}  errors {p['errors']:>4}  "
                     f"{p['errors_by_reason']}")
    r = fig["resources"]
    lines.append(f"   exporter threads {r['threads_before']} -> {r['threads_after']} (peak {r['threads_peak']}, "
                 f"bound +{r['threads_bound']}), fds {r['fds_before']} -> {r['fds_after']} (bound +2)")
    lines.append(f"   /targets reads: {fig['monitor']['reads_failed']} failed, "
                 f"{fig['monitor']['polls_unseen']} polls not seen one by one")
    return "\n".join(lines)


# --- the test ------------------------------------------------------------------------------


def _errors(m: Any, name: str) -> dict[str, float]:
    return {s[1]["reason"]: s[2] for s in m.find("cache_exporter_poll_errors_total", target=name) if s[2]}


def _counters(ep: ExporterProcess, names: list[str]) -> tuple[float, dict[str, dict[str, Any]]]:
    m = ep.metrics()
    at = time.time()
    return at, {n: {"polls": m.value("cache_exporter_polls_total", target=n) or 0.0,
                    "skipped": m.value("cache_exporter_polls_skipped_total", target=n) or 0.0,
                    "errors": _errors(m, n)} for n in names}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("scale_name", ["scaled", "defaults"])
def test_recovers_from_every_outage(scale_name: str, tmp_path: Path, redis_factory: Callable[..., RedisServer],
                                    memcached_factory: Callable[..., MemcachedServer],
                                    exporter_factory: Callable[..., ExporterProcess]) -> None:
    scale = SCALES[scale_name]
    need(shutil.which("node") is not None, "node not installed")
    need((NODE_APP / "node_modules" / "prom-client").exists(), "run `npm install` in tests/apps/node_heap_app")
    need(nginx_binary() is not None, "nginx is not installed (apt-get install nginx)")
    began = time.monotonic()
    procs = Processes()
    servers: dict[str, Server] = {}
    stop = threading.Event()
    upstream: Upstream | None = None
    nginx: Nginx | None = None
    monitor: Monitor | None = None
    lab: Lab | None = None
    try:
        servers |= {
            FAULTY_REDIS: RedisProc(FAULTY_REDIS, procs, redis_factory()),
            LONG_REDIS: RedisProc(LONG_REDIS, procs, redis_factory()),
            FAULTY_MEMCACHED: MemcachedProc(FAULTY_MEMCACHED, procs, memcached_factory()),
        }
        controls = {CONTROL_REDIS: redis_factory(), CONTROL_MEMCACHED: memcached_factory()}
        for control in controls.values():
            assert control.proc is not None
            procs.adopt(control.proc)
        for name, proc, port in [(n, c.proc, c.port) for n, c in controls.items()] + \
                [(n, sv.proc, sv.port) for n, sv in servers.items()]:
            # free_port() is only a guess: make sure the server on the port is ours, not another session's.
            assert proc is not None and _listens(proc.pid, port), f"{name}: port {port} is not held by our server"
        node = NodeApp(FAULTY_APP, procs)
        node.spawn()
        servers[FAULTY_APP] = node
        upstream = Upstream()
        (tmp_path / "nginx").mkdir()
        nginx = Nginx(tmp_path / "nginx", upstream, valid="proxy_cache_valid 200 1s;")
        edge = NginxProc(FAULTY_EDGE, procs, nginx)
        edge.wait_answering()
        servers[FAULTY_EDGE] = edge

        probe: dict[str, Any] = {"name": FAULTY_EDGE, "type": "http_cache", "url": edge.url}
        if scale.probe_interval is not None:
            probe["interval"] = scale.probe_interval
        config: dict[str, Any] = {"targets": [
            redis_target(FAULTY_REDIS, servers[FAULTY_REDIS].server),  # type: ignore[attr-defined]
            redis_target(LONG_REDIS, servers[LONG_REDIS].server),  # type: ignore[attr-defined]
            memcached_target(FAULTY_MEMCACHED, servers[FAULTY_MEMCACHED].server),  # type: ignore[attr-defined]
            {"name": FAULTY_APP, "type": "app", "url": node.url},
            probe,
            redis_target(CONTROL_REDIS, controls[CONTROL_REDIS]),
            memcached_target(CONTROL_MEMCACHED, controls[CONTROL_MEMCACHED]),
        ]}
        if scale.config_global is not None:
            config["global"] = dict(scale.config_global)
        names = [t["name"] for t in config["targets"]]
        ep = exporter_factory(config)

        # The timers are the ones this scale stands for: the shipped defaults, or all of them / 15.
        timers = {t["name"]: (t["interval_seconds"], t["timeout_seconds"]) for t in ep.targets()}
        for name, (interval, timeout) in timers.items():
            assert interval == pytest.approx(scale.probe if name == FAULTY_EDGE else scale.interval), (name, interval)
            if name != FAULTY_EDGE:  # an http_cache poll's deadline is derived from its per-request timeout
                assert timeout == pytest.approx(scale.timeout), (name, timeout)

        monitor = Monitor(ep, names, scale.observe, stop)
        deadline = time.monotonic() + 3 * scale.probe + 10
        while not monitor.all_up():
            assert time.monotonic() < deadline, f"not every target up after warm-up: {monitor.latest}"
            time.sleep(scale.observe)
        threads_before, fds_before = monitor.resources()
        t0, counters0 = _counters(ep, names)

        lab = Lab(scale, monitor, stop, timers)
        routine = {name: ROUTINE_OUTAGE_INTERVALS * timers[name][0] for name in names}
        plans = {
            FAULTY_REDIS: ["freeze", "kill9", "stop"],
            FAULTY_MEMCACHED: ["kill9", "stop", "freeze"],
            FAULTY_APP: ["stop", "freeze", "kill9", "crash-loop"],
            FAULTY_EDGE: list(scale.nginx_kinds),
        }
        for name, kinds in plans.items():
            lab.run(servers[name], [(kind, routine[name]) for kind in kinds] * scale.cycles)
        lab.run(servers[LONG_REDIS], [("long-outage", LONG_OUTAGE / scale.divisor)])
        lab.join(540 - (time.monotonic() - began))
        assert not [t.name for t in lab.threads if t.is_alive()], "fault threads still running"
        assert not lab.errors, "\n".join(lab.errors)

        # After the last recovery: every target up again, and nothing left behind.
        back_deadline = time.monotonic() + 2 * scale.probe
        while not monitor.all_up() and time.monotonic() < back_deadline:
            time.sleep(scale.observe)
        threads_after, fds_after = monitor.resources()
        t1, counters1 = _counters(ep, names)
        for f in lab.faults:
            if f.up is None and f.t_back is not None:  # not up in time: was it by the end of the run?
                late = monitor.first(f.target, lambda p, f=f: p.up and p.start > f.t_fault)
                f.eventually = None if late is None else late.end - f.t_back
        stop.set()
        monitor.thread.join(10)

        figures = _figures(scale, lab, names, timers, (t0, counters0), (t1, counters1),
                           (threads_before, fds_before, threads_after, fds_after, monitor.peak_threads),
                           time.monotonic() - began)
        (tmp_path / f"recovery-{scale.name}.json").write_text(json.dumps(figures, indent=2))
        log_lines = [line for line in ep.log().splitlines()
                     if re.search(r"is down|is up again|unexpected|Traceback|watchdog", line)]
        (tmp_path / f"recovery-{scale.name}-transitions.log").write_text("\n".join(log_lines) + "\n")
        print("\n" + figures_table(figures))
        print(f"   figures: {tmp_path / f'recovery-{scale.name}.json'}")

        problems = _problems(scale, lab, figures)
        assert not problems, "\n".join(problems) + "\n\n" + figures_table(figures)
    finally:
        stop.set()
        if lab is not None:
            lab.join(30)
        procs.close()
        for server in servers.values():
            server.release_port()
        if nginx is not None:
            nginx.stop()
        if upstream is not None:
            upstream.stop()


def _figures(scale: Scale, lab: Lab, names: list[str], timers: dict[str, tuple[float, float]],
             start: tuple[float, dict], end: tuple[float, dict], resources: tuple[int, int, int, int, int],
             wall: float) -> dict[str, Any]:
    (t0, c0), (t1, c1) = start, end
    threads_before, fds_before, threads_after, fds_after, peak = resources
    rows = []
    for target, kind in sorted({(f.target, f.kind) for f in lab.faults}, key=lambda tk: (tk[1], tk[0])):
        faults = [f for f in lab.faults if (f.target, f.kind) == (target, kind)]
        rows.append({"kind": kind, "target": target, "bound": faults[0].bound,
                     "seconds": _stats([max(0.0, f.recovery) for f in faults if f.recovery is not None]),
                     "not_up": sum(f.up is None for f in faults),
                     "failed_polls_mean": statistics.mean(len(f.failed) for f in faults)})
    by_kind = {kind: _stats([max(0.0, f.recovery) for f in lab.faults if f.kind == kind and f.recovery is not None])
               for kind in sorted({f.kind for f in lab.faults})}
    polls = {}
    for name in names:
        expected = (t1 - t0) / timers[name][0]
        grown = c1[name]["polls"] - c0[name]["polls"]
        polls[name] = {"polls": int(grown), "expected": round(expected, 1), "missed": round(expected - grown, 1),
                       "skipped": int(c1[name]["skipped"]),
                       "skipped_in_phase": int(c1[name]["skipped"] - c0[name]["skipped"]),
                       "errors": int(sum(c1[name]["errors"].values())),
                       "errors_by_reason": {r: int(v) for r, v in sorted(c1[name]["errors"].items())}}
    unseen = 0
    for name in names:
        seen = len([p for p in lab.monitor.polls[name] if t0 < p.end <= t1])
        unseen += max(0, int(c1[name]["polls"] - c0[name]["polls"]) - seen)
    return {
        "scale": scale.name,
        "timers": {"interval": scale.interval, "timeout": scale.timeout, "probe_interval": scale.probe,
                   "slack": scale.slack},
        "wall_seconds": round(wall, 1),
        "recovery": rows,
        "recovery_by_kind": by_kind,
        "polls": polls,
        "resources": {"threads_before": threads_before, "threads_after": threads_after, "threads_peak": peak,
                      "threads_bound": _thread_bound(names), "fds_before": fds_before, "fds_after": fds_after},
        "monitor": {"reads_failed": lab.monitor.failed_reads, "polls_unseen": unseen},
        "faults": [{**asdict(f), "recovery": f.recovery} for f in lab.faults],
    }


def _thread_bound(names: list[str]) -> int:
    """How many more threads than at warm-up the exporter may have after the last recovery.

    The poll pool starts a thread when a poll finds none idle (several targets timing out at
    once during the faults), and a thread exits only after 30 s without work. New work goes to
    the thread that has waited longest, so work rotates over all of them and a thread goes 30 s
    without any only when there are fewer polls in 30 s than threads; here there are more at
    either scale (7 targets every 15 s: 14 polls in 30 s). So every thread an outage started
    may legitimately still be there when the test measures, seconds after the last recovery.
    A target never holds more than one poll thread at a time (its polls never overlap), so the
    pool never needs more threads than there are targets, and warm-up already had one: at most
    ``len(names) - 1`` more. Anything beyond that (a thread per reconnect, per timeout, per
    outage) is a leak.
    """
    return len(names) - 1


def _problems(scale: Scale, lab: Lab, fig: dict[str, Any]) -> list[str]:
    problems = []
    for f in lab.faults:
        assert f.t_back is not None
        what = f"{f.target} {f.kind} (D={f.down_for:g}s; poll starts relative to the server being back)"
        if f.up is None:
            after = "none by the end of the run" if f.eventually is None else f"the first {f.eventually:.1f}s after"
            problems.append(f"{what}: no successful poll within {lab.wait_limit(f.target):.1f}s of the server being "
                            f"back (bound {f.bound:.2f}s; {after}); failed: {_reasons(f.failed, f.t_back)}")
        elif f.recovery is not None and f.recovery > f.bound:
            problems.append(f"{what}: first successful poll {f.recovery:.2f}s after the server was back "
                            f"(bound {f.bound:.2f}s = interval + timeout + slack)")
        if f.late:
            problems.append(f"{what}: {len(f.late)} poll(s) that began after the server was back failed: "
                            f"{_reasons(f.late, f.t_back)}")
        if f.kind != "crash-loop" and not f.failed:
            problems.append(f"{what}: no poll failed during the outage (the fault was not seen)")
        unexpected = {p.reason for p in f.failed} - EXPECTED_REASONS[f.kind]
        if unexpected:
            problems.append(f"{what}: failed polls with unexpected reasons {sorted(map(str, unexpected))}: "
                            f"{_reasons(f.failed, f.t_back)}")
    for name, p in fig["polls"].items():
        # At the shipped defaults no poll may be skipped. Scaled, a 1 s grid tick that a starved
        # machine wakes more than its grace late is skipped and counted, not run late: there a
        # tick counts if it was polled or counted as skipped, and at most a tenth may be skipped.
        accounted = p["polls"]
        if scale.divisor == 1:
            if p["skipped"]:
                problems.append(f"{name}: {p['skipped']} polls skipped")
        else:
            accounted += p["skipped_in_phase"]
            if p["skipped_in_phase"] > 0.1 * p["expected"]:
                problems.append(f"{name}: {p['skipped_in_phase']} of {p['expected']} polls skipped "
                                "over the fault phase")
        if abs(p["expected"] - accounted) > 2:
            problems.append(f"{name}: {p['polls']} polls (+{accounted - p['polls']} counted skipped) over the fault "
                            f"phase, expected {p['expected']} +-2")
        if name in CONTROLS and p["errors"]:
            problems.append(f"control {name}: poll errors {p['errors_by_reason']}")
    r = fig["resources"]
    if r["fds_after"] > r["fds_before"] + 2:
        problems.append(f"exporter fds {r['fds_before']} -> {r['fds_after']} (at most +2)")
    if r["threads_after"] > r["threads_before"] + r["threads_bound"]:
        problems.append(f"exporter threads {r['threads_before']} -> {r['threads_after']} "
                        f"(at most +{r['threads_bound']})")
    return problems


def _reasons(polls: list[Poll], since: float, shown: int = 6) -> str:
    """``reason@start`` of the first few polls, ``start`` in seconds relative to ``since``."""
    text = ", ".join(f"{p.reason}@{p.start - since:+.2f}s" for p in polls[:shown]) or "none"
    return text + (f" (+{len(polls) - shown} more)" if len(polls) > shown else "")


# --- a restart between two polls ------------------------------------------------------------------

@pytest.mark.parametrize("store", ["redis", "memcached"])
def test_a_restart_between_two_polls_is_not_an_outage(store: str, redis_factory, memcached_factory,
                                                      exporter_factory) -> None:
    """The connection kept since the last poll belongs to the server's previous life. Before, the
    first poll after a quick restart failed as ``reset`` on it: ``cache_up 0`` for a whole
    interval (15 s at defaults) for a server that was up. The first poll that begins after the
    server answers again must succeed (scaled timers: interval 1 s, timeout 333 ms)."""
    server = redis_factory() if store == "redis" else memcached_factory(args=["-m", "8"])
    entry = redis_target("s", server) if store == "redis" else memcached_target("s", server)
    ep = exporter_factory({"global": {"interval": "1s", "timeout": "333ms"}, "targets": [entry]})
    polls: list[tuple[float, float, bool]] = []  # (began, ended, up), Unix times

    def record() -> None:
        t = ep.target("s")
        if t["last_poll_time"] and (not polls or polls[-1][1] != t["last_poll_time"]):
            polls.append((t["last_poll_time"] - t["last_poll_duration_seconds"], t["last_poll_time"], t["up"]))

    for _ in range(3):
        seen = len(polls)
        while len(polls) <= seen or not polls[-1][2]:  # right after a successful poll
            record()
            time.sleep(0.02)
        server.kill()
        server.start()  # the same port; start() returns once the server answers
        back = time.time()
        deadline = time.monotonic() + 10
        while not (polls and polls[-1][0] > back) and time.monotonic() < deadline:
            record()
            time.sleep(0.02)
        first = next((p for p in polls if p[0] > back), None)
        assert first is not None, "no poll began after the restart"
        assert first[2], f"the first poll after the restart failed: {ep.target('s')['last_error']}"
    assert ep.stop() == 0
