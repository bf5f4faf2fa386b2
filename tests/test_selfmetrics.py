"""The exporter's process-wide metrics, rendered without prometheus_client: the same text.

Dashboards, rules and people's queries were written against what prometheus_client wrote for
these families (names, HELP, TYPE, label order, number format, the process collector's values),
so the checks compare with prometheus_client itself, which the tests still have.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import Gauge as PGauge
from prometheus_client import ProcessCollector as PProcessCollector
from prometheus_client import Summary as PSummary
from prometheus_client.utils import floatToGoString

from exporter.selfmetrics import Family, Gauge, ProcessCollector, Registry, Summary, go_float

disable_created_metrics()


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_numbers_are_written_as_prometheus_client_writes_them(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


def test_gauges_and_summaries_render_as_prometheus_client_renders_them() -> None:
    theirs, ours = CollectorRegistry(), Registry()
    hostile = 'a"b\\c\nd'
    p_info = PGauge("x_info", "Help with \\ and\nnewline.", ["zeta", "alpha"], registry=theirs)
    p_info.labels(hostile, "1").set(1)
    p_info.labels("z", "2").set(2.5e9)
    PGauge("x_unset", "Never set: reads 0.", registry=theirs)
    p_fn = PGauge("x_fn", "From a function.", registry=theirs)
    p_fn.set_function(lambda: 7)
    PGauge("x_empty", "Labelled, no series yet.", ["k"], registry=theirs)
    p_sum = PSummary("x_seconds", "A summary.", registry=theirs)
    for v in (0.25, 0.5):
        p_sum.observe(v)

    info = Gauge("x_info", "Help with \\ and\nnewline.", ("zeta", "alpha"))
    info.set(1, hostile, "1")
    info.set(2.5e9, "z", "2")
    unset = Gauge("x_unset", "Never set: reads 0.")
    fn = Gauge("x_fn", "From a function.")
    fn.set_function(lambda: 7)
    empty = Gauge("x_empty", "Labelled, no series yet.", ("k",))
    summary = Summary("x_seconds", "A summary.")
    for v in (0.25, 0.5):
        summary.observe(v)
    for metric in (info, unset, fn, empty, summary):
        ours.register(metric.collect)
    assert ours.render() == generate_latest(theirs)


def test_a_counter_family_keeps_its_total_and_a_gauge_can_be_cleared() -> None:
    family = Family("x_errors_total", "counter", "Errors.", ("kind",))
    assert family.render([("", ("dns",), 3)]) == (
        '# HELP x_errors_total Errors.\n# TYPE x_errors_total counter\nx_errors_total{kind="dns"} 3.0\n')
    g = Gauge("x", "X.", ("k",))
    g.set(1, "a")
    g.clear()
    g.set(2, "b")
    assert [s for _, samples in g.collect() for s in samples] == [("", ("b",), 2.0)]
    with pytest.raises(ValueError):
        g.set(1)  # a label value missing: refused, never a series with the wrong labels


def lines(text: bytes) -> dict[str, str]:
    """HELP/TYPE lines and, per series, its value, by the series' name and labels."""
    out = {}
    for line in text.decode().splitlines():
        if line.startswith("#"):
            out[line] = ""
        else:
            name, value = line.rsplit(" ", 1)
            out[name] = value
    return out


def test_the_process_families_are_prometheus_clients_with_the_same_values() -> None:
    theirs = CollectorRegistry()
    PProcessCollector(registry=theirs)
    PlatformCollector(registry=theirs)
    GCCollector(registry=theirs)
    ours = Registry()
    ours.register(ProcessCollector().collect)
    a, b = lines(generate_latest(theirs)), lines(ours.render())
    assert list(a) == list(b)  # the same families, series and labels, in the same order
    for name in ("process_start_time_seconds", "process_max_fds", 'python_info{implementation="CPython",major="3",'
                 f'minor="{os.sys.version_info.minor}",patchlevel="{os.sys.version_info.micro}",'
                 f'version="{os.sys.version_info.major}.{os.sys.version_info.minor}.{os.sys.version_info.micro}"}}'):
        if name in a:
            assert a[name] == b[name], name
    assert math.isclose(float(a["process_resident_memory_bytes"]), float(b["process_resident_memory_bytes"]),
                        rel_tol=0.2)
    assert abs(float(a["process_cpu_seconds_total"]) - float(b["process_cpu_seconds_total"])) < 1.0
    assert abs(float(b["process_start_time_seconds"]) - (time.time() - time.monotonic())) < 10 ** 7  # a sane epoch


@pytest.mark.parametrize("stat, limits", [
    (b"", b""),  # empty files
    (b"1 (x) S 1 2", b"Max open files unlimited unlimited files\n"),  # too few fields, no number
    (b"\xff\xfe garbage", b"\x00\x00"),
])
def test_an_unreadable_proc_leaves_those_families_out_and_never_fails_a_scrape(tmp_path: Path, stat: bytes,
                                                                             limits: bytes) -> None:
    """On a kernel or sandbox whose /proc is missing or odd, a scrape still answers: the process
    families it cannot read are left out, as prometheus_client leaves them out."""
    (tmp_path / "stat").write_bytes(b"cpu 1 2 3\nbtime 1700000000\n")
    me = tmp_path / "self"
    (me / "fd").mkdir(parents=True)
    (me / "stat").write_bytes(stat)
    (me / "limits").write_bytes(limits)
    reg = Registry()
    reg.register(ProcessCollector(str(tmp_path)).collect)
    text = reg.render().decode()
    assert "process_resident_memory_bytes" not in text and "process_max_fds" not in text
    assert re.search(r"^process_open_fds 0\.0$", text, re.M)
    assert "python_info{" in text and "python_gc_collections_total{" in text
    missing = Registry()
    missing.register(ProcessCollector(str(tmp_path / "absent")).collect)
    assert "process_" not in missing.render().decode()
