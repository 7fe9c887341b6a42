"""Fast and slow requests in one application, for the `mixed` rows of bench/compare.

`GET /slow` waits 100 ms (like a call to a slow backend) before it answers; every other
path answers "Hello, world!" at once. Do slow requests make the fast ones wait?

    cargo run --release -- examples/mixed.py:app

then `curl http://127.0.0.1:8000/` and `curl http://127.0.0.1:8000/slow`.
"""

import time

FAST = b"Hello, world!\n"
SLOW = b"Hello, slowly!\n"


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(0.1)
        body = SLOW
    else:
        body = FAST
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
