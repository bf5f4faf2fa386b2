"""bench_stale_error: does a short stale error after recovery get counted, at real time?

The incident of issue 14: nginx caches a backend 503 for 1 minute (``proxy_cache_valid any 1m``);
the backend recovers 25 s into the outage, so users get the cached 503 for another ~35 s. Probes
run at the default 30 s. A sustained-state rule (``for: 1m``) can never fire on that; the exporter
counts each probe that sees the stale error (after a second look 2.2 s later) and
CacheHTTPStaleErrorAfterRecovery fires on the first count.

Each trial runs its own origin and nginx; the probes start at a different phase of the outage
(0, 5, ... 25 s), all trials in parallel, for a 60 s and a 30 s error TTL. Prints per trial when the
stale error was counted, relative to the recovery, and how long the stale error lasted. Real time:
about 80 s. Asserts nothing.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import REPO, free_port, wait_until

sys.path.insert(0, str(REPO))

from exporter.config import build_config  # noqa: E402
from exporter.demo import NGINX_CONF, nginx_binary, start_failing_origin  # noqa: E402
from exporter.sources.http_cache import HttpCacheSource  # noqa: E402

PROBE_INTERVAL = 30.0  # the default probe interval (exporter.targets.DEFAULT_PROBE_INTERVAL)
OUTAGE = 25.0  # the origin answers 503 for this long
PHASES = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
TTLS = (60, 30)


def trial(binary: str, workdir: Path, ttl: int, phase: float, start: float, out: dict) -> None:
    recovered_at = start + OUTAGE
    origin = start_failing_origin(recovered_at)  # the demo's origin: 503 until then, 200 after
    port = free_port()
    workdir.mkdir(parents=True)
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port, upstream_port=origin.server_address[1],
                                      valid=f"proxy_cache_valid any {ttl}s;"))
    proc = subprocess.Popen([binary, "-p", str(workdir), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = build_config({"targets": [{"name": "edge", "type": "http_cache", "url": f"http://127.0.0.1:{port}/q",
                                        "bypass": {"query_param": "cb"}}]}, "bench").config.targets[0]
    source = HttpCacheSource(target)  # type: ignore[arg-type]
    seen: list[tuple[float, float, float]] = []  # (time after recovery, stale gauge, stale counter)
    try:
        import socket

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_until(up, timeout=10, message="nginx")
        time.sleep(max(0.0, start + 1 - time.monotonic()))
        import urllib.error
        import urllib.request
        try:  # a user request early in the outage stores the 503
            urllib.request.urlopen(f"http://127.0.0.1:{port}/q", timeout=2)
        except urllib.error.HTTPError:
            pass
        at = start + 1 + phase
        while at < recovered_at + ttl + PROBE_INTERVAL:
            time.sleep(max(0.0, at - time.monotonic()))
            reading = source.poll(time.monotonic() + target.timeout)
            values = {s.family: s.value for s in reading.samples}
            seen.append((at - recovered_at, values.get("http_cache_stale_error_after_recovery", 0),
                         values.get("http_cache_stale_errors_after_recovery_total", 0)))
            at += PROBE_INTERVAL
    finally:
        source.close()
        proc.terminate()
        proc.wait(10)
        origin.shutdown()
    out[(ttl, phase)] = seen


def main() -> int:
    binary = nginx_binary()
    if binary is None:
        print("nginx is not installed: skipped")
        return 0
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-stale-") as tmp:
        start = time.monotonic() + 2
        threads = [threading.Thread(target=trial, args=(binary, Path(tmp) / f"{ttl}-{phase:g}", ttl, phase, start,
                                                         results))
                   for ttl in TTLS for phase in PHASES]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    print(f"origin fails {OUTAGE:g} s; a user stores its 503 at 1 s; probes every {PROBE_INTERVAL:g} s "
          "from 1 s + phase")
    print(f"{'error TTL':>9} {'phase':>6} {'stale for':>9} {'probes seeing it':>16} {'counted at':>11}")
    for ttl in TTLS:
        stale_for = 1 + ttl - OUTAGE
        counted_in = 0
        for phase in PHASES:
            seen = results.get((ttl, phase), [])
            stale = [f"{t:+.0f}s" for t, gauge, _ in seen if gauge == 1]
            first = next((t for t, _, total in seen if total >= 1), None)
            counted_in += first is not None
            print(f"{ttl:>8}s {phase:>5g}s {stale_for:>8g}s {', '.join(stale) or '-':>16} "
                  f"{'' if first is None else f'{first:+.1f}s':>11}")
        print(f"  TTL {ttl} s: counted in {counted_in} of {len(PHASES)} phases (a probe lands in the stale "
              f"error's first {stale_for - 2.2:.1f} s with odds {min(1.0, (stale_for - 2.2) / PROBE_INTERVAL):.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
