"""An app wrapped in wsgiref.validate.validator: any PEP 3333 violation by the server
raises AssertionError inside the worker (500 and a traceback in the log)."""

import warnings
from wsgiref.validate import validator

# Validator warnings become errors, so they cannot pass unnoticed.
warnings.simplefilter("error")


def inner(environ, start_response):
    path = environ["PATH_INFO"]
    inp = environ["wsgi.input"]
    if path == "/upload":
        first = inp.readline()
        rest = []
        while True:
            piece = inp.read(7)
            if not piece:
                break
            rest.append(piece)
        body = b"first=%d rest=%d lines=%d" % (len(first), len(b"".join(rest)), len(inp.readlines()))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            for i in range(3):
                yield b"part-%d\n" % i

        return gen()
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/error":
        raise RuntimeError("validated-app-error")
    if path == "/nocontent":
        start_response("204 No Content", [])
        return []
    body = b"validated ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = validator(inner)
