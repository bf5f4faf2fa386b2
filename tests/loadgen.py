"""Load generators for real redis-servers: a steady fill and a sawtooth."""

from __future__ import annotations

import threading
import time

import redis

VALUE = b"v" * 1000


class SteadyWriter(threading.Thread):
    """Writes ~80 KB/s (4 x 1 KB every ``period`` = 50 ms); records when the first -OOM reply came."""

    def __init__(self, client: redis.Redis, period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.period = period
        self.stop = threading.Event()
        self.first_oom: float | None = None
        self.i = 0

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            for _ in range(4):
                self.i += 1
                try:
                    self.client.set(f"k{self.i}", VALUE)
                except redis.exceptions.OutOfMemoryError:
                    if self.first_oom is None:
                        self.first_oom = time.monotonic()
            self.stop.wait(max(0.0, self.period - (time.monotonic() - started)))

    def halt(self) -> None:
        self.stop.set()
        self.join(5)


class SawtoothWriter(threading.Thread):
    """Fills up to ``high`` bytes of used memory, then deletes down to ``low``, again and again:
    a cache whose keys expire in waves (TTL cycles, cron cleanups)."""

    def __init__(self, client: redis.Redis, low: int, high: int, fill_seconds: float = 6.0) -> None:
        super().__init__(daemon=True)
        self.client, self.low, self.high = client, low, high
        self.step_delay = fill_seconds / max(1, (high - low) // (4 * len(VALUE) * 2))
        self.stop = threading.Event()
        self.errors = 0
        self.cycles = 0

    def used(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def run(self) -> None:
        i = 0
        keys: list[str] = []
        while not self.stop.is_set():
            while self.used() < self.high and not self.stop.is_set():
                for _ in range(4):
                    i += 1
                    try:
                        self.client.set(f"s{i}", VALUE)
                        keys.append(f"s{i}")
                    except redis.exceptions.ResponseError:
                        self.errors += 1
                self.stop.wait(self.step_delay)
            while keys and self.used() > self.low and not self.stop.is_set():
                batch, keys = keys[:200], keys[200:]
                self.client.delete(*batch)
            self.cycles += 1

    def halt(self) -> None:
        self.stop.set()
        self.join(5)
