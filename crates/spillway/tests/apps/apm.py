"""Queue time as an APM agent computes it from the environ.

GET /sleep?ms=N   sleep N ms, then answer {}
GET /queue        answer what Scout's agent makes of HTTP_X_REQUEST_START / HTTP_X_QUEUE_START:
                  {"header": ..., "queue_ms": ...} (queue_ms null if the agent refused it)
"""

import json
import time

from scout_apm.core.queue_time import track_request_queue_time
from scout_apm.core.tracked_request import TrackedRequest


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    out = {}
    if path == "/sleep":
        ms = int(environ.get("QUERY_STRING", "ms=0").partition("=")[2] or 0)
        time.sleep(min(ms, 10_000) / 1000.0)
    elif path == "/queue":
        # The agent's own order: X-Queue-Start, then X-Request-Start (scout_apm.django.middleware).
        header = environ.get("HTTP_X_QUEUE_START") or environ.get("HTTP_X_REQUEST_START", "")
        tracked = TrackedRequest()
        ok = track_request_queue_time(header, tracked)
        ns = tracked.tags.get("scout.queue_time_ns") if ok else None
        out = {"header": header, "queue_ms": None if ns is None else ns / 1e6}
    data = json.dumps(out).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]
