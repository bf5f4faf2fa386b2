"""The opt-in per-key-prefix view: SCAN + MEMORY USAGE on a bounded sample of keys, summed
by prefix and scaled to DBSIZE, every ``prefixes.interval``."""

from __future__ import annotations

import time

import redis

from exporter import errors as E
from exporter.errors import PollError
from exporter.snapshot import LabelPairs
from exporter.sources.prefixes import PrefixTally
from exporter.sources.redis.tables import (
    PREFIX_BYTES,
    PREFIX_KEYS,
    PREFIX_SAMPLED,
    PREFIX_SCAN_COMPLETE,
    PREFIX_SCAN_TIME,
)
from exporter.targets import PrefixView

SCAN_BATCH = 500  # keys asked of one SCAN and measured in one pipeline of MEMORY USAGE

PrefixSamples = list[tuple[str, float, LabelPairs]]


def sample_prefixes(conn: redis.connection.AbstractConnection, view: PrefixView,
                    deadline: float) -> PrefixSamples | str:
    """SCAN up to max_keys keys and MEMORY USAGE each (pipelined per batch) until ``deadline``
    (monotonic); sums by prefix, scaled to DBSIZE. Returns the samples, or why not."""
    tally = PrefixTally(view.delimiter)
    sampled, cursor, finished = 0, b"0", False
    try:
        conn.send_command("DBSIZE")
        size_reply = conn.read_response()
        if not isinstance(size_reply, (int, bytes, str)):
            raise TypeError(f"DBSIZE returned {type(size_reply).__name__}")
        dbsize = int(size_reply)
        while sampled < view.max_keys and time.monotonic() < deadline:
            conn.send_command("SCAN", cursor, "COUNT", min(SCAN_BATCH, view.max_keys - sampled))
            scan = conn.read_response()
            if not isinstance(scan, (list, tuple)) or len(scan) != 2:
                raise ValueError(f"SCAN returned {type(scan).__name__}, expected [cursor, keys]")
            cursor, reply = scan
            keys = list(reply)[:view.max_keys - sampled]  # SCAN's COUNT is a hint, not a cap
            cut = len(keys) < len(reply)
            if keys:
                conn.send_packed_command(conn.pack_commands([("MEMORY", "USAGE", k) for k in keys]))
                refused: redis.exceptions.ResponseError | None = None
                for key in keys:
                    try:  # read every reply, even after an error: the connection stays in step
                        size = conn.read_response()
                    except redis.exceptions.ResponseError as exc:
                        refused = refused or exc
                        continue
                    if isinstance(size, int):  # None: the key expired in between
                        tally.add(key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key), size)
                if refused is not None:
                    raise refused
                sampled += len(keys)
            if cursor in (b"0", 0, "0"):
                finished = not cut
                break
    except redis.exceptions.ResponseError as exc:  # MEMORY or SCAN renamed away, or denied by ACL
        return str(exc).split("\n")[0][:120]
    except (TypeError, ValueError) as exc:
        raise PollError(E.PROTOCOL, f"unexpected reply while sampling prefixes: {exc}") from None
    complete = finished  # SCAN came back to cursor 0: every key was seen once
    measured = tally.counted
    scale = 1.0 if complete or measured == 0 else max(1.0, dbsize / measured)
    out: PrefixSamples = []
    for prefix, size, items in tally.top(view.top):
        labels = (("prefix", prefix),)
        out.append((PREFIX_BYTES, size * scale, labels))
        out.append((PREFIX_KEYS, round(items * scale), labels))
    out += [(PREFIX_SAMPLED, measured, ()), (PREFIX_SCAN_COMPLETE, int(complete), ()),
            (PREFIX_SCAN_TIME, time.time(), ())]
    return out
