"""Its import waits (bounded, 60 s) until the file TEST_DIR/go exists."""

import os
import time

_deadline = time.monotonic() + 60.0
while not os.path.exists(os.path.join(os.environ.get("TEST_DIR", "."), "go")):
    if time.monotonic() > _deadline:
        break
    time.sleep(0.02)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
