"""A plain prometheus_client app (no web framework): default registry on APP_PORT, a busy loop."""

import os
import time

from prometheus_client import start_http_server

start_http_server(int(os.environ["APP_PORT"]), addr="127.0.0.1")
junk: list[bytes] = []
while True:  # some allocation churn so the process is alive and doing work
    junk.extend(os.urandom(64) for _ in range(1000))
    if len(junk) > 50_000:
        junk.clear()
    time.sleep(0.05)
