"""Wire config, scheduler, store, exposition and HTTP together; handle reload and signals."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from exporter import memory
from exporter.config import BUILTIN, ConfigError, LoadResult, load_config
from exporter.discovery.runner import DiscoveryRunner
from exporter.exposition import Exposition
from exporter.http import Endpoints, make_server
from exporter.scheduler import Scheduler
from exporter.sharding import Shard
from exporter.state import StateFile, save_interval
from exporter.store import SnapshotStore
from exporter.targets import Config, Target

if TYPE_CHECKING:
    from exporter.webconfig import WebConfigFile  # built by the command line when a web config is given

log = logging.getLogger(__name__)


class Daemon:
    """One running exporter. ``run()`` blocks until SIGTERM/SIGINT or ``stop()``."""

    def __init__(self, loaded: LoadResult, listen: str | list[str], config_path: str | None,
                 state_dir: str | None = None, web: WebConfigFile | None = None, lifecycle: bool = False,
                 shard: Shard | None = None) -> None:
        self.config: Config = loaded.config
        self.config_path = config_path
        self.store = SnapshotStore()
        self.state = StateFile(state_dir) if state_dir else None
        self.shard = shard or Shard()
        self.scheduler = Scheduler(self.store, self.state.load() if self.state else None, self.shard)
        self.exposition = Exposition(self.store)
        self.exposition.set_shard(self.shard.index, self.shard.total)
        self.exposition.targets_owned.set_function(lambda: len(self.scheduler.runtimes))
        if self.state is not None:
            self.exposition.watch_state(self.state, lambda: self.scheduler.restored)
        self.web = web
        self.server = make_server(listen, Endpoints(
            metrics=lambda compress: self.exposition.body_parts(compress=compress),
            targets=self.targets_status, ready=self.scheduler.ready, reload=self.reload,
            lifecycle=lifecycle, web=web,
            cached_metrics=lambda compress: self.exposition.cached_body_parts(compress=compress)))
        self.exposition.watch_http(self.server, web)
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._reload_lock = threading.Lock()
        self._targets_lock = threading.Lock()
        self.discovery = DiscoveryRunner(on_change=self._apply_targets)
        self.discovery.set_templates(self.config.templates)
        self.exposition.watch_discovery(self.discovery)
        self._mark_reload(ok=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Start polling and serving without blocking (tests and the demo use this)."""
        with self._targets_lock:
            self.scheduler.start(self.all_targets())
        # After the scheduler: a template's first list is applied like any later one.
        self.discovery.start()
        threading.Thread(target=self.server.serve_forever, name="http", daemon=True).start()
        if self.state is not None:
            threading.Thread(target=self._save_state_periodically, name="state", daemon=True).start()
        if memory.available():
            threading.Thread(target=self._trim_periodically, name="trim", daemon=True).start()
        scheme = "https" if self.web is not None and self.web.tls_context() is not None else "http"
        where = ", ".join(f"{scheme}://[{h}]:{p}/" if ":" in h else f"{scheme}://{h}:{p}/"
                          for h, p in self.server.addresses)
        log.info("listening on %s with %d targets from %s", where, len(self.config.targets), self.config.source)
        if self.shard.sharded:
            log.info("%s: polling %d of the %d targets", self.shard, len(self.scheduler.runtimes),
                     self.scheduler.offered)

    def run(self) -> int:
        """Start, then serve until a termination signal; returns the process exit code."""
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload_requested.set())
        self.start()
        while not self._stop.is_set():
            # Signal handlers only set flags; the reload itself runs here, in the main thread.
            if self._reload_requested.wait(timeout=0.2):
                self._reload_requested.clear()
                try:
                    self.reload()
                except Exception:  # a bug while applying a config must not end the process
                    self._mark_reload(ok=False)
                    log.exception("config reload failed")
        self.stop()
        return 0

    def stop(self) -> None:
        log.info("shutting down")
        self._stop.set()
        self.discovery.stop()
        self.server.shutdown()
        self.server.server_close()
        self.scheduler.shutdown()
        if self.state is not None:
            self.state.save(self.scheduler.histories())  # the freshest history for the next start

    def _save_state_periodically(self) -> None:
        assert self.state is not None
        while not self._stop.wait(save_interval([t.forecast_window for t in self.config.targets])):
            self.state.save(self.scheduler.histories())

    def _trim_periodically(self) -> None:
        # Whether or not anyone scrapes: an exporter nobody scraped for a while held ~50 % more
        # RSS at 1000 targets (exporter/memory.py).
        while not self._stop.wait(memory.EVERY):
            memory.trim()

    def reload(self) -> tuple[bool, str]:
        """Re-read the config file; on any error keep the running config and say why."""
        with self._reload_lock:
            if self.config_path is None:
                # The built-in default or targets from flags: there is no file to re-read.
                what = f"the {BUILTIN}" if self.config.source == BUILTIN else f"the targets from {self.config.source}"
                log.info("reload requested: running %s; nothing to reload, keeping them", what)
                return True, f"running {what}; nothing to reload"
            try:
                loaded = load_config(self.config_path)
            except Exception as exc:
                # load_config raises only ConfigError; anything else would be a bug in it, and a
                # bug must cost this reload, not the running config or the process.
                self._mark_reload(ok=False)
                reason = str(exc) if isinstance(exc, ConfigError) else \
                    f"{self.config_path}: cannot be loaded: internal error {type(exc).__name__}"
                # The path may hold undecodable bytes (surrogate escapes): keep the text UTF-8-safe.
                reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
                log.error("config reload failed, keeping the running config:\n%s", reason)
                return False, f"config reload failed, keeping the running config:\n{reason}"
            for warning in loaded.warnings:
                log.warning("%s", warning)
            self.config = loaded.config
            self.discovery.set_templates(loaded.config.templates)
            changes = self._apply_targets()
            self._mark_reload(ok=True)
            summary = ", ".join(f"{k}: {len(v)}" for k, v in changes.items())
            if self.shard.sharded:
                summary += f"; {self.shard} polls {len(self.scheduler.runtimes)} of {self.scheduler.offered}"
            log.info("config reloaded (%s)", summary)
            return True, f"config reloaded ({summary})"

    def all_targets(self) -> tuple[Target, ...]:
        """The targets written in the config, then every discovery template's last good list."""
        return self.config.targets + self.discovery.targets()

    def _apply_targets(self) -> dict[str, list[str]]:
        """Move the scheduler to ``all_targets()``: the one path by which a reload and a discovery
        refresh change what is polled (unchanged targets keep their connection and history; a
        removed one's series leave the store at once)."""
        with self._targets_lock:
            changes = self.scheduler.apply(self.all_targets())
            self._count_targets()
        if any(changes[k] for k in ("added", "removed", "changed")):
            log.debug("targets applied (%s)", ", ".join(f"{k}: {len(v)}" for k, v in changes.items()))
        return changes

    def _count_targets(self) -> None:
        counts = Counter(t.type for t in self.all_targets())
        self.exposition.targets.clear()
        for kind, n in counts.items():
            self.exposition.targets.set(n, kind)

    def _mark_reload(self, ok: bool) -> None:
        self.exposition.reload_ok.set(1 if ok else 0)
        if ok:
            self.exposition.reload_time.set(time.time())
            with self._targets_lock:
                self._count_targets()

    def targets_status(self) -> list[dict[str, Any]]:
        """The /targets body: configuration and last outcome per target, never a secret."""
        snapshots = self.store.snapshots()
        out = []
        for name, rt in list(self.scheduler.runtimes.items()):
            t = rt.target
            snap = snapshots.get(name)
            entry: dict[str, Any] = {
                "name": name,
                "type": t.type,
                "address": t.address,
                "labels": dict(t.labels),
                "interval_seconds": t.interval,
                "timeout_seconds": t.timeout,
                "memory_limit_bytes": t.memory_limit,
                "discovered_by": self.discovery.template_of(name),
                "up": None if snap is None else snap.ok,
                "polls": rt.stats.polls,
                "last_poll_time": None if snap is None else snap.time,
                "last_poll_duration_seconds": rt.stats.last_duration,
                "last_success_time": rt.stats.last_success,
                "last_error": None if rt.last_error is None else {
                    "reason": rt.last_error.reason, "message": str(rt.last_error)},
            }
            if snap is not None and snap.ok:
                entry["details"] = snap.details
                entry["memory"] = {k: getattr(snap.memory, k) for k in snap.memory.__slots__}
            out.append(entry)
        return out
