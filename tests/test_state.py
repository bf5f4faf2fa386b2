"""The forecast history across restarts: the state file, and a real Redis filling while the
exporter restarts.

Without it, a restart throws the history away: the countdown is absent until the growth has been
seen again for half of the time it announces. With ``--state.dir`` the first
poll after a restart has it back; a file that is missing, corrupt, foreign or not writable
costs the history, never the exporter.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pytest
from conftest import redis_target, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from loadgen import SteadyWriter

from exporter import state
from exporter.forecast import Forecaster
from exporter.scheduler import Scheduler
from exporter.snapshot import MemoryView, Samples
from exporter.state import Saved, StateFile, identity, to_clock
from exporter.store import SnapshotStore
from exporter.targets import RedisTarget

MiB = 2**20


def filled(window: float = 3600.0, minutes: float = 30.0, now: float | None = None) -> Forecaster:
    """A forecaster that has watched ``minutes`` of linear growth up to ``now`` (monotonic)."""
    f = Forecaster(window)
    end = time.monotonic() if now is None else now
    polls = int(minutes * 4)
    for i in range(polls):
        f.update(end - (polls - i) * 15, MemoryView(used=100 * MiB + i * 100_000, limit=1024 * MiB,
                                                     resident=120 * MiB, resident_limit=2048 * MiB,
                                                     evicts_when_full=False), "redis", Samples())
    return f


def saved_from(f: Forecaster, ident: str = "redis redis://10.0.0.5:6379 3600") -> Saved:
    return Saved(ident, to_clock(f.history(), time.time() - time.monotonic()))


def countdown(f: Forecaster, used: float = 100 * MiB + 120 * 100_000) -> float | None:
    return f.update(time.monotonic(), MemoryView(used=used, limit=1024 * MiB, evicts_when_full=False),
                    "redis", Samples()).get("seconds_until_full")


# --- the file ---------------------------------------------------------------------------------

def test_round_trip_gives_the_countdown_at_the_first_poll(tmp_path):
    before = filled()
    sf = StateFile(str(tmp_path))
    assert sf.save({"sessions": saved_from(before)})
    assert sf.last_save is not None and sf.failures == 0
    loaded = sf.load()
    after = Forecaster(3600)
    now = time.monotonic()
    kept = after.restore(to_clock(loaded["sessions"].history, now - time.time()), now)
    assert kept == len(before.used) + len(before.resident)
    assert countdown(Forecaster(3600)) is None  # without history: nothing for 15 min
    expected = countdown(before)
    got = countdown(after)
    assert got is not None and expected is not None and math.isclose(got, expected, rel_tol=0.02)


def test_writes_are_atomic_and_leave_nothing_behind(tmp_path):
    sf = StateFile(str(tmp_path / "new" / "dir"))  # created on the first save
    for _ in range(3):
        assert sf.save({"a": saved_from(filled(minutes=5))})
    assert [p.name for p in sf.directory.iterdir()] == [state.FILE_NAME]
    document = json.loads(sf.path.read_text())
    assert document["format"] == state.FORMAT and document["version"] == state.VERSION


@pytest.mark.parametrize("content", [
    b"", b"garbage", b"[]", b"{}", b'{"format": "something-else", "version": 1, "targets": {}}',
    b'{"format": "cache-exporter-state", "version": 99, "targets": {}}',
    b'{"format": "cache-exporter-state", "version": 1, "targets": []}',
    b'{"format": "cache-exporter-state", "version": 1}',
    b"\xff\xfe not utf-8", b"[" * 100_000,
])
def test_a_bad_file_is_logged_and_ignored(tmp_path, caplog, content):
    sf = StateFile(str(tmp_path))
    sf.path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="exporter.state"):
        assert sf.load() == {}
    assert "ignored" in caplog.text


def test_bad_entries_cost_only_their_own_target(tmp_path):
    good = saved_from(filled())
    document = {"format": state.FORMAT, "version": state.VERSION, "targets": {
        "good": {"identity": good.identity, "history": {k: [list(p) for p in v] for k, v in good.history.items()}},
        "no-identity": {"history": {}},
        "bad-history": {"identity": "x", "history": [1, 2]},
        "bad-points": {"identity": "x", "history": {"used": [[1, "a"], [float("inf"), 1], [True, 1], "x", [1]]}},
    }}
    sf = StateFile(str(tmp_path))
    sf.path.write_text(json.dumps(document))
    loaded = sf.load()
    assert set(loaded) == {"good", "bad-points"}
    assert loaded["bad-points"].history == {"used": [], "resident": []}
    assert len(loaded["good"].history["used"]) == len(good.history["used"])


def test_an_oversized_file_is_ignored(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(state, "MAX_FILE_SIZE", 100)
    sf = StateFile(str(tmp_path))
    sf.path.write_text(json.dumps({"format": state.FORMAT, "version": 1, "targets": {}, "pad": "x" * 200}))
    with caplog.at_level(logging.WARNING, logger="exporter.state"):
        assert sf.load() == {}
    assert "larger than" in caplog.text


def test_an_unwritable_directory_is_counted_not_fatal(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory should be")
    sf = StateFile(str(blocker / "state"))
    with caplog.at_level(logging.WARNING, logger="exporter.state"):
        assert sf.save({"a": saved_from(filled(minutes=5))}) is False
    assert sf.failures == 1 and sf.last_save is None
    assert "cannot write state file" in caplog.text


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children,
                                                                                       max_size=5),
                    max_leaves=40))
def test_any_json_document_loads_or_is_ignored(tmp_path_factory, document):
    sf = StateFile(str(tmp_path_factory.mktemp("fuzz")))
    wrapped = {"format": state.FORMAT, "version": state.VERSION, "targets": {"t": document}}
    for candidate in (document, wrapped):
        sf.path.write_text(json.dumps(candidate))
        loaded = sf.load()  # never raises
        assert isinstance(loaded, dict)
        for saved in loaded.values():
            assert all(math.isfinite(t) and math.isfinite(v) for points in saved.history.values() for t, v in points)


# --- restoring into the scheduler ---------------------------------------------------------------

def target(name: str = "sessions", host: str = "10.0.0.5", window: float = 3600.0) -> RedisTarget:
    return RedisTarget(name=name, type="redis", interval=15, timeout=5, host=host, forecast_window=window)


def test_only_the_same_store_and_window_get_the_history_back():
    f = filled()
    saved = {
        "same": saved_from(f, identity("redis", target("same").address, 3600)),
        "moved": saved_from(f, identity("redis", target("moved", host="10.0.0.9").address, 3600)),
        "rewindowed": saved_from(f, identity("redis", target("rewindowed").address, 3600)),  # now 7200
    }
    s = Scheduler(SnapshotStore(), saved)
    try:
        for t in (target("same"), target("moved"), target("rewindowed", window=7200)):
            s._add(t)
        assert s.restored == 1
        assert len(s.runtimes["same"].forecaster.used) > 0
        assert len(s.runtimes["moved"].forecaster.used) == 0
        assert len(s.runtimes["rewindowed"].forecaster.used) == 0
        back = s.histories()
        assert set(back) == {"same"} and back["same"].identity == saved["same"].identity
    finally:
        s.shutdown()


def test_saves_scale_with_the_forecast_window():
    assert state.save_interval([3600.0]) == 60.0  # the default window: once a minute
    assert state.save_interval([3600.0, 120.0]) == 2.0  # a 2 min window: every 2 s
    assert state.save_interval([]) == 60.0


def test_history_older_than_the_forecasts_reach_is_not_restored():
    # The forecast looks back up to 7 days (168 forecast windows): an exporter down for 2 h gets
    # its history back, one down for 8 days does not.
    offset = time.monotonic() - time.time()
    for down, kept in ((2 * 3600, True), (8 * 86400, False)):
        f = filled(minutes=30, now=time.monotonic() - down)
        restored = Forecaster(3600).restore(to_clock(saved_from(f).history, offset), time.monotonic())
        assert (restored > 0) is kept, down


# --- a real Redis filling while the exporter restarts -----------------------------------------------

@pytest.mark.timeout(240)
def test_countdown_is_back_at_the_first_poll_after_a_restart(redis_factory, exporter_factory, tmp_path: Path) -> None:
    """Timers scaled together by 1/30 (interval 0.5 s, timeout 166 ms, forecast window 2 min, the
    state saved every 2 s): a real Redis filling under noeviction in ~2.5 min (75 min at real
    time), so the countdown is given once a third of the fill has been seen; the exporter is
    stopped (SIGTERM) mid-fill and started again with the same --state.dir. Without the state
    directory, the same restart has no countdown at its first poll."""
    server = redis_factory(args=["--maxmemory", "12mb", "--maxmemory-policy", "noeviction"])
    config = {"global": {"interval": "500ms", "timeout": "166ms", "forecast_window": "2m"},
              "targets": [redis_target("sessions", server)]}
    state_dir = tmp_path / "state"
    writer = SteadyWriter(server.client())  # ~80 KB/s: full in ~140 s
    writer.start()
    try:
        first = exporter_factory(config, args=["--state.dir", str(state_dir)])  # killed in teardown on failure
        wait_until(lambda: math.isfinite(first.metrics().value("cache_memory_seconds_until_full",
                                                               target="sessions") or math.inf),
                   timeout=90, interval=0.5, message="the countdown before the restart")
        before = first.metrics().value("cache_memory_seconds_until_full", target="sessions")
        assert first.stop() == 0
        assert (state_dir / state.FILE_NAME).exists(), "written at shutdown"
        # The same restart without a state directory: no countdown after the first poll.
        plain = exporter_factory(config)
        assert plain.metrics().value("cache_memory_seconds_until_full", target="sessions") is None
        assert plain.stop() == 0
        second = exporter_factory(config, args=["--state.dir", str(state_dir)])
        m = second.metrics()  # the factory waited for /readyz: the first poll is done
        after = m.value("cache_memory_seconds_until_full", target="sessions")
        assert after is not None and math.isfinite(after), "the countdown must be back at the first poll"
        assert writer.first_oom is None, "the store filled up before the restart was over"
        assert after < before * 1.5  # the same fill, a little further on
        assert m.value("cache_exporter_state_restored_targets") == 1
        assert "forecast history restored" in second.log()
        wait_until(lambda: second.metrics().value("cache_exporter_state_last_save_timestamp_seconds"),
                   timeout=30, interval=0.5, message="a periodic save")
        assert second.stop() == 0
    finally:
        writer.halt()


def test_a_state_dir_that_cannot_be_used_is_not_fatal(redis_server, exporter_factory, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / state.FILE_NAME).write_text("{not json")
    config = {"global": {"interval": "1s", "timeout": "333ms"}, "targets": [redis_target("r", redis_server)]}
    for name, directory in (("blocked", blocker / "state"), ("corrupt", tmp_path / "corrupt")):
        ep = exporter_factory(config, args=["--state.dir", str(directory)])
        assert ep.metrics().value("cache_up", target="r", store="redis") == 1
        assert ep.stop() == 0
        log = ep.log()
        assert ("cannot write state file" in log) if name == "blocked" else ("ignored" in log)
        assert "Traceback" not in log
