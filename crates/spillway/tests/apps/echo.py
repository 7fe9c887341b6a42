"""Echoes the WSGI environ back as JSON, with the worker pid, sys.argv, cwd and body."""

import json
import os
import sys

ARGV_AT_IMPORT = list(sys.argv)


def describe(value):
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, tuple):
        return list(value)
    return "<%s>" % type(value).__name__


def app(environ, start_response):
    if environ.get("wsgi.input_terminated"):
        body = environ["wsgi.input"].read()
    else:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    out = {
        "environ": {k: describe(v) for k, v in environ.items()},
        "types": {k: type(v).__name__ for k, v in environ.items()},
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "argv_at_import": ARGV_AT_IMPORT,
        "cwd": os.getcwd(),
        "body": body.decode("latin-1"),
        "body_len": len(body),
        "osenv": {k: v for k, v in os.environ.items() if k.startswith("APP_")},
        "input": {
            m: callable(getattr(environ["wsgi.input"], m, None))
            for m in ("read", "readline", "readlines", "__iter__")
        },
        "errors": {
            m: callable(getattr(environ["wsgi.errors"], m, None))
            for m in ("write", "writelines", "flush")
        },
    }
    data = json.dumps(out, sort_keys=True).encode("ascii")
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]
