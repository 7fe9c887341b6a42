"""The smallest WSGI application: "Hello, world!" with a Content-Length.

Run it (from the repository root):

    cargo run --release -- examples/hello.py:app

then `curl http://127.0.0.1:8000/`.
"""

BODY = b"Hello, world!\n"
HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
