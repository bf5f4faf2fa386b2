"""bench_shards: N targets across M exporter processes (``--shard i --total-shards M``) on this machine.

The issue's goal "10 000 targets across 4 shards on this machine", measured. A few redis-servers
(``--maxclients`` raised to their share: every target keeps ONE persistent connection, so N
targets are N connections) and a memcached or two (80 % Redis / 20 % memcached, the mix of
bench_vs_redis_exporter's 800/200 fleet) serve ONE config file with N distinct target names; M
exporter processes read it, each with its own ``--shard i --total-shards M`` and port, so each
polls the targets whose name hashes to it (exporter/sharding.py).

Once every shard has polled each of its targets once (``/targets``, bounded wait) and 1.5
intervals have passed (the second poll of a target waits for its grid point), a window
(``--seconds``) is measured per shard, with no scrape inside it: RSS and threads (/proc), CPU %
of one core (utime + stime from /proc/PID/stat over the window), polls done vs scheduled
(``cache_exporter_polls_total``; scheduled = owned targets x window / interval), skipped polls
(``cache_exporter_polls_skipped_total``), targets owned and up, then one ``/metrics`` scrape
(gzip, as Prometheus asks) timed with its body size. Ownership is checked: the union of the
shards' target names equals the config's, no name is on two shards, and each sits on the shard
``exporter.sharding.owner`` names.

Prints figures; asserts nothing. Loopback only. The default (10 000 targets, 4 shards, 15 s,
90 s window) takes several minutes; ``--quick`` (200 targets, 2 shards, 30 s window) ~1 min.

    .venv/bin/python benchmarks/bench_shards.py [--quick] [--targets N] [--shards M] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import yaml
from _common import (
    MemcachedServer,
    RedisServer,
    free_port,
    goal,
    human_bytes,
    machine_line,
    raise_nofile,
    table,
    wait_until,
)
from bench_vs_redis_exporter import PYTHON, Process, cpu_seconds, ours_polls, poll_counts, status

from exporter.sharding import owner

MEMCACHED_SHARE = 0.2  # bench_vs_redis_exporter's 800 Redis / 200 memcached
FD_MARGIN = 200  # listening sockets, logs, the measuring connections, a scrape


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=None, help="targets in the config (default 10000)")
    ap.add_argument("--shards", type=int, default=None, help="exporter processes (default 4)")
    ap.add_argument("--seconds", type=float, default=None, help="measured window (default 90)")
    ap.add_argument("--interval", type=float, default=15.0, help="poll interval in seconds (default 15)")
    ap.add_argument("--redis-servers", type=int, default=None, help="redis-servers (default 5)")
    ap.add_argument("--memcached-servers", type=int, default=None,
                    help="memcached servers, 20 %% of the targets (default 2; 0: Redis only)")
    ap.add_argument("--wait", type=float, default=None,
                    help="bound on the wait for every target's first poll (default 120 s + 1 s per 50 targets)")
    ap.add_argument("--quick", action="store_true", help="200 targets, 2 shards, 30 s window")
    args = ap.parse_args()
    n = args.targets if args.targets is not None else (200 if args.quick else 10000)
    m = args.shards if args.shards is not None else (2 if args.quick else 4)
    window = args.seconds if args.seconds is not None else (30.0 if args.quick else 90.0)
    n_redis_servers = max(1, args.redis_servers if args.redis_servers is not None else (2 if args.quick else 5))
    n_mc_servers = args.memcached_servers if args.memcached_servers is not None else (1 if args.quick else 2)
    wait_bound = args.wait if args.wait is not None else 120 + n / 50
    n_mc = round(n * MEMCACHED_SHARE) if n_mc_servers > 0 else 0
    n_redis = n - n_mc
    redis_share = split(n_redis, n_redis_servers)
    mc_share = split(n_mc, n_mc_servers) if n_mc_servers else []

    # The largest single process: a server holding its share, or a shard owning (about) N/M plus slack.
    needed = max([*redis_share, *mc_share, math.ceil(n / m * 1.2)]) + FD_MARGIN
    nofile = raise_nofile(needed)

    print(f"bench_shards: {n} targets ({n_redis} Redis on {n_redis_servers} redis-servers, {n_mc} memcached on "
          f"{n_mc_servers} memcached) across {m} shards, interval {args.interval:g} s, window {window:g} s")
    print(machine_line())
    print(f"{nofile}; largest process needs ~{needed}")

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cache-exporter-bench-shards-")))
        redis_servers = [stack.enter_context(RedisServer(["--maxclients", str(share + FD_MARGIN)]))
                         for share in redis_share]
        mc_servers = [stack.enter_context(MemcachedServer(["-c", str(share + FD_MARGIN)])) for share in mc_share]
        targets: list[dict[str, object]] = []
        for s, share in zip(redis_servers, redis_share, strict=True):
            for _ in range(share):
                targets.append({"name": f"redis-{len(targets):05d}", "type": "redis",
                                "url": f"redis://127.0.0.1:{s.port}"})
        for mc, share in zip(mc_servers, mc_share, strict=True):
            for _ in range(share):
                targets.append({"name": f"memcached-{len(targets):05d}", "type": "memcached",
                                "address": f"127.0.0.1:{mc.port}"})
        names = [str(t["name"]) for t in targets]
        assert len(set(names)) == len(names)  # a bug of this script, not a measurement
        config = workdir / "fleet.yml"
        config.write_text(yaml.safe_dump({"global": {"interval": f"{args.interval:g}s"}, "targets": targets}))

        t_start = time.monotonic()
        shards: list[Process] = []
        for i in range(m):
            port = free_port()
            p = Process(f"shard-{i}", [PYTHON, "-m", "exporter", "run", "--config.file", str(config),
                                       "--web.listen-address", f"127.0.0.1:{port}", "--shard", str(i),
                                       "--total-shards", str(m), "--log-level", "warning"],
                        port, workdir / f"shard-{i}.log")
            stack.callback(p.stop)
            shards.append(p)

        owned: list[list[str]] = [[] for _ in shards]

        def all_polled() -> bool:
            for i, p in enumerate(shards):
                status_code, body = p.get("/targets", timeout=120)
                if status_code != 200:
                    return False
                entries = json.loads(body)
                owned[i] = [e["name"] for e in entries]
                if not all(e["polls"] >= 1 for e in entries):
                    return False
            return True

        try:
            wait_until(all_polled, timeout=wait_bound, interval=max(1.0, n / 2000),  # /targets details every target
                       message=f"every shard: each of its targets polled once (bound {wait_bound:g} s)")
        except RuntimeError as exc:
            print(f"NOT every target polled within {wait_bound:g} s: {exc}")
            for p in shards:
                log = (workdir / f"{p.name}.log").read_text(errors="replace")[-1500:]
                print(f"--- {p.name} log tail ---\n{log}")
            return 1
        first_polled = time.monotonic() - t_start

        # Ownership: exactly one shard per target, and the one the hash names.
        seen: dict[str, int] = {}
        overlap = 0
        for i, names_i in enumerate(owned):
            for name in names_i:
                if name in seen:
                    overlap += 1
                seen[name] = i
        missing = set(names) - set(seen)
        extra = set(seen) - set(names)
        wrong_owner = sum(1 for name, i in seen.items() if owner(name, m) != i)
        covered = not missing and not extra and overlap == 0

        # The second poll of a target is its first grid point at least half an interval after
        # the first round (exporter/scheduler.py), so a window opened right after the first round
        # would miss up to a quarter of the scheduled polls; from here on every target is on its grid.
        settle = t_start + 1.5 * args.interval + 2 - time.monotonic()
        if settle > 0:
            time.sleep(settle)
        # The window: no scrape inside it; /metrics read just before and just after.
        before = [ours_polls(p) for p in shards]
        cpu0 = [cpu_seconds(p.pid) for p in shards]
        t0 = time.monotonic()
        time.sleep(window)
        cpu1 = [cpu_seconds(p.pid) for p in shards]
        elapsed = time.monotonic() - t0
        rows = []
        tot = dict(owned=0, up=0, rss=0, threads=0, cpu=0.0, polls=0.0, scheduled=0.0, skipped=0.0,
                   skipped_all=0.0, scrape=0.0, body=0)
        for i, p in enumerate(shards):
            proc = status(p.pid)
            t_scrape = time.perf_counter()
            _, body = p.get("/metrics", gz=True)
            scrape_s = time.perf_counter() - t_scrape
            polls1, skipped1 = poll_counts(body)
            up = sum(1 for line in body.decode().splitlines()
                     if line.startswith("cache_up{") and line.rsplit(" ", 1)[1] in ("1", "1.0"))
            polls = polls1 - before[i][0]
            skipped = skipped1 - before[i][1]
            scheduled = len(owned[i]) * elapsed / args.interval
            cpu_pct = (cpu1[i] - cpu0[i]) / elapsed * 100
            rows.append([f"{i}/{m}", len(owned[i]), up, f"{proc['VmRSS'] / 1024:.1f}", proc["Threads"],
                         f"{cpu_pct:.1f}", f"{polls:.0f}", f"{scheduled:.0f}",
                         f"{100 * polls / scheduled:.1f}" if scheduled else "-", f"{skipped:.0f}",
                         f"{skipped1:.0f}", f"{scrape_s * 1e3:.1f}", human_bytes(len(body))])
            for key, value in (("owned", len(owned[i])), ("up", up), ("rss", proc["VmRSS"]),
                               ("threads", proc["Threads"]), ("cpu", cpu_pct), ("polls", polls),
                               ("scheduled", scheduled), ("skipped", skipped), ("skipped_all", skipped1),
                               ("scrape", scrape_s * 1e3), ("body", len(body))):
                tot[key] += value  # type: ignore[operator]
        rows.append(["total", tot["owned"], tot["up"], f"{tot['rss'] / 1024:.1f}", tot["threads"],
                     f"{tot['cpu']:.1f}", f"{tot['polls']:.0f}", f"{tot['scheduled']:.0f}",
                     f"{100 * tot['polls'] / tot['scheduled']:.1f}" if tot["scheduled"] else "-",
                     f"{tot['skipped']:.0f}", f"{tot['skipped_all']:.0f}", f"{tot['scrape']:.1f}",
                     human_bytes(tot["body"])])
        print()
        print(table(["shard", "owned", "up", "RSS MiB", "threads", "CPU % 1 core", "polls", "scheduled",
                     "done %", "skipped", "skipped since start", "/metrics ms", "/metrics body"], rows,
                    title=f"per shard, window {elapsed:.0f} s (every target first polled {first_polled:.0f} s "
                          f"after the shards started)"))
        print()
        cores = len(os.sched_getaffinity(0))
        print(f"ownership: {len(seen)} of {n} targets on a shard, {len(missing)} on none, {overlap} on two, "
              f"{len(extra)} unknown, {wrong_owner} not on the shard owner() names -> "
              f"{'every target on exactly one shard' if covered else 'NOT exactly one shard per target'}")
        print(f"total: CPU {tot['cpu']:.1f} % of one core ({tot['cpu'] / cores:.1f} % of the {cores} cores), "
              f"RSS {tot['rss'] / 1024:.1f} MiB, CPU per poll "
              f"{(sum(cpu1) - sum(cpu0)) / tot['polls'] * 1e3:.2f} ms" if tot["polls"] else
              f"total: CPU {tot['cpu']:.1f} % of one core, no poll in the window")
        all_up = tot["up"] == n
        ok = covered and all_up and tot["skipped"] == 0 and tot["polls"] >= 0.95 * tot["scheduled"]
        print(f"goal \"{n} targets across {m} shards on this machine\" (every target on one shard and up, polls "
              f">= 95 % of scheduled, 0 skipped polls in the window): {goal(ok)} -- up {tot['up']}/{n}, "
              f"done {100 * tot['polls'] / tot['scheduled'] if tot['scheduled'] else 0:.1f} %, "
              f"skipped {tot['skipped']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
