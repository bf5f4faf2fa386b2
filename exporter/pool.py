"""A thread pool that grows to a bound on demand and shrinks when threads sit idle.

``concurrent.futures.ThreadPoolExecutor`` (what APScheduler's thread executor wraps) never
retires a thread: one burst of hung targets leaves hundreds of threads for the life of the
process. Here a thread exits after ``idle_seconds`` without work, and the bound can be changed
at runtime (a reload that adds or removes targets resizes it).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from apscheduler.executors.pool import BasePoolExecutor

DEFAULT_IDLE_SECONDS = 30.0


class ElasticPool(Executor):
    """Runs submitted calls on at most ``max_workers`` threads, started when needed."""

    def __init__(self, max_workers: int, idle_seconds: float = DEFAULT_IDLE_SECONDS, name: str = "poll") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max = max_workers
        self._idle_seconds = idle_seconds
        self._name = name
        self._cond = threading.Condition()
        self._queue: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = deque()
        self._threads = 0
        self._idle = 0
        self._started = 0
        self._shutdown = False

    @property
    def max_workers(self) -> int:
        return self._max

    def threads(self) -> int:
        with self._cond:
            return self._threads

    def resize(self, max_workers: int) -> None:
        """Change the bound; surplus threads exit when they next look for work."""
        with self._cond:
            self._max = max(1, max_workers)
            self._cond.notify_all()
            self._start_threads()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self._queue.append((future, fn, args, kwargs))
            self._cond.notify()
            self._start_threads()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = True) -> None:
        """Stop taking work; calls not started yet are cancelled (a poll queued at shutdown
        would only reconnect to a target that is being closed)."""
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
            self._cond.notify_all()
            if wait:
                while self._threads:
                    self._cond.wait(0.1)

    def _start_threads(self) -> None:
        # Caller holds the lock. Idle threads take queued work first; start one only for the rest.
        while len(self._queue) > self._idle and self._threads < self._max:
            self._threads += 1
            self._started += 1
            threading.Thread(target=self._work, name=f"{self._name}-{self._started}", daemon=True).start()
            self._idle += 1  # counted idle until it takes an item, so a burst starts one thread per item

    def _work(self) -> None:
        cond = self._cond
        with cond:
            while True:
                if self._threads > self._max:  # shrunk by resize()
                    break
                if self._queue:
                    future, fn, args, kwargs = self._queue.popleft()
                    self._idle -= 1
                    cond.release()
                    try:
                        if future.set_running_or_notify_cancel():
                            try:
                                future.set_result(fn(*args, **kwargs))
                            except BaseException as exc:
                                future.set_exception(exc)
                        del future, fn, args, kwargs
                    finally:
                        cond.acquire()
                    self._idle += 1
                    continue
                if self._shutdown or not cond.wait(self._idle_seconds) and not self._queue:
                    break
            self._idle -= 1
            self._threads -= 1
            cond.notify_all()


class ElasticExecutor(BasePoolExecutor):
    """APScheduler executor on an ``ElasticPool``."""

    def __init__(self, max_workers: int, idle_seconds: float = DEFAULT_IDLE_SECONDS) -> None:
        self.pool = ElasticPool(max_workers, idle_seconds)
        super().__init__(self.pool)
