"""Two requests that can only both succeed if they run at the same time.

GET /meet?me=a&other=b creates $TEST_DIR/arrived-a, then waits (at most 20 s) for
$TEST_DIR/arrived-b. The response says whether they met and which pid served it."""

import json
import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    base = os.environ["TEST_DIR"]
    open(os.path.join(base, "arrived-" + q["me"]), "w").close()
    other = os.path.join(base, "arrived-" + q["other"])
    deadline = time.monotonic() + 20
    met = False
    while time.monotonic() < deadline:
        if os.path.exists(other):
            met = True
            break
        time.sleep(0.01)
    data = json.dumps({"met": met, "pid": os.getpid(), "me": q["me"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
