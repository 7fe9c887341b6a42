"""Streaming responses (no Content-Length) and close() bookkeeping.

close() calls are appended to the file named by env CLOSE_LOG, one line each:
"<route> closed after <n> chunks". Marker files live in env TEST_DIR."""

import os
import time
from urllib.parse import parse_qs


def log_close(line):
    path = os.environ.get("CLOSE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


class Body:
    """An iterable with close(); `produce(i)` gives chunk i or raises StopIteration."""

    def __init__(self, route, produce):
        self.route = route
        self.produce = produce
        self.count = 0

    def __iter__(self):
        return self

    def __next__(self):
        chunk = self.produce(self.count)
        self.count += 1
        return chunk

    def close(self):
        log_close("%s closed after %d chunks" % (self.route, self.count))


def wait_for(path, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.01)
    return False


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = query(environ)
    headers = [("Content-Type", "text/plain")]
    if path == "/gated":
        # chunk-0, then waits for the marker file the client creates after receiving it.
        marker = os.path.join(os.environ["TEST_DIR"], q.get("marker", "marker"))

        def produce(i):
            if i == 0:
                return b"chunk-0\n"
            if i == 1:
                return b"chunk-1\n" if wait_for(marker) else b"TIMEOUT: chunk-0 never reached the client\n"
            if i == 2:
                return b"chunk-2\n"
            raise StopIteration

        start_response("200 OK", headers)
        return Body("gated", produce)
    if path == "/chunks":
        n = int(q.get("n", "3"))

        def produce(i):
            if i >= n:
                raise StopIteration
            time.sleep(0.005)
            return b"chunk-%d\n" % i

        start_response("200 OK", headers)
        return Body("chunks", produce)
    if path == "/forever":
        # Effectively endless for a client (3000 x 16 KiB, 10 ms apart); a server that
        # notices the client going away stops early.
        def produce(i):
            if i >= 3000:
                raise StopIteration
            time.sleep(0.01)
            return b"x" * 16384

        start_response("200 OK", headers)
        return Body("forever", produce)
    if path == "/raise_mid":
        def produce(i):
            if i == 0:
                return b"partial\n"
            raise RuntimeError("boom-mid-stream")

        start_response("200 OK", headers)
        return Body("raise_mid", produce)
    if path == "/empty_chunks":
        parts = [b"", b"a", b"", b"b", b""]

        def produce(i):
            if i >= len(parts):
                raise StopIteration
            return parts[i]

        start_response("200 OK", headers)
        return Body("empty_chunks", produce)
    if path == "/sized":
        body = b"0123456789"

        def produce(i):
            if i == 0:
                return body
            raise StopIteration

        start_response("200 OK", headers + [("Content-Length", str(len(body)))])
        return Body("sized", produce)
    if path == "/status":
        code = q.get("code", "204")
        reason = {"204": "No Content", "304": "Not Modified"}.get(code, "Whatever")

        def produce(i):
            if i == 0:
                return b"must-not-be-sent"
            raise StopIteration

        start_response("%s %s" % (code, reason), [])
        return Body("status-" + code, produce)
    start_response("404 Not Found", [("Content-Length", "0")])
    return Body("404", lambda i: (_ for _ in ()).throw(StopIteration))
