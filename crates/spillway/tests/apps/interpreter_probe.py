"""Reports the interpreter the worker runs in."""
import json
import os
import sys


def app(environ, start_response):
    body = json.dumps(
        {
            "version": sys.version,
            "prefix": sys.prefix,
            "base_prefix": sys.base_prefix,
            "executable": sys.executable,
            "argv": sys.argv,
            "pid": os.getpid(),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
