"""Large responses, to push the response body past the front's credit window.

GET /stream?mib=N  streams N MiB in 64 KiB chunks (a generator, no Content-Length)
GET /whole?mib=N   returns one N MiB bytes object with its Content-Length
Byte i of the body is i % 251, so the client can check every byte.
"""


def _body(n):
    pattern = bytes(range(251))
    reps = n // 251 + 1
    return (pattern * reps)[:n]


def app(environ, start_response):
    qs = environ.get("QUERY_STRING", "")
    mib = int(qs[4:]) if qs.startswith("mib=") else 1
    size = mib << 20
    if environ["PATH_INFO"] == "/whole":
        body = _body(size)
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return [body]

    def gen():
        chunk = 64 << 10
        whole = _body(size)
        for i in range(0, size, chunk):
            yield whole[i : i + chunk]

    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return gen()
