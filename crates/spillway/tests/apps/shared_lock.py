"""An application whose requests queue on one lock that every worker process shares: an
exclusive `flock` on SHARED_LOCK_PATH held for LOCK_MS (default 20) milliseconds, as
writers queue on a SQLite file. The lock serves one request at a time whoever asks, so a
worker with more threads only takes a bigger share from the others."""

import fcntl
import os
import time

PATH = os.environ["SHARED_LOCK_PATH"]
HOLD = int(os.environ.get("LOCK_MS", "20")) / 1000.0


def app(environ, start_response):
    # A file opened per request: each open is its own lock owner, threads included.
    with open(PATH, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            time.sleep(HOLD)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    body = b"done\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
