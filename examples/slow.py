"""An API that spends its time waiting, like one waiting on its database.

Each request sleeps SLOW_MS milliseconds (environment, default 50), or `?ms=N` for that
request, then answers with the time slept and the worker's pid.

Run it:

    cargo run --release -- examples/slow.py:app
    cargo run --release -- --env SLOW_MS=200 examples/slow.py:app

then `curl 'http://127.0.0.1:8000/?ms=500'`.
"""

import json
import os
import time
from urllib.parse import parse_qs

DEFAULT_MS = int(os.environ.get("SLOW_MS", "50"))


def app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        ms = int(query["ms"][0]) if "ms" in query else DEFAULT_MS
    except ValueError:
        body = b'{"error": "ms must be an integer"}\n'
        start_response(
            "400 Bad Request",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]
    ms = max(0, min(ms, 60_000))
    time.sleep(ms / 1000.0)
    body = (json.dumps({"slept_ms": ms, "pid": os.getpid()}) + "\n").encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
