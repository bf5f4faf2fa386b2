"""What does one poll of a Redis target cost, on our side and on the server?

A real redis-server (loaded with keys in four dbs and ~25 commands so INFO is realistic) is
polled back to back by one RedisSource, the way the scheduler polls a target:

* phase 1, first 100 polls: the server's INFO commandstats/stats are read before and after
  every poll, to see what each single poll sends (the first one connects);
* phase 2, 2000 polls timed: CPU (time.process_time) and wall time per poll, with the
  server's counters read only at the start and the end;
* phase 3, 200 polls with a simulated 15 s interval: the source's CONFIG GET refresh clock is
  aged by 15 s before each poll (back-to-back polls otherwise never reach the 60 s refresh).

Server-side figures come from a separate, persistent measuring connection. Its own INFO
calls are calibrated away (two back-to-back readings with no poll between them).
Also timed: the scheduler's per-poll publish work (Samples copy + PollStats.samples +
render_chunks), and parse_info / map_info on their own. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_poll.py [--polls 2000]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import _common as C
import redis
from _common import RedisServer, load_workload, table

from exporter.sources import redis as redis_source
from exporter.sources.redis import RedisSource, map_info, parse_info
from exporter.targets import RedisTarget

EXPECTED = ("info", "config|get", "client|setname")  # what a poll is supposed to send
STATIC_LABELS = (("env", "prod"),)


class ServerCounters:
    """Reads the server's commandstats and stats over one persistent connection."""

    def __init__(self, server: RedisServer) -> None:
        self.client = server.client()
        self.client.ping()  # connect now, so this client's connection predates every reading
        self.overhead: Counter = Counter()

    def read(self) -> Counter:
        info = self.client.info("stats", "commandstats")
        out: Counter = Counter()
        for key, value in info.items():
            if key.startswith("cmdstat_"):
                out["cmd:" + key.removeprefix("cmdstat_")] = int(value["calls"])
        out["connections"] = int(info["total_connections_received"])
        out["reads"] = int(info["total_reads_processed"])
        return out

    def calibrate(self, rounds: int = 20) -> None:
        """What one reading adds to the next reading's counters, with nothing else going on."""
        deltas = []
        prev = self.read()
        for _ in range(rounds):
            cur = self.read()
            deltas.append(cur - prev)
            prev = cur
        # The smallest delta seen per key (background noise would only add to it).
        keys = set().union(*deltas)
        self.overhead = Counter({k: min(d.get(k, 0) for d in deltas) for k in keys})

    def delta(self, before: Counter, after: Counter, readings_between: int) -> Counter:
        """after - before, minus what ``readings_between`` of our own readings added."""
        out = Counter()
        for key in set(before) | set(after):
            value = after.get(key, 0) - before.get(key, 0) - self.overhead.get(key, 0) * readings_between
            if value:
                out[key] = value
        return out


def commands(d: Counter) -> Counter:
    return Counter({k.removeprefix("cmd:"): v for k, v in d.items() if k.startswith("cmd:") and v})


def fmt_cmds(c: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "-"


def parse_cost(server: RedisServer, target: RedisTarget, rounds: int) -> tuple[float, float, int]:
    # A bare connection, as RedisSource uses: redis.Redis would parse the INFO reply itself.
    conn = redis.Connection(host="127.0.0.1", port=server.port, socket_timeout=10)
    conn.send_command("INFO", "ALL")
    text = conn.read_response().decode()
    conn.disconnect()
    t0 = time.process_time()
    for _ in range(rounds):
        info = parse_info(text)
    t1 = time.process_time()
    for _ in range(rounds):
        map_info(info, target, {}, time.time())
    t2 = time.process_time()
    return (t1 - t0) / rounds, (t2 - t1) / rounds, len(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--polls", type=int, default=2000)
    ap.add_argument("--first", type=int, default=100, help="polls checked one by one (phase 1)")
    args = ap.parse_args()

    print("bench_poll: one RedisSource polling a real redis-server back to back")
    print(C.machine_line())
    with RedisServer() as server:
        load_workload(server)
        target = RedisTarget(name="redis-0001", type="redis", interval=15.0, timeout=5.0,
                             host="127.0.0.1", port=server.port, labels=STATIC_LABELS)
        counters = ServerCounters(server)
        counters.calibrate()
        print(f"server: redis {server.version()} on 127.0.0.1:{server.port}; measuring-connection overhead "
              f"per reading: {fmt_cmds(commands(counters.overhead))}, "
              f"connections {counters.overhead.get('connections', 0)}, reads {counters.overhead.get('reads', 0)}")
        source = RedisSource(target)

        # Phase 1: polls one by one.
        per_poll: list[Counter] = []
        start = counters.read()
        prev = start
        for _ in range(args.first):
            source.poll(time.monotonic() + 5.0)
            cur = counters.read()
            per_poll.append(counters.delta(prev, cur, 1))
            prev = cur

        # Phase 2: timed back-to-back polls.
        before = counters.read()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        reading = None
        for _ in range(args.polls):
            reading = source.poll(time.monotonic() + 5.0)
        cpu = (time.process_time() - cpu0) / args.polls
        wall = (time.perf_counter() - wall0) / args.polls
        after = counters.read()
        phase2 = counters.delta(before, after, 1)

        # Phase 3: polls 15 s apart as far as the CONFIG GET refresh clock is concerned.
        sim_polls = 200
        before3 = counters.read()
        for _ in range(sim_polls):
            source.config_fetched_at -= 15.0
            source.poll(time.monotonic() + 5.0)
        after3 = counters.read()
        phase3 = counters.delta(before3, after3, 1)
        all_polls = counters.delta(start, after3, args.first + 3)  # every reading between start and after3
        connections_opened = source.connections_opened
        source.close()

        parse_s, map_s, info_bytes = parse_cost(server, target, 500)
        counters.client.close()
    assert reading is not None
    publish_s, render_s, chunk_bytes = C.publish_cost(reading, "redis-0001", "redis", redis_source.REDIS_UP, 2000,
                                                      STATIC_LABELS)

    def cmd_total(d: Counter) -> int:
        return sum(commands(d).values())

    first = per_poll[0]
    rest = per_poll[1:]
    max_cmds = max(cmd_total(d) for d in per_poll)
    max_rest = max((cmd_total(d) for d in rest), default=0)
    unexpected = Counter()
    for d in per_poll + [phase2, phase3]:
        unexpected.update({k: v for k, v in commands(d).items() if k not in EXPECTED})
    tracked = lambda d: sum(v for k, v in commands(d).items() if k in EXPECTED)  # noqa: E731

    rows = [
        ["phase 1: poll #1 (connects)", 1, f"{tracked(first):.2f}", cmd_total(first), fmt_cmds(commands(first)),
         first.get("connections", 0), first.get("reads", 0)],
        [f"phase 1: polls #2-#{args.first}", len(rest), f"{sum(tracked(d) for d in rest) / len(rest):.2f}",
         max_rest, fmt_cmds(sum(map(commands, rest), Counter())),
         sum(d.get("connections", 0) for d in rest), f"{sum(d.get('reads', 0) for d in rest) / len(rest):.2f}"],
        ["phase 2: back to back", args.polls, f"{tracked(phase2) / args.polls:.3f}", "-",
         fmt_cmds(commands(phase2)), phase2.get("connections", 0), f"{phase2.get('reads', 0) / args.polls:.2f}"],
        ["phase 3: simulated 15 s interval", sim_polls, f"{tracked(phase3) / sim_polls:.3f}", "-",
         fmt_cmds(commands(phase3)), phase3.get("connections", 0), f"{phase3.get('reads', 0) / sim_polls:.2f}"],
    ]
    print()
    print(table(["polls", "n", "cmds/poll", "max/poll", "commands seen on the server", "new conns",
                 "reads/poll"], rows,
                title="server side (INFO commandstats/stats deltas; cmds/poll counts info + config|get + "
                      "client|setname; max/poll counts every command)"))
    total_polls = args.first + args.polls + sim_polls
    conns = all_polls.get("connections", 0)
    print()
    print(table(["figure", "value"], [
        ["CPU per poll (process_time)", f"{cpu * 1e6:.0f} us"],
        ["wall time per poll", f"{wall * 1e6:.0f} us"],
        ["  of which parse_info (CPU)", f"{parse_s * 1e6:.0f} us  (INFO ALL reply: {info_bytes:,} bytes)"],
        ["  of which map_info (CPU)", f"{map_s * 1e6:.0f} us  ({len(reading.samples)} samples)"],
        ["publish per poll: Samples copy + PollStats + render_chunks", f"{publish_s * 1e6:.0f} us"],
        ["  of which render_chunks", f"{render_s * 1e6:.0f} us  ({chunk_bytes:,} bytes of chunks)"],
        ["CPU per poll incl. publish", f"{(cpu + publish_s) * 1e6:.0f} us"],
        ["  -> 1000 targets every 15 s", f"{(cpu + publish_s) * 1000 / 15 * 100:.1f}% of one core"],
        ["new connections, all polls", f"{conns} over {total_polls} polls = {conns / total_polls:.4f}/poll "
                                       f"(source says it opened {connections_opened})"],
    ], title="client side"))
    steady_cmds = tracked(phase2) / args.polls
    sim_cmds = tracked(phase3) / sim_polls
    steady_conns = sum(d.get("connections", 0) for d in rest) + phase2.get("connections", 0) \
        + phase3.get("connections", 0)
    print()
    print(f"goal: <= 2 Redis commands per poll: steady state {steady_cmds:.3f}, simulated 15 s interval "
          f"{sim_cmds:.3f}, max in one poll {max_cmds} (poll #1: {fmt_cmds(commands(first))}) -> "
          f"{C.goal(max(steady_cmds, sim_cmds) <= 2)} on average, "
          f"{C.goal(max_cmds <= 2)} for every single poll")
    print(f"goal: 0 new connections per poll: {steady_conns} after the first poll "
          f"({conns} in all, the first poll's connect) -> {C.goal(steady_conns == 0)}")
    if unexpected:
        print(f"unexpected commands from the source: {fmt_cmds(unexpected)}")
    else:
        print("unexpected commands from the source: none")


if __name__ == "__main__":
    main()
