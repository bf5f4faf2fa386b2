"""A thread pool that grows to a bound on demand and shrinks when threads sit idle.

``concurrent.futures.ThreadPoolExecutor`` never retires a thread: one burst of hung targets
leaves hundreds of threads for the life of the process. Here a thread exits after
``idle_seconds`` without work, and the bound can be changed at runtime (a reload that adds or
removes targets resizes it).

With ``concurrency`` the pool brings in a thread only when fewer than that many are making
progress: a burst of quick calls is drained by a few threads, one call after another, rather
than by a thread each. Under the interpreter lock a thread each only adds hand-offs, and a few
threads that run calls back to back keep their code and data in the CPU's caches: at 1000
targets this was a third of the poll path's CPU (docs/benchmarks.md, "Fixes, measured
before/after"). A call running longer than ``stuck_after`` (waiting on a slow or hung target)
no longer counts, so such calls still cost a thread each and never hold up the queue for more
than ``stuck_after``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

DEFAULT_IDLE_SECONDS = 30.0
DEFAULT_STUCK_AFTER = 0.05  # seconds: a call running longer is waiting on its target, not working

# ``call_later(delay, callback)``: run ``callback`` ``delay`` seconds from now, on another thread.
CallLater = Callable[[float, Callable[[], None]], object]


class ElasticPool(Executor):
    """Runs submitted calls on at most ``max_workers`` threads, started when needed.

    Work goes to the thread that became idle last (a stack, not the FIFO of a Condition): at
    a steady trickle of polls the same few threads take everything, and the ones a burst
    started sit idle long enough to exit.
    """

    def __init__(self, max_workers: int, idle_seconds: float = DEFAULT_IDLE_SECONDS, name: str = "poll",
                 concurrency: int | None = None, call_later: CallLater | None = None,
                 stuck_after: float = DEFAULT_STUCK_AFTER) -> None:
        """Without ``concurrency``, every call waiting gets a thread (up to ``max_workers``) at
        once. With it, ``call_later`` must be given: it brings in another thread once a call has
        run ``stuck_after`` seconds while others wait."""
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if concurrency is not None and (concurrency < 1 or call_later is None):
            raise ValueError("concurrency must be at least 1 and needs call_later")
        self._max = max_workers
        self._concurrency = concurrency
        self._call_later = call_later
        self._stuck_after = stuck_after
        self._running: dict[threading.Event, float] = {}  # thread -> when its current call started
        self._coming = 0  # threads woken or started that have not taken a call yet
        self._check_due = False  # a call_later to look for stuck threads is pending
        self._idle_seconds = idle_seconds
        self._name = name
        self._lock = threading.Lock()
        self._queue: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = deque()
        self._idle: list[threading.Event] = []  # one per idle thread; the last one is woken first
        self._threads = 0
        self._started = 0
        self._shutdown = False
        self._gone = threading.Condition(self._lock)  # signalled when a thread exits

    @property
    def max_workers(self) -> int:
        return self._max

    def threads(self) -> int:
        with self._lock:
            return self._threads

    def resize(self, max_workers: int) -> None:
        """Change the bound; surplus threads exit when they next look for work."""
        with self._lock:
            self._max = max(1, max_workers)
            if self._threads > self._max:
                self._wake_all()
            self._dispatch()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self._queue.append((future, fn, args, kwargs))
            self._dispatch()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = True) -> None:
        """Stop taking work; calls not started yet are cancelled (a poll queued at shutdown
        would only reconnect to a target that is being closed)."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
            self._wake_all()
            if wait:
                while self._threads:
                    self._gone.wait(0.1)

    def _dispatch(self) -> None:
        # Caller holds the lock.
        if not self._queue:
            return
        if self._concurrency is None:
            self._bring_thread()
            return
        now = time.monotonic()
        working = self._coming + sum(1 for started in self._running.values() if now - started < self._stuck_after)
        for _ in range(min(len(self._queue), self._concurrency - working)):
            if not self._bring_thread():
                break
        if len(self._queue) > self._coming and not self._check_due and self._call_later is not None:
            # Calls wait for busy threads: if those are still on the same calls by then, they are stuck.
            self._check_due = True
            self._call_later(self._stuck_after, self._check)

    def _check(self) -> None:
        with self._lock:
            self._check_due = False
            if not self._shutdown:
                self._dispatch()

    def _bring_thread(self) -> bool:
        """Wake the most recently idle thread, else start one; False at the bound."""
        if self._idle:
            self._idle.pop().set()
        elif self._threads < self._max:
            self._threads += 1
            self._started += 1
            threading.Thread(target=self._work, name=f"{self._name}-{self._started}", daemon=True).start()
        else:
            return False
        self._coming += 1
        return True

    def _wake_all(self) -> None:
        while self._idle:
            self._idle.pop().set()
            self._coming += 1

    def _work(self) -> None:
        me = threading.Event()
        lock = self._lock
        with lock:
            self._coming -= 1
            while self._threads <= self._max:
                if self._queue:
                    future, fn, args, kwargs = self._queue.popleft()
                    self._running[me] = time.monotonic()
                    lock.release()
                    try:
                        if future.set_running_or_notify_cancel():
                            try:
                                future.set_result(fn(*args, **kwargs))
                            except BaseException as exc:
                                future.set_exception(exc)
                        del future, fn, args, kwargs
                    finally:
                        lock.acquire()
                        del self._running[me]
                    continue
                if self._shutdown:
                    break
                me.clear()
                self._idle.append(me)
                lock.release()
                try:
                    me.wait(self._idle_seconds)
                finally:
                    lock.acquire()
                if me in self._idle:  # nobody woke it: idle for idle_seconds
                    self._idle.remove(me)
                    if not self._queue:
                        break
                else:
                    self._coming -= 1
            self._threads -= 1
            self._gone.notify_all()

