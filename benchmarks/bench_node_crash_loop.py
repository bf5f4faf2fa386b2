"""bench_node_crash_loop: how long before a V8 heap abort does AppHeapExhaustionPredicted fire?

Runs tests/apps/node_heap_app (an unbounded ``Map`` cache, ``--max-old-space-size=64``) in a crash
loop (restarted on the same port after each exit 134), and a healthy twin whose bounded cache makes
its heap saw under GC, watched by ``cache-exporter run`` and a real Prometheus with the shipped
rules. At ``--scale 1`` everything runs at the defaults: 15 s polls, 1 h forecast window, 15 s
scrapes, 1 m rule evaluation, and a leak sized to kill the app in ~10 min. ``--scale 1/30`` is what
tests/test_app_node.py runs. Prints, per life: how long it lived, its last utilization, and when the
warning and the critical alert fired before the abort; and whether the twin ever alerted.
Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_node_crash_loop.py [--scale 1] [--lives 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from fractions import Fraction
from pathlib import Path

import yaml
from _common import REPO, free_port, stop_process, table, wait_until

sys.path.insert(0, str(REPO / "alerts"))
import build_rules  # noqa: E402

APP = REPO / "tests" / "apps" / "node_heap_app"
MiB = 2**20
# Bytes per second that fill the 51 MiB effective limit in ~10 min at scale 1 (per-request garbage
# beside it, scaled too, is what makes V8 give up at 80 % instead of 97 %).
GROW_AT_SCALE_1 = 5 * MiB // 2 // 30
CHURN_AT_SCALE_1 = 8 * MiB // 30


def start_node(port: int, grow: int, churn: int, max_entries: int = 0) -> subprocess.Popen:
    env = {"PORT": str(port), "EXPORT_HEAP_LIMIT": "1", "GROW_BYTES_PER_SEC": str(grow),
           "CHURN_BYTES_PER_SEC": str(churn), "CACHE_MAX_ENTRIES": str(max_entries), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([shutil.which("node") or "node", "--max-old-space-size=64", str(APP / "app.js")],
                            env=env, cwd=APP, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import socket

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until(listening, timeout=15, message="node listening")
    return proc


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", default="1", help="every timer times this (e.g. 1/30)")
    ap.add_argument("--lives", type=int, default=2)
    args = ap.parse_args()
    scale = float(Fraction(args.scale))
    grow, churn = int(GROW_AT_SCALE_1 / scale), int(CHURN_AT_SCALE_1 / scale)
    work = Path(tempfile.mkdtemp(prefix="bench-node-"))
    leaky_port, healthy_port, exp_port, prom_port = free_port(), free_port(), free_port(), free_port()
    d = build_rules.duration
    config = {"global": {"interval": d(15 * scale), "timeout": d(min(10, 15 * scale * 0.8)),
                         "forecast_window": d(3600 * scale)},
              "targets": [{"name": n, "type": "app", "url": f"http://127.0.0.1:{p}/metrics"}
                          for n, p in (("leaky", leaky_port), ("healthy", healthy_port))]}
    (work / "exporter.yml").write_text(yaml.safe_dump(config))
    (work / "rules.yml").write_text(build_rules.render(scale=scale))
    (work / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": d(15 * scale), "evaluation_interval": d(60 * scale)},
        "rule_files": [str(work / "rules.yml")],
        "scrape_configs": [{"job_name": "cache-exporter",
                            "static_configs": [{"targets": [f"127.0.0.1:{exp_port}"]}]}]}))
    procs: list[subprocess.Popen] = []
    deaths: list[tuple[float, int, str]] = []
    listening: list[float] = []
    current: list[subprocess.Popen] = []

    def crash_loop() -> None:
        for _ in range(args.lives):
            proc = start_node(leaky_port, grow, churn)
            current[:] = [proc]
            listening.append(time.monotonic())
            code = proc.wait()
            fatal = next((line for line in proc.stderr.read().decode(errors="replace").splitlines()
                          if "FATAL ERROR" in line), "")
            deaths.append((time.monotonic(), code, fatal))

    try:
        procs.append(start_node(healthy_port, grow, churn, max_entries=4000))
        log = open(work / "exporter.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([sys.executable, "-m", "exporter", "run", "--listen", f"127.0.0.1:{exp_port}",
                                       "--config", str(work / "exporter.yml")], stdout=log, stderr=log, cwd=REPO))
        procs.append(subprocess.Popen([shutil.which("prometheus") or "prometheus",
                                       f"--config.file={work / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={work / 'data'}",
                                       f"--web.listen-address=127.0.0.1:{prom_port}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: get(f"http://127.0.0.1:{prom_port}/-/ready"), timeout=30, message="prometheus")
        threading.Thread(target=crash_loop, daemon=True).start()
        armed: set[tuple[int, str]] = set()
        first: dict[tuple[int, str], float] = {}
        healthy_firing = 0
        query = urllib.parse.urlencode({"query": 'ALERTS{alertname="AppHeapExhaustionPredicted"}'})
        while len(deaths) < args.lives:
            now = time.monotonic()
            life = min(len(deaths), args.lives - 1)
            answer = json.loads(get(f"http://127.0.0.1:{prom_port}/api/v1/query?{query}"))
            firing = set()
            for a in answer["data"]["result"]:
                m = a["metric"]
                if m["alertstate"] != "firing":
                    continue
                if m.get("target") == "healthy":
                    healthy_firing += 1
                else:
                    firing.add(m["severity"])
            for severity in ("warning", "critical"):
                if severity not in firing:
                    armed.add((life, severity))
                elif (life, severity) in armed:
                    first.setdefault((life, severity), now)
            time.sleep(min(1.0, 15 * scale / 2))
        rows = []
        for life, (died, code, fatal) in enumerate(deaths):
            def lead(severity: str, died: float = died, life: int = life) -> str:
                at = first.get((life, severity))
                return f"{(died - at) / scale / 60:.1f} min" if at is not None else "none"
            rows.append((life, code, f"{(died - listening[life]) / scale / 60:.1f} min", lead("warning"),
                         lead("critical"), fatal.replace("FATAL ERROR: ", "")[:60]))
        print(table(("life", "exit", "lived (at scale 1)", "warning before abort", "critical before abort",
                     "V8 said"), rows, title=f"node crash loop, scale {args.scale}"))
        print(f"healthy twin: {healthy_firing} firing AppHeapExhaustionPredicted observations")
    finally:
        for proc in current + procs:
            if proc.poll() is None:
                stop_process(proc)


if __name__ == "__main__":
    main()
