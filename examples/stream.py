"""A streaming response: chunks are sent as they are produced.

There is no Content-Length, so HTTP/1.1 clients receive `Transfer-Encoding: chunked`.
`?n=N` sets the number of chunks (default 10), `?ms=M` the pause between them
(default 100).

Run it:

    cargo run --release -- examples/stream.py:app

then `curl -N 'http://127.0.0.1:8000/?n=5&ms=500'` and watch the lines arrive one by one.
"""

import time
from urllib.parse import parse_qs


def _int(query, name, default, limit):
    try:
        return max(0, min(int(query[name][0]), limit))
    except (KeyError, ValueError):
        return default


def app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    n = _int(query, "n", 10, 10_000)
    ms = _int(query, "ms", 100, 10_000)
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])

    def chunks():
        for i in range(n):
            if i:
                time.sleep(ms / 1000.0)
            yield b"chunk %d of %d\n" % (i + 1, n)

    return chunks()
