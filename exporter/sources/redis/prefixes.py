"""The opt-in per-key-prefix view: SCAN + MEMORY USAGE on a bounded sample of keys, summed
by prefix and scaled to DBSIZE, every ``prefixes.interval``."""

from __future__ import annotations

import time

from exporter import errors as E
from exporter.errors import PollError
from exporter.snapshot import LabelPairs
from exporter.sources.prefixes import PrefixTally
from exporter.sources.redis.resp import Connection, ServerError
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


def sample_prefixes(conn: Connection, view: PrefixView, deadline: float) -> PrefixSamples | str:
    """SCAN up to max_keys keys and MEMORY USAGE each (pipelined per batch) until ``deadline``
    (monotonic); sums by prefix, scaled to DBSIZE. Returns the samples, or why not."""
    tally = PrefixTally(view.delimiter)
    sampled, cursor, finished = 0, b"0", False
    try:
        size_reply = conn.call("DBSIZE")
        if not isinstance(size_reply, (int, bytes)):
            raise TypeError(f"DBSIZE returned {type(size_reply).__name__}")
        dbsize = int(size_reply)
        while sampled < view.max_keys and time.monotonic() < deadline:
            scan = conn.call("SCAN", cursor, "COUNT", min(SCAN_BATCH, view.max_keys - sampled))
            if not isinstance(scan, list) or len(scan) != 2 or not isinstance(scan[0], bytes) \
                    or not isinstance(scan[1], list):
                raise ValueError(f"SCAN returned {type(scan).__name__}, expected [cursor, keys]")
            cursor, reply = scan
            keys = reply[:view.max_keys - sampled]  # SCAN's COUNT is a hint, not a cap
            cut = len(keys) < len(reply)
            if keys:
                # Every reply is read, errors too: the connection stays in step.
                sizes = conn.execute([("MEMORY", "USAGE", k) for k in keys])
                refused = next((s for s in sizes if isinstance(s, ServerError)), None)
                if refused is not None:
                    raise refused
                for key, size in zip(keys, sizes, strict=True):
                    if isinstance(size, int):  # None: the key expired in between
                        tally.add(key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key), size)
                sampled += len(keys)
            if cursor == b"0":
                finished = not cut
                break
    except ServerError as exc:  # MEMORY or SCAN renamed away, or denied by ACL
        if exc.closes_connection:
            raise  # not about the view: the whole poll failed
        return exc.text.split("\n")[0][:120]
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
