"""What does one poll of a memcached target cost, on our side and on the server?

A real memcached (-m 64, loaded with items in 26 slab classes plus gets, misses, cas,
incr/decr, touch and deletes) is polled back to back by one MemcachedSource, the way the
scheduler polls a target, once with ``slabs: true`` and once with ``slabs: false``:

* phase 1, first 100 polls: the server's ``stats`` is read before and after every poll, and
  the source's socket is wrapped (on our side) to count its send and recv calls, to see what
  each single poll costs the server (the first one connects);
* phase 2, 2000 polls timed: CPU (time.process_time) and wall time per poll, with the
  server's counters read only at the start and the end.

memcached counts no ``stats`` commands, so what a poll sends is measured as bytes: the
server's ``bytes_read`` delta per poll (``stats``, ``stats settings``, ``stats slabs`` and
``stats items`` are 49 bytes together), ``bytes_written`` per poll (the replies),
``total_connections`` per poll (new connections), and every ``cmd_*``/hit/miss counter (a
poll must not touch data). Round trips are counted on our side: a poll's sends before its
first recv are one round trip; a send after a recv starts another.

Server-side counters come from one persistent measuring connection whose own traffic is
subtracted exactly (each ``stats`` adds its 7 request bytes to ``bytes_read`` at once, and
its reply to ``bytes_written`` of the next reading). Also timed: reading the reply lines
(``_Conn.reply`` on a recorded reply), ``parse_stats`` + ``map_sections``, and the
scheduler's per-poll publish work (Samples copy + PollStats.samples + render_chunks).
Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_poll_memcached.py [--polls 2000] [--first 100]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

import _common as C
from _common import MemcachedServer, load_memcached, table

from exporter.netio import Guard, GuardedSocket
from exporter.sources import memcached as mc
from exporter.sources.memcached import MemcachedSource, Sections, map_sections, parse_stats
from exporter.targets import MemcachedTarget

STATIC_LABELS = (("env", "prod"),)
POLL_REQUEST = b"".join(mc._COMMANDS[name] for name in mc.SECTIONS)  # what a poll should write
STATS_REQUEST = b"stats\r\n"  # the measuring connection's own request
DATA_COUNTERS = ("cmd_get", "cmd_set", "cmd_flush", "cmd_touch", "cmd_meta", "get_hits", "get_misses",
                 "delete_hits", "delete_misses", "incr_hits", "incr_misses", "decr_hits", "decr_misses",
                 "cas_hits", "cas_misses", "cas_badval", "touch_hits", "touch_misses", "auth_cmds",
                 "total_items")


class ServerCounters:
    """Reads memcached's ``stats`` over one persistent connection and removes its own traffic.

    memcached adds a request to ``bytes_read`` as it reads it (so a ``stats`` reply already
    counts its own 7 bytes) and a reply to ``bytes_written`` once it is sent (so it shows up in
    the next reading). Every reading therefore subtracts all our requests so far, this one
    included, and all our replies before this one: deltas between readings are exact."""

    def __init__(self, server: MemcachedServer) -> None:
        self.client = server.client()
        self.sent = 0
        self.received = 0
        reply = self.client.request(b"version\r\n")  # connected now, before every reading
        self.sent += len(b"version\r\n")
        self.received += len(reply)

    def read(self) -> Counter:
        raw = self.client.request(STATS_REQUEST, b"END\r\n")
        self.sent += len(STATS_REQUEST)
        stats = {}
        for line in raw.decode().split("\r\n"):
            parts = line.split(" ", 2)
            if parts[0] == "STAT" and len(parts) == 3:
                stats[parts[1]] = parts[2]
        out: Counter = Counter()
        out["bytes_read"] = int(stats["bytes_read"]) - self.sent
        out["bytes_written"] = int(stats["bytes_written"]) - self.received
        self.received += len(raw)
        out["connections"] = int(stats["total_connections"])
        for key in DATA_COUNTERS:
            if key in stats:
                out[key] = int(stats[key])
        return out

    @staticmethod
    def delta(before: Counter, after: Counter) -> Counter:
        out = Counter()
        for key in set(before) | set(after):
            value = after.get(key, 0) - before.get(key, 0)
            if value:
                out[key] = value
        return out

    def close(self) -> None:
        self.client.close()


class CountingSocket:
    """Wraps a source's raw socket: counts send/recv calls and remembers the last poll's bytes."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.events: list[tuple[str, int]] = []
        self.received = bytearray()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def reset(self) -> None:
        self.events = []
        self.received = bytearray()

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.events.append(("send", len(data)))
        self._sock.sendall(data, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        n = self._sock.send(data, flags)
        self.events.append(("send", n))
        return n

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = self._sock.recv(bufsize, flags)
        self.events.append(("recv", len(data)))
        self.received += data
        return data

    def round_trips(self) -> int:
        trips, last = 0, None
        for kind, _ in self.events:
            if kind == "send" and last != "send":
                trips += 1
            last = kind
        return trips


def instrument(source: MemcachedSource) -> list[CountingSocket]:
    """Wrap every socket the source opens from now on (our side only; the source is unchanged)."""
    opened: list[CountingSocket] = []
    original = source._open

    def counted_open() -> mc._Conn:
        conn = original()
        counting = CountingSocket(conn.sock._sock)
        conn.sock._sock = counting
        opened.append(counting)
        return conn

    source._open = counted_open  # type: ignore[method-assign]
    return opened


def uninstrument(source: MemcachedSource) -> None:
    del source._open  # back to the class's method
    if source.conn is not None and isinstance(source.conn.sock._sock, CountingSocket):
        source.conn.sock._sock = source.conn.sock._sock._sock


class ReplayedSocket:
    """Returns a recorded reply in 64 KiB pieces, as recv() does for a large local reply."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        chunk = self.data[self.pos:self.pos + bufsize]
        self.pos += len(chunk)
        return chunk

    def settimeout(self, value: float | None) -> None:
        pass


def read_parse_map_cost(raw: bytes, target: MemcachedTarget, rounds: int) -> tuple[float, float, float, int]:
    """CPU per poll of reading the reply lines, parse_stats and map_sections: (read, parse, map, lines)."""
    read_s = parse_s = map_s = 0.0
    history = mc._History.new()
    lines_total = 0
    for _ in range(rounds):
        guard = Guard(1 << 30)
        guard.arm(time.monotonic() + 60)
        conn = mc._Conn(GuardedSocket(ReplayedSocket(raw), guard))  # type: ignore[arg-type]
        t0 = time.process_time()
        replies = [conn.reply()[0] for _ in mc.SECTIONS]
        t1 = time.process_time()
        parsed = [parse_stats(lines, name) for lines, name in zip(replies, mc.SECTIONS, strict=True)]  # type: ignore[arg-type]
        sections = Sections(*parsed)
        t2 = time.process_time()
        map_sections(sections, target, history)
        t3 = time.process_time()
        read_s += t1 - t0
        parse_s += t2 - t1
        map_s += t3 - t2
        lines_total = sum(len(x) for x in replies)  # type: ignore[arg-type]
    return read_s / rounds, parse_s / rounds, map_s / rounds, lines_total


class VariantResult:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def run_variant(server: MemcachedServer, slabs: bool, first: int, polls: int) -> VariantResult:
    target = MemcachedTarget(name="memcached-0001", type="memcached", interval=15.0, timeout=5.0,
                             host="127.0.0.1", port=server.port, labels=STATIC_LABELS, slabs=slabs)
    counters = ServerCounters(server)
    source = MemcachedSource(target)
    opened = instrument(source)

    # Phase 1: polls one by one, server counters and socket calls per poll.
    per_poll: list[Counter] = []
    client_side: list[tuple[int, int, int, int]] = []  # sends, recvs, round trips, bytes received
    raw = b""
    start = counters.read()
    prev = start
    for _ in range(first):
        for sock in opened:
            sock.reset()
        source.poll(time.monotonic() + 5.0)
        events = [e for sock in opened for e in sock.events]
        client_side.append((sum(1 for k, _ in events if k == "send"), sum(1 for k, _ in events if k == "recv"),
                            sum(sock.round_trips() for sock in opened), source.guard.received))
        raw = bytes(opened[-1].received)
        cur = counters.read()
        per_poll.append(counters.delta(prev, cur))
        prev = cur
    uninstrument(source)

    # Phase 2: timed back-to-back polls.
    before = counters.read()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    reading = None
    for _ in range(polls):
        reading = source.poll(time.monotonic() + 5.0)
    cpu = (time.process_time() - cpu0) / polls
    wall = (time.perf_counter() - wall0) / polls
    after = counters.read()
    phase2 = counters.delta(before, after)
    all_polls = counters.delta(start, after)
    connections_opened = source.connections_opened
    source.close()
    counters.close()
    assert reading is not None

    read_s, parse_s, map_s, lines = read_parse_map_cost(raw, target, 300)
    publish_s, render_s, chunk_bytes = C.publish_cost(reading, target.name, "memcached", mc.MEMCACHED_UP, 500,
                                                      STATIC_LABELS)
    return VariantResult(slabs=slabs, per_poll=per_poll, client_side=client_side, phase2=phase2,
                         all_polls=all_polls, cpu=cpu, wall=wall, reading=reading, raw_bytes=len(raw),
                         connections_opened=connections_opened, read_s=read_s, parse_s=parse_s, map_s=map_s,
                         lines=lines, publish_s=publish_s, render_s=render_s, chunk_bytes=chunk_bytes,
                         polls=polls, first=first)


def data_touched(d: Counter) -> str:
    moved = {k: v for k, v in d.items() if k in DATA_COUNTERS and v}
    return ", ".join(f"{k} {v}" for k, v in sorted(moved.items())) or "none"


def report(r: VariantResult) -> tuple[bool, bool, bool]:
    what = f"slabs {'on' if r.slabs else 'off'}"
    first, rest = r.per_poll[0], r.per_poll[1:]
    cs_first, cs_rest = r.client_side[0], r.client_side[1:]
    n_rest = len(rest)

    def avg(values: list[float]) -> str:
        return f"{sum(values) / len(values):.2f}" if values else "-"

    rows = [
        ["phase 1: poll #1 (connects)", 1, first.get("bytes_read", 0), first.get("bytes_written", 0),
         first.get("connections", 0), cs_first[0], cs_first[1], cs_first[2], data_touched(first)],
        [f"phase 1: polls #2-#{r.first}", n_rest, avg([d.get("bytes_read", 0) for d in rest]),
         avg([d.get("bytes_written", 0) for d in rest]), sum(d.get("connections", 0) for d in rest),
         avg([c[0] for c in cs_rest]), avg([c[1] for c in cs_rest]), avg([c[2] for c in cs_rest]),
         data_touched(sum(rest, Counter()))],
        ["phase 2: back to back", r.polls, f"{r.phase2.get('bytes_read', 0) / r.polls:.2f}",
         f"{r.phase2.get('bytes_written', 0) / r.polls:.0f}", r.phase2.get("connections", 0), "-", "-", "-",
         data_touched(r.phase2)],
    ]
    print(table(["polls", "n", "bytes_read/poll", "bytes_written/poll", "new conns", "sends/poll", "recvs/poll",
                 "round trips/poll", "data counters moved"], rows,
                title=f"{what}: server side (memcached `stats` deltas, measuring connection subtracted) and "
                      f"socket calls on our side"))
    max_sends = max(c[0] for c in r.client_side)
    max_trips = max(c[2] for c in r.client_side)
    max_read = max(d.get("bytes_read", 0) for d in r.per_poll)
    total_polls = r.first + r.polls
    conns = r.all_polls.get("connections", 0)
    reply = r.raw_bytes
    sections = Counter(s.family for s in r.reading.samples)
    print()
    print(table(["figure", "value"], [
        ["CPU per poll (process_time)", f"{r.cpu * 1e6:.0f} us"],
        ["wall time per poll", f"{r.wall * 1e6:.0f} us"],
        ["  reply per poll (4 sections)", f"{reply:,} bytes, {r.lines} STAT lines"],
        ["  of which reading lines, _Conn.reply (CPU)", f"{r.read_s * 1e6:.0f} us"],
        ["  of which parse_stats (CPU)", f"{r.parse_s * 1e6:.0f} us"],
        ["  of which map_sections (CPU)", f"{r.map_s * 1e6:.0f} us  ({len(r.reading.samples)} samples, "
                                          f"{len(sections)} families)"],
        ["publish per poll: Samples copy + PollStats + render_chunks", f"{r.publish_s * 1e6:.0f} us"],
        ["  of which render_chunks", f"{r.render_s * 1e6:.0f} us  ({r.chunk_bytes:,} bytes of chunks)"],
        ["CPU per poll incl. publish", f"{(r.cpu + r.publish_s) * 1e6:.0f} us"],
        ["  -> 1000 targets every 15 s", f"{(r.cpu + r.publish_s) * 1000 / 15 * 100:.1f}% of one core"],
        ["new connections, all polls", f"{conns} over {total_polls} polls = {conns / total_polls:.4f}/poll "
                                       f"(source says it opened {r.connections_opened})"],
    ], title=f"{what}: client side"))
    steady_conns = sum(d.get("connections", 0) for d in rest) + r.phase2.get("connections", 0)
    one_write = max_sends == 1 and max_trips == 1
    exact_bytes = all(d.get("bytes_read", 0) == len(POLL_REQUEST) for d in r.per_poll) and \
        r.phase2.get("bytes_read", 0) == len(POLL_REQUEST) * r.polls
    print()
    print(f"goal ({what}): 0 new connections per poll: {steady_conns} after the first poll "
          f"({conns} in all, the first poll's connect) -> {C.goal(steady_conns == 0)}")
    print(f"goal ({what}): 1 write (one round trip) per poll: most sends in one poll {max_sends}, "
          f"most round trips {max_trips} -> {C.goal(one_write)}")
    print(f"check ({what}): server read {len(POLL_REQUEST)} bytes per poll "
          f"(= {', '.join(repr(mc._COMMANDS[n].decode().strip()) for n in mc.SECTIONS)}): "
          f"max in one poll {max_read}, phase 2 {r.phase2.get('bytes_read', 0) / r.polls:.2f} -> "
          f"{'ok' if exact_bytes else 'DIFFERENT'}; data counters moved by polls: "
          f"{data_touched(r.all_polls)}")
    return steady_conns == 0, one_write, exact_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--polls", type=int, default=2000)
    ap.add_argument("--first", type=int, default=100, help="polls checked one by one (phase 1)")
    args = ap.parse_args()

    print("bench_poll_memcached: one MemcachedSource polling a real memcached back to back, slabs on and off")
    print(C.machine_line())
    with MemcachedServer() as server:
        loaded = load_memcached(server)
        slabs_stats = server.stats("slabs")
        print(f"server: memcached {server.version()} on 127.0.0.1:{server.port} (-m {server.memory_mb}); "
              f"{loaded['stored']:,} items stored, active_slabs {slabs_stats.get('active_slabs')}; "
              f"a poll writes {len(POLL_REQUEST)} bytes: {POLL_REQUEST!r}")
        results = [run_variant(server, slabs, args.first, args.polls) for slabs in (True, False)]
        final = server.stats()
    for r in results:
        print()
        report(r)
    on, off = results
    print()
    print(table(["figure", "slabs on", "slabs off"], [
        ["samples per poll", len(on.reading.samples), len(off.reading.samples)],
        ["reply bytes per poll", f"{on.raw_bytes:,}", f"{off.raw_bytes:,}"],
        ["CPU per poll (us)", f"{on.cpu * 1e6:.0f}", f"{off.cpu * 1e6:.0f}"],
        ["wall per poll (us)", f"{on.wall * 1e6:.0f}", f"{off.wall * 1e6:.0f}"],
        ["read lines + parse + map (us)", f"{(on.read_s + on.parse_s + on.map_s) * 1e6:.0f}",
         f"{(off.read_s + off.parse_s + off.map_s) * 1e6:.0f}"],
        ["render_chunks (us)", f"{on.render_s * 1e6:.0f}", f"{off.render_s * 1e6:.0f}"],
        ["poll + publish, 1000 targets / 15 s (% core)", f"{(on.cpu + on.publish_s) * 1000 / 15 * 100:.1f}",
         f"{(off.cpu + off.publish_s) * 1000 / 15 * 100:.1f}"],
    ], title="slabs on vs off"))
    print()
    print(f"server at the end: curr_connections {final.get('curr_connections')}, "
          f"total_connections {final.get('total_connections')}")


if __name__ == "__main__":
    main()
