"""bench_http_probe: the cost of an http_cache probe round and of reading caching headers.

1. ``classify`` (Cache-Status parsing and the vendor-header table) on typical and worst-case
   header sets: microseconds per response.
2. A probe round of 1, 10 and 50 URLs against a local Python origin (keep-alive, small bodies):
   wall time per round, connections opened over 20 rounds (should stay 1: persistent), and CPU.
3. A response that declares a 1 GiB body: what the probe reads (it must stop at the headers).

Prints figures; asserts nothing. Loopback only.
"""

from __future__ import annotations

import resource
import socket
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.config import build_config  # noqa: E402
from exporter.sources.http_cache import HttpCacheSource, classify  # noqa: E402

TYPICAL = [("Content-Type", "application/json"), ("Cache-Control", "public, max-age=60"), ("Age", "12"),
           ("Cache-Status", 'OriginCache; hit; ttl=1100, "CDN Company Here"; fwd=uri-miss; stored'),
           ("X-Cache", "MISS, HIT"), ("X-Cache-Status", "HIT")]
WORST = [("Cache-Status", ", ".join(f'"cache-{i}"; fwd=uri-miss; fwd-status=503; ttl={i}; key="/k/{i}"'
                                    for i in range(600)))]  # ~40 KiB: about the max_header_bytes budget


class Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else the origin's two writes meet delayed ACKs: 40 ms per request

    def do_GET(self) -> None:  # noqa: N802 - http.server hook
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.send_header("X-Cache-Status", "HIT")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args: object) -> None:
        pass


def timed_us(fn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def bench_classify() -> None:
    print("classify (headers -> verdict)")
    print(f"  typical 6 headers:            {timed_us(lambda: classify(TYPICAL, 200), 20000):8.1f} us")
    size = sum(len(v) for _, v in WORST)
    print(f"  worst: {size // 1024} KiB Cache-Status:      {timed_us(lambda: classify(WORST, 503), 50) / 1000:8.2f} ms")


def bench_rounds(port: int) -> None:
    print("probe rounds against a local keep-alive origin (20 rounds each)")
    print(f"  {'urls':>4}  {'p50 round ms':>12}  {'ms per URL':>10}  {'CPU ms/round':>12}  {'connections':>11}")
    for n in (1, 10, 50):
        target = build_config({"targets": [{"name": "b", "type": "http_cache", "url": f"http://127.0.0.1:{port}",
                                            "paths": [f"/p{i}" for i in range(n)], "timeout": "2s"}]},
                              "<bench>").config.targets[0]
        source = HttpCacheSource(target)  # type: ignore[arg-type]
        times, cpu0 = [], resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(20):
            started = time.perf_counter()
            source.poll(time.monotonic() + 30)
            times.append(time.perf_counter() - started)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / 20 * 1000
        p50 = statistics.median(times) * 1000
        print(f"  {n:>4}  {p50:>12.2f}  {p50 / n:>10.3f}  {cpu:>12.2f}  {source.connections_opened:>11}")
        source.close()


def bench_huge_body() -> None:
    sent = {"bytes": 0}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1073741824\r\nAge: 30\r\n\r\n")
        chunk = b"x" * 65536
        try:
            while sent["bytes"] < 2**30:
                conn.sendall(chunk)
                sent["bytes"] += len(chunk)
        except OSError:
            pass
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    target = build_config({"targets": [{"name": "h", "type": "http_cache", "timeout": "2s",
                                        "url": f"http://127.0.0.1:{listener.getsockname()[1]}/"}]},
                          "<bench>").config.targets[0]
    source = HttpCacheSource(target)  # type: ignore[arg-type]
    started = time.perf_counter()
    reading = source.poll(time.monotonic() + 5)
    took = (time.perf_counter() - started) * 1000
    source.close()
    thread.join(5)
    listener.close()
    status = reading.samples.value("http_cache_response_status_code")
    print("a 503 declaring a 1 GiB body")
    print(f"  probe took {took:.1f} ms, status {status:.0f}, bytes read by the probe <= {source.guard.received}, "
          f"server managed to send {sent['bytes'] / 2**20:.1f} MiB before the close")


def main() -> None:
    print("bench_http_probe")
    bench_classify()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        bench_rounds(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
    bench_huge_body()


if __name__ == "__main__":
    main()
