"""Answers the CPU scheduling policy of the Python thread serving the request."""

import os

NAMES = {os.SCHED_OTHER: "other", os.SCHED_BATCH: "batch", os.SCHED_IDLE: "idle"}


def app(environ, start_response):
    body = NAMES.get(os.sched_getscheduler(0), "unknown").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
