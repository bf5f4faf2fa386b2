"""Keep the forecast history across restarts: one bounded state file, written atomically.

Without it, a restart (a pod rollout, an OOM kill of the exporter) throws away every
target's history: the countdown is absent until growth has been seen again for half of the time
it announces, the cycles seen before are forgotten, and a pending alert's ``for`` starts over, while rules
on Prometheus' own history are unaffected. With it, the first poll after a restart has its
countdown back.

The file is JSON: per target, the peaks the forecaster keeps (at most 2 x 361 points), with
Unix times, and the target's identity (type, address, forecast window) — a target that was
renamed onto another store, or whose window changed, starts afresh rather than inheriting a
history that is not its own. Writes go to a temporary file in the same directory, are
fsynced and renamed over the old one, so a crash leaves the old file or the new one, never
half of one. Reading is defensive: a missing, unreadable, oversized, corrupt or foreign file
is logged and ignored; losing the history is never fatal.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = "cache-exporter-state"
VERSION = 1
FILE_NAME = "forecast-state.json"
MAX_FILE_SIZE = 128 * 2**20  # ~30 bytes a point, 722 points a target: room for ~5000 targets
MAX_POINTS = 512  # per series; the forecaster keeps at most 361 (its three rings and its start)
SAVE_INTERVAL = 60.0  # seconds between periodic saves (and one at shutdown), at most ...
SAVE_FRACTION = 1 / 60  # ... and at most this share of the shortest forecast window: a crash loses little

History = dict[str, list[tuple[float, float]]]  # series ("used", "resident") -> (unix time, peak)


@dataclass(frozen=True)
class Saved:
    """One target's saved history, times in Unix seconds."""

    identity: str
    history: History


def save_interval(windows: list[float]) -> float:
    """How often to save: a minute, or less when a forecast window is short (scaled with it)."""
    return min([SAVE_INTERVAL] + [w * SAVE_FRACTION for w in windows])


def identity(kind: str, address: str, window: float) -> str:
    """What must not change for a saved history to still be the target's own."""
    return f"{kind} {address} {window:g}"


class StateFile:
    """The state file in ``directory``; ``load`` and ``save`` never raise."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self.last_save: float | None = None  # Unix time of the last successful save
        self.failures = 0

    def load(self) -> dict[str, Saved]:
        """The saved histories by target name; {} when there is no usable file (logged)."""
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("state file %s cannot be read (%s); forecasts start without history",
                        self.path, exc.strerror or exc)
            return {}
        if len(raw) > MAX_FILE_SIZE:
            log.warning("state file %s is larger than %d MiB; ignored", self.path, MAX_FILE_SIZE // 2**20)
            return {}
        try:
            document = json.loads(raw)
            return _parse(document)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            log.warning("state file %s is not a cache-exporter state file (%s); ignored", self.path,
                        str(exc)[:200])
            return {}

    def save(self, targets: Mapping[str, Saved]) -> bool:
        """Write ``targets`` atomically; False (logged, counted) if it could not be written."""
        document = {
            "format": FORMAT, "version": VERSION, "saved_at": time.time(),
            "targets": {name: {"identity": s.identity,
                               "history": {series: [[round(t, 3), v] for t, v in points]
                                           for series, points in s.history.items()}}
                        for name, s in targets.items()},
        }
        data = json.dumps(document, separators=(",", ":")).encode()
        import tempfile  # here: only --state.dir writes files, and tempfile brings shutil and random

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".forecast-state-", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _fsync_directory(self.directory)
        except OSError as exc:
            self.failures += 1
            log.warning("cannot write state file %s: %s", self.path, exc.strerror or exc)
            return False
        self.last_save = time.time()
        return True


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is; not every filesystem allows it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse(document: object) -> dict[str, Saved]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError("no cache-exporter-state format marker")
    if document.get("version") != VERSION:
        raise ValueError(f"version {document.get('version')!r}, expected {VERSION}")
    targets = document["targets"]
    if not isinstance(targets, dict):
        raise ValueError("'targets' is not a mapping")
    out: dict[str, Saved] = {}
    for name, entry in targets.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("identity"), str):
            continue  # one bad entry costs that target its history, not the others theirs
        history = entry.get("history")
        if not isinstance(history, dict):
            continue
        out[name] = Saved(entry["identity"], {series: _points(history.get(series)) for series in ("used", "resident")})
    return out


def _points(raw: object) -> list[tuple[float, float]]:
    if not isinstance(raw, list):
        return []
    points = []
    for item in raw[-MAX_POINTS:]:  # oldest first: the newest are the ones that matter
        if (isinstance(item, list) and len(item) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in item)
                and all(math.isfinite(x) for x in item)):
            points.append((float(item[0]), float(item[1])))
    return points


def to_clock(history: History, offset: float) -> History:
    """Shift every time by ``offset`` (Unix <-> monotonic: ``time.time() - time.monotonic()``)."""
    return {series: [(t + offset, v) for t, v in points] for series, points in history.items()}
