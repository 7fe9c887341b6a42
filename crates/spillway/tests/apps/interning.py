"""Answers with the interpreter's count of allocated memory blocks after a collection,
and, when asked with X-Check-Interned, whether the environ keys of the request's X-Probe-*
headers are interned strings (the check interns copies of them, so it costs blocks)."""

import gc
import sys


def app(environ, start_response):
    gc.collect()
    blocks = sys.getallocatedblocks()
    interned = []
    check = "HTTP_X_CHECK_INTERNED" in environ
    for key in environ:
        if check and key.startswith("HTTP_X_PROBE"):
            # A fresh equal string: sys.intern gives back `key` itself only if `key` is
            # the interned one.
            copy = "".join(list(key))
            interned.append(sys.intern(copy) is key)
    body = ("%d %d/%d" % (blocks, sum(interned), len(interned))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
