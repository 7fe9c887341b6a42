"""An application whose requests queue on a lock of its own: a semaphore of LOCK_WIDTH
(default 2) around LOCK_MS (default 50) milliseconds of waiting, like a non-thread-safe
client guarded by a lock or a small connection pool. More threads than the width add no
throughput; they only queue inside the application."""

import os
import threading
import time

WIDTH = int(os.environ.get("LOCK_WIDTH", "2"))
HOLD = int(os.environ.get("LOCK_MS", "50")) / 1000.0
_gate = threading.BoundedSemaphore(WIDTH)


def app(environ, start_response):
    with _gate:
        time.sleep(HOLD)
    body = b"done\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
