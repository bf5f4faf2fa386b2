"""Run every discovery template on its own schedule and keep its last good target list.

One thread per template: a refresh may block for its timeout (a DNS lookup, a seed that does not
answer) and must not delay another template's. When a template's targets change, ``on_change``
is called; the daemon then applies the whole target list the way a config reload does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exporter.discovery import registry
from exporter.discovery.base import DiscoveryError
from exporter.targets import Target, Template

log = logging.getLogger(__name__)


@dataclass
class TemplateState:
    """What one template has found, and how its discovery is doing."""

    template: Template
    targets: tuple[Target, ...] = ()
    found: list[Any] | None = None  # the last good list of nodes; None before the first success
    errors: int = 0
    last_success: float | None = None
    last_error: str | None = None
    memo: dict[str, Any] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)


class DiscoveryRunner:
    """Owns one refresh thread per template; ``targets()`` is every template's last good list."""

    def __init__(self, on_change: Callable[[], object]) -> None:
        self.on_change = on_change
        self._lock = threading.Lock()
        self._states: dict[str, TemplateState] = {}
        self._started = False

    def set_templates(self, templates: tuple[Template, ...]) -> None:
        """Start refreshing ``templates``; a template that is unchanged keeps running untouched,
        a changed one starts over from its predecessor's nodes (re-expanded with the new settings),
        so a reload does not make discovered targets vanish until the next refresh."""
        with self._lock:
            old = self._states
            self._states = {}
            for template in templates:
                previous = old.pop(template.name, None)
                if previous is not None and previous.template == template:
                    self._states[template.name] = previous
                    continue
                state = TemplateState(template)
                if previous is not None:
                    previous.stop.set()
                    if previous.template.kind == template.kind:
                        state.errors = previous.errors  # a counter: it must not go down on a reload
                        if previous.found is not None:
                            state.found = previous.found
                            try:
                                state.targets = _expand(template, previous.found)
                            except DiscoveryError:
                                state.targets = ()
                self._states[template.name] = state
                if self._started:
                    self._spawn(state)
            for gone in old.values():
                gone.stop.set()

    def start(self) -> None:
        with self._lock:
            self._started = True
            for state in self._states.values():
                self._spawn(state)

    def stop(self) -> None:
        with self._lock:
            self._started = False
            for state in self._states.values():
                state.stop.set()

    def targets(self) -> tuple[Target, ...]:
        with self._lock:
            return tuple(t for state in self._states.values() for t in state.targets)

    def states(self) -> list[TemplateState]:
        with self._lock:
            return list(self._states.values())

    def template_of(self, name: str) -> str | None:
        """The template a discovered target came from, or None for a target written by hand."""
        template, sep, _ = name.partition("/")
        with self._lock:
            return template if sep and template in self._states else None

    def refresh_now(self, name: str) -> None:
        """One refresh of template ``name`` in the caller's thread (tests, and the first round)."""
        with self._lock:
            state = self._states[name]
        self._refresh(state)

    def _spawn(self, state: TemplateState) -> None:
        threading.Thread(target=self._loop, args=(state,), name=f"discovery-{state.template.name}",
                         daemon=True).start()

    def _loop(self, state: TemplateState) -> None:
        while not state.stop.is_set():
            self._refresh(state)
            state.stop.wait(state.template.refresh_interval)

    def _refresh(self, state: TemplateState) -> None:
        template = state.template
        try:
            found = registry.refresh(template, state.memo)
            if found is None:
                return  # nothing changed (file_sd: no file touched)
            # The same nodes give the same targets: validating them again at every refresh is CPU for nothing.
            targets = state.targets if found == state.found else _expand(template, found)
        except Exception as exc:
            message = str(exc) if isinstance(exc, DiscoveryError) else f"internal error {type(exc).__name__}"
            if not isinstance(exc, DiscoveryError):
                log.exception("discovery %s (%s): unexpected error", template.name, template.kind)
            with self._lock:
                if state.stop.is_set():
                    return
                state.errors += 1
                repeated, state.last_error = state.last_error == message, message
                kept = len(state.targets)
            # Logged when it changes: a seed down for an hour is one line, not one per refresh.
            (log.debug if repeated else log.error)(
                "discovery %s (%s) failed, keeping the last %d targets: %s", template.name, template.kind, kept,
                message)
            return
        with self._lock:
            if state.stop.is_set():
                return  # replaced by a reload while this refresh ran
            changed = targets != state.targets
            state.found, state.targets = found, targets
            state.last_success = time.time()
            if state.last_error is not None:
                log.info("discovery %s (%s) works again", template.name, template.kind)
            state.last_error = None
        if changed:
            log.info("discovery %s (%s): %d targets", template.name, template.kind, len(targets))
            self.on_change()


def _expand(template: Template, found: list[Any]) -> tuple[Target, ...]:
    from exporter.config import expand

    return expand(template, found)
