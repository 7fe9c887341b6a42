"""Application errors, start_response exc_info rules, wsgi.errors."""

import json
import os
import sys
from urllib.parse import parse_qs

TEXT = [("Content-Type", "text/plain")]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/before":
        raise RuntimeError("boom-before-start-response")
    if path == "/after_start":
        start_response("200 OK", TEXT)
        raise RuntimeError("boom-after-start-response")
    if path == "/first_next":
        def gen():
            raise RuntimeError("boom-in-first-next")
            yield b"never"

        start_response("200 OK", TEXT)
        return gen()
    if path == "/not_bytes":
        start_response("200 OK", TEXT)
        return ["a str, not bytes"]
    if path == "/exc_info_before_send":
        start_response("200 OK", TEXT)
        try:
            raise ValueError("caught-before-send")
        except ValueError:
            start_response(
                "500 Internal Server Error",
                TEXT + [("X-Handled", "yes"), ("Content-Length", "7")],
                sys.exc_info(),
            )
        return [b"handled"]
    if path == "/exc_info_after_send":
        write = start_response("200 OK", TEXT)
        write(b"first;")
        try:
            raise ValueError("caught-after-send")
        except ValueError:
            try:
                start_response("500 Internal Server Error", TEXT, sys.exc_info())
            except ValueError:
                write(b"reraised;")
            else:
                write(b"NOT-reraised;")
        return [b"end"]
    if path == "/double_start":
        start_response("200 OK", TEXT)
        try:
            start_response("201 Created", TEXT)
        except Exception as e:  # noqa: BLE001 - which type is the server's choice
            body = ("second-call-raised:" + type(e).__name__).encode()
        else:
            body = b"second-call-accepted"
        return [body]
    if path == "/errors":
        q = parse_qs(environ.get("QUERY_STRING", ""))
        token = q.get("token", ["token"])[0]
        err = environ["wsgi.errors"]
        err.write("errors-write-%s\n" % token)
        err.writelines(["errors-writelines-%s-a\n" % token, "errors-writelines-%s-b\n" % token])
        err.flush()
        data = json.dumps({"pid": os.getpid()}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]
    if path == "/print_stderr":
        print("printed-to-sys-stderr", file=sys.stderr, flush=True)
        start_response("200 OK", TEXT + [("Content-Length", "2")])
        return [b"ok"]
    start_response("200 OK", TEXT + [("Content-Length", "3")])
    return [b"ok\n"]
