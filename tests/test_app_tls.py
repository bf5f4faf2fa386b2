"""App targets over https: a certificate problem is reason "tls", not "protocol".

ssl.CertificateError is a ValueError; the app source once classified every ValueError as a
malformed reply. The endpoint is a real prometheus_client body served over TLS.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import TLSFiles
from prometheus_client import generate_latest

from exporter.config import build_config
from exporter.errors import PollError
from exporter.sources.app import AppSource


@pytest.fixture
def https_metrics(tls_files: TLSFiles) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server hook
            body = generate_latest()  # this process's own metrics: a real python app body
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def source(port: int, **tls: str) -> AppSource:
    entry = {"name": "tls-app", "type": "app", "url": f"https://127.0.0.1:{port}/metrics", "timeout": "2s",
             "memory_limit": "1GiB", **({"tls": tls} if tls else {})}
    return AppSource(build_config({"targets": [entry]}, "test").config.targets[0])  # type: ignore[arg-type]


@pytest.mark.parametrize("ca", ["system", "other_ca"])
def test_untrusted_certificate_is_a_tls_failure(https_metrics: int, tls_files: TLSFiles, ca: str) -> None:
    src = source(https_metrics, **({} if ca == "system" else {"ca_file": tls_files.other_ca}))
    try:
        with pytest.raises(PollError) as info:
            src.poll(time.monotonic() + 5)
        assert info.value.reason == "tls", info.value
        assert "certificate verify failed" in str(info.value)
    finally:
        src.close()


def test_trusted_certificate_polls(https_metrics: int, tls_files: TLSFiles) -> None:
    src = source(https_metrics, ca_file=tls_files.ca)
    try:
        reading = src.poll(time.monotonic() + 5)
        assert reading.details["runtime"] == "python"
        assert reading.memory.used and reading.memory.used > 0
    finally:
        src.close()
