"""The exporter's process-wide metrics as text, rendered at each scrape.

Its own (``cache_exporter_*``: build, targets, shards, reloads, render time; the HTTP server's,
discovery's and the state file's, read from them at scrape time) and the process's
(``process_*``, ``python_*``), named and worded exactly as prometheus_client's collectors name
them, so that dashboards and rules written for any Python exporter keep working.

Not prometheus_client's registry: importing any part of that package imports its HTTP servers
and URL clients too (~3 MiB resident in a process that needs none of them), and
``generate_latest`` spent ~0.2 ms a scrape on these ~30 series, most of a cached scrape's time.
Here each family's HELP/TYPE text is built once and a scrape formats only the values
(docs/benchmarks.md, "Fixes, measured before/after").
"""

from __future__ import annotations

import gc
import os
import platform
import threading
from collections.abc import Callable, Iterable, Iterator

Labels = tuple[str, ...]  # label values, in the order of the family's label names
Series = tuple[str, Labels, float]  # (suffix, label values, value)
Collected = tuple["Family", list[Series]]


def go_float(value: float) -> str:
    """A value as Prometheus' Go code writes it (prometheus_client's ``floatToGoString``)."""
    value = float(value)
    if value == float("inf"):
        return "+Inf"
    if value == float("-inf"):
        return "-Inf"
    if value != value:
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    # Go switches to exponents sooner than Python (above 1e6 where Python waits for 1e16).
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class Family:
    """A metric family's name (counters with their ``_total``), type, help and label names."""

    __slots__ = ("name", "type", "help", "labelnames", "_header", "_order")

    def __init__(self, name: str, type: str, help: str, labelnames: Iterable[str] = ()) -> None:
        self.name = name
        self.type = type
        self.help = help
        self.labelnames = tuple(labelnames)
        self._header = f"# HELP {name} {escape_help(help)}\n# TYPE {name} {type}\n"
        # Labels are written sorted by name, as prometheus_client writes them.
        self._order = sorted(range(len(self.labelnames)), key=self.labelnames.__getitem__)

    def one(self, value: float) -> Collected:
        """The family with a single unlabelled series."""
        return self, [("", (), value)]

    def render(self, samples: Iterable[Series]) -> str:
        """The family's text: its header, then a line per sample (the header alone when none)."""
        lines = [self._header]
        for suffix, values, value in samples:
            if values:
                names = self.labelnames
                labels = ",".join(f'{names[i]}="{escape_label_value(values[i])}"' for i in self._order)
                lines.append(f"{self.name}{suffix}{{{labels}}} {go_float(value)}\n")
            else:
                lines.append(f"{self.name}{suffix} {go_float(value)}\n")
        return "".join(lines)


class Gauge:
    """A gauge the daemon sets: one value per set of label values, or a function read at scrape."""

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        self.family = Family(name, "gauge", help, labelnames)
        # Unlabelled, it reads 0 until set, as prometheus_client's does.
        self._values: dict[Labels, float] = {} if self.family.labelnames else {(): 0.0}
        self._function: Callable[[], float] | None = None
        self._lock = threading.Lock()

    def set(self, value: float, *labels: str) -> None:
        if len(labels) != len(self.family.labelnames):
            raise ValueError(f"{self.family.name}: {len(self.family.labelnames)} label values expected")
        with self._lock:
            self._values[labels] = float(value)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def set_function(self, function: Callable[[], float]) -> None:
        self._function = function

    def collect(self) -> Iterator[Collected]:
        if self._function is not None:
            yield self.family.one(float(self._function()))
            return
        with self._lock:  # the lock is not held across the yield
            series: list[Series] = [("", labels, value) for labels, value in self._values.items()]
        yield self.family, series


class Summary:
    """A summary without quantiles: the count and the sum of what was observed."""

    def __init__(self, name: str, help: str) -> None:
        self.family = Family(name, "summary", help)
        self.count = 0
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self.count += 1
            self.sum += value

    def collect(self) -> Iterator[Collected]:
        with self._lock:
            count, total = self.count, self.sum
        yield self.family, [("_count", (), float(count)), ("_sum", (), total)]


class Registry:
    """Collectors in registration order, each a callable returning the families it has now."""

    def __init__(self) -> None:
        self._collectors: list[Callable[[], Iterable[Collected]]] = []

    def register(self, collect: Callable[[], Iterable[Collected]]) -> None:
        self._collectors.append(collect)

    def unregister(self, collect: Callable[[], Iterable[Collected]]) -> None:
        self._collectors.remove(collect)

    def collect(self) -> Iterator[Collected]:
        for collect in list(self._collectors):
            yield from collect()

    def render(self) -> bytes:
        return "".join(family.render(samples) for family, samples in self.collect()).encode()


# -- the process --------------------------------------------------------------------------

VIRTUAL_MEMORY = Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.")
RESIDENT_MEMORY = Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
START_TIME = Family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.")
CPU_SECONDS = Family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.")
OPEN_FDS = Family("process_open_fds", "gauge", "Number of open file descriptors.")
MAX_FDS = Family("process_max_fds", "gauge", "Maximum number of open file descriptors.")
PYTHON_INFO = Family("python_info", "gauge", "Python platform information",
                     ("implementation", "major", "minor", "patchlevel", "version"))
GC_COLLECTED = Family("python_gc_objects_collected_total", "counter", "Objects collected during gc", ("generation",))
GC_UNCOLLECTABLE = Family("python_gc_objects_uncollectable_total", "counter", "Uncollectable objects found during GC",
                          ("generation",))
GC_COLLECTIONS = Family("python_gc_collections_total", "counter", "Number of times this generation was collected",
                        ("generation",))


class ProcessCollector:
    """CPU, memory, start time and file descriptors from ``/proc`` (nothing where there is none,
    as prometheus_client's collector does), the Python version and the garbage collector."""

    def __init__(self, proc: str = "/proc") -> None:
        self._self = os.path.join(proc, "self")
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._boot = self._boot_time(proc)
        major, minor, patch = platform.python_version_tuple()
        self._info: list[Series] = [("", (platform.python_implementation(), major, minor, patch,
                                          platform.python_version()), 1.0)]

    @staticmethod
    def _boot_time(proc: str) -> float | None:
        try:
            with open(os.path.join(proc, "stat"), "rb") as stat:
                for line in stat:
                    if line.startswith(b"btime "):
                        return float(line.split()[1])
        except OSError:
            pass
        return None

    def collect(self) -> Iterator[Collected]:
        if self._boot is not None:
            yield from self._proc()
        yield PYTHON_INFO, self._info
        stats = list(enumerate(gc.get_stats()))
        yield GC_COLLECTED, [("", (str(g),), float(s["collected"])) for g, s in stats]
        yield GC_UNCOLLECTABLE, [("", (str(g),), float(s["uncollectable"])) for g, s in stats]
        yield GC_COLLECTIONS, [("", (str(g),), float(s["collections"])) for g, s in stats]

    def _proc(self) -> Iterator[Collected]:
        assert self._boot is not None
        try:
            with open(os.path.join(self._self, "stat"), "rb") as f:
                # After the command name, which may itself hold spaces and parentheses.
                parts = f.read().rsplit(b")", 1)[-1].split()
            yield VIRTUAL_MEMORY.one(float(parts[20]))
            yield RESIDENT_MEMORY.one(float(parts[21]) * self._page)
            yield START_TIME.one(float(parts[19]) / self._ticks + self._boot)
            yield CPU_SECONDS.one((float(parts[11]) + float(parts[12])) / self._ticks)
        except (OSError, IndexError, ValueError):
            pass
        try:
            yield OPEN_FDS.one(float(len(os.listdir(os.path.join(self._self, "fd")))))
            with open(os.path.join(self._self, "limits"), "rb") as f:
                for line in f:
                    if line.startswith(b"Max open files"):
                        yield MAX_FDS.one(float(line.split()[3]))  # "unlimited": not a number, left out
                        break
        except (OSError, IndexError, ValueError):
            pass
