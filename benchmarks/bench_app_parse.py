"""bench_app_parse: the cost of reading an app's metrics body, with and without the pre-filter.

Builds bodies of 1k, 10k, 50k and 200k samples (a real Node.js prom-client body from
tests/fixtures/app plus unrelated application series), then times exporter.sources.app.map_body
(pre-filter by family name, then per-line parsing of what is left) against parsing the whole body
with prometheus_client's parser. Prints figures; asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from exporter.config import build_config  # noqa: E402
from exporter.sources.app import map_body  # noqa: E402

NODE = (ROOT / "tests/fixtures/app/nodejs_promclient.prom").read_text()


def body(extra: int) -> str:
    lines = [NODE]
    lines.append("# HELP http_request_duration_seconds Request latency.\n"
                 "# TYPE http_request_duration_seconds histogram\n")
    for i in range(extra):
        lines.append(f'http_request_duration_seconds_bucket{{route="/r{i % 500}",method="GET",le="{i % 13}"}} {i}\n')
    return "".join(lines)


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    target = build_config({"targets": [{"name": "n", "type": "app", "url": "http://127.0.0.1:1/metrics"}]},
                          "<bench>").config.targets[0]
    print("bench_app_parse: reading a Node.js app body padded with unrelated series")
    print(f"{'samples':>8}  {'body bytes':>11}  {'map_body (pre-filter) ms':>24}  {'full parse ms':>13}  "
          f"{'speed-up':>8}")
    for extra in (1_000, 10_000, 50_000, 200_000):
        text = body(extra)
        repeat = 5 if extra <= 50_000 else 2
        ours = timed(lambda text=text: map_body(text, target), repeat)
        full = timed(lambda text=text: sum(len(f.samples) for f in text_string_to_metric_families(text)), repeat)
        print(f"{extra:>8}  {len(text):>11,}  {ours * 1e3:>24.1f}  {full * 1e3:>13.1f}  {full / ours:>7.1f}x")


if __name__ == "__main__":
    main()
