"""Overload and fault behaviour: slow, hung, dying and growing handlers.

Every call is recorded (one line "<path> <token> <pid>") in $TEST_DIR/calls, so a test can
tell whether the application was called at all.

GET /pid                answer at once with the worker's pid
GET /sleep?ms=N         sleep N ms (at most 60 s), then answer
GET /wait?file=F        wait (at most 30 s) until $TEST_DIR/F exists, then answer
GET /hang               never answer within any test's timeout: one time.sleep(120), C
                        code that no asynchronous exception interrupts
GET /exit               os._exit(1): the worker dies mid-request
GET /grow?mib=N         keep N MiB (default 60) more in a global list, then answer
Every answer is JSON: {"pid": ..., "path": ..., "token": ...}.
"""

import json
import os
import time
from urllib.parse import parse_qs

HOARD = []


def _record(path, token):
    with open(os.path.join(os.environ["TEST_DIR"], "calls"), "a") as f:
        f.write("%s %s %d\n" % (path, token, os.getpid()))


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    token = q.get("token", "-")
    _record(path, token)
    if path == "/sleep":
        time.sleep(max(0, min(int(q.get("ms", "0")), 60_000)) / 1000.0)
    elif path == "/wait":
        release = os.path.join(os.environ["TEST_DIR"], q["file"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not os.path.exists(release):
            time.sleep(0.01)
    elif path == "/hang":
        time.sleep(120)
    elif path == "/exit":
        os._exit(1)
    elif path == "/grow":
        mib = int(q.get("mib", "60"))
        # Touch every page so it counts as resident memory.
        HOARD.append(bytearray(b"x" * (mib << 20)))
    data = json.dumps({"pid": os.getpid(), "path": path, "token": token}).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]
