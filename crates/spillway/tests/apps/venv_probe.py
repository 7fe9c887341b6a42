"""Reports which interpreter prefix and which Flask the worker uses."""

import json
import sys

import flask


def app(environ, start_response):
    data = json.dumps(
        {"prefix": sys.prefix, "flask": flask.__file__, "executable": sys.executable}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
