"""What does polling a SASL (-S, binary protocol only) memcached cost next to a plain one?

Two real memcached 1.6 servers (-m 64) get the same items (30 sizes, ~26 slab classes) through a
binary-protocol client: one plain (auto protocol, polled over text) and one with -S and a sasldb
user (polled over binary, SASL PLAIN). Each is polled by one MemcachedSource the way the
scheduler polls a target:

* first poll: wall time and connections opened (text: 1; SASL: the text attempt the server
  closes, the SASL_LIST_MECHS probe, the authenticated connection);
* then ``--polls`` polls back to back on the kept connection: wall and CPU per poll, series per
  poll, and the server's ``bytes_written`` per poll (the replies' size).

Prints figures; asserts nothing. Needs memcached and saslpasswd2 (sasl2-bin).

    .venv/bin/python benchmarks/bench_poll_memcached_sasl.py [--polls 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from _common import MEMCACHED_VALUE_SIZES, free_port, table, wait_until

from exporter.sources.memcached import MemcachedSource
from exporter.targets import Credentials, MemcachedTarget

HEADER = struct.Struct(">BBHBBHIIQ")
USER, PASSWORD = "exporter", "bench-password"


class BinaryClient:
    def __init__(self, port: int, sasl: bool) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if sasl:
            assert self.call(0x21, b"PLAIN", b"\0" + USER.encode() + b"\0" + PASSWORD.encode())[0] == 0

    def call(self, opcode: int, key: bytes = b"", value: bytes = b"", extras: bytes = b"") -> tuple[int, bytes]:
        self.sock.sendall(HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, len(extras) + len(key) + len(value),
                                      0, 0) + extras + key + value)
        _, _, keylen, extlen, _, status, length, _, _ = HEADER.unpack(self._exact(HEADER.size))
        return status, self._exact(length)[extlen + keylen:]

    def stat(self, name: str) -> int:
        self.sock.sendall(HEADER.pack(0x80, 0x10, 0, 0, 0, 0, 0, 0, 0))
        found = 0
        while True:
            _, _, keylen, extlen, _, _, length, _, _ = HEADER.unpack(self._exact(HEADER.size))
            body = self._exact(length)
            if keylen == 0:
                return found
            if body[extlen:extlen + keylen] == name.encode():
                found = int(body[extlen + keylen:])

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data


def start(workdir: Path, sasl: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [shutil.which("memcached") or "memcached", *(["-u", "root"] if os.geteuid() == 0 else []),
           "-U", "0", "-l", "127.0.0.1", "-p", str(port), "-m", "64"]
    env = None
    if sasl:
        db = workdir / "sasldb2"
        subprocess.run(["saslpasswd2", "-p", "-a", "memcached", "-c", "-f", str(db), USER], input=PASSWORD.encode(),
                       check=True)
        (workdir / "memcached.conf").write_text(f"mech_list: plain\nsasldb_path: {db}\n")
        cmd.append("-S")
        env = {**os.environ, "SASL_CONF_PATH": str(workdir)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until(ready, timeout=10, message="memcached")
    return proc, port


def load(port: int, sasl: bool) -> int:
    c = BinaryClient(port, sasl)
    stored = 0
    for i, size in enumerate(MEMCACHED_VALUE_SIZES):
        for j in range(max(20, min(400, (256 << 10) // size))):
            status, _ = c.call(0x01, f"k{i}:{j}".encode(), b"x" * size, struct.pack(">II", 0, 0))
            stored += status == 0
    return stored


def measure(name: str, port: int, sasl: bool, polls: int) -> list[object]:
    target = MemcachedTarget(name=name, type="memcached", interval=15.0, timeout=5.0, host="127.0.0.1", port=port,
                             credentials=Credentials(USER, password_env="BENCH_MC_PW") if sasl else Credentials())
    source = MemcachedSource(target)
    counter = BinaryClient(port, sasl)
    t0 = time.perf_counter()
    reading = source.poll(time.monotonic() + 5)
    first_ms = (time.perf_counter() - t0) * 1000
    first_connections = source.connections_opened
    written_before = counter.stat("bytes_written")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(polls):
        reading = source.poll(time.monotonic() + 5)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    written = counter.stat("bytes_written") - written_before
    series = len(reading.samples)
    source.close()
    return [name, reading.details["protocol"], f"{first_ms:.2f}", first_connections, source.connections_opened,
            f"{wall / polls * 1e6:.0f}", f"{cpu / polls * 1e6:.0f}", f"{written / polls:.0f}", series]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--polls", type=int, default=1000)
    args = parser.parse_args()
    os.environ["BENCH_MC_PW"] = PASSWORD
    rows = []
    with tempfile.TemporaryDirectory(prefix="cache-exporter-bench-sasl-") as tmp:
        for name, sasl in (("plain", False), ("sasl", True)):
            workdir = Path(tmp) / name
            workdir.mkdir()
            proc, port = start(workdir, sasl)
            try:
                load(port, sasl)
                rows.append(measure(name, port, sasl, args.polls))
            finally:
                proc.kill()
                proc.wait(5)
    print(table(["server", "protocol", "first poll ms", "conns (first)", "conns (all)", "us/poll wall",
                 "us/poll cpu", "reply bytes/poll", "series"], rows,
                title=f"memcached poll cost, text vs binary+SASL ({args.polls} polls after the first)"))


if __name__ == "__main__":
    main()
