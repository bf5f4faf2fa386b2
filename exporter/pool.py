"""A thread pool that grows to a bound on demand and shrinks when threads sit idle.

``concurrent.futures.ThreadPoolExecutor`` never retires a thread: one burst of hung targets
leaves hundreds of threads for the life of the process. Here a thread exits after
``idle_seconds`` without work, and the bound can be changed at runtime (a reload that adds or
removes targets resizes it).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

DEFAULT_IDLE_SECONDS = 30.0


class ElasticPool(Executor):
    """Runs submitted calls on at most ``max_workers`` threads, started when needed.

    Work goes to the thread that became idle last (a stack, not the FIFO of a Condition): at
    a steady trickle of polls the same few threads take everything, and the ones a burst
    started sit idle long enough to exit.
    """

    def __init__(self, max_workers: int, idle_seconds: float = DEFAULT_IDLE_SECONDS, name: str = "poll") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max = max_workers
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
        # Caller holds the lock: wake the most recently idle thread, else start one.
        if not self._queue:
            return
        if self._idle:
            self._idle.pop().set()
        elif self._threads < self._max:
            self._threads += 1
            self._started += 1
            threading.Thread(target=self._work, name=f"{self._name}-{self._started}", daemon=True).start()

    def _wake_all(self) -> None:
        while self._idle:
            self._idle.pop().set()

    def _work(self) -> None:
        me = threading.Event()
        lock = self._lock
        with lock:
            while self._threads <= self._max:
                if self._queue:
                    future, fn, args, kwargs = self._queue.popleft()
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
            self._threads -= 1
            self._gone.notify_all()

