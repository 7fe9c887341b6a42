"""For the lifecycle tests: who answered (worker pid, app version, instance), slow requests
and requests that wait for a file to appear in TEST_DIR."""

import json
import os
import time

VERSION = "v1"
TEST_DIR = os.environ.get("TEST_DIR", ".")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = dict(
        kv.split("=", 1) for kv in environ.get("QUERY_STRING", "").split("&") if "=" in kv
    )
    if path == "/slow":
        time.sleep(min(float(query.get("s", "1")), 30.0))
    elif path == "/wait":
        # Bounded: gives up after 30 s.
        name = os.path.basename(query.get("name", "go"))
        deadline = time.monotonic() + 30.0
        while not os.path.exists(os.path.join(TEST_DIR, name)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
    out = {
        "pid": os.getpid(),
        "version": VERSION,
        "instance": os.environ.get("APP_INSTANCE", ""),
        "path": path,
        "remote_addr": environ.get("REMOTE_ADDR"),
        "remote_port": environ.get("REMOTE_PORT"),
        "scheme": environ.get("wsgi.url_scheme"),
    }
    data = json.dumps(out).encode("ascii")
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]
