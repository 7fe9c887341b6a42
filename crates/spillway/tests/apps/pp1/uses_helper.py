"""Imports a module found only through a second --pythonpath entry."""

import helper_mod


def app(environ, start_response):
    body = helper_mod.GREETING.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
