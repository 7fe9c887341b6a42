"""The write() callable returned by start_response, mixed with a returned iterable."""


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/sized":
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        write(b"ab")
        write(b"cd")
        return [b"ef"]
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"a")
    write(b"")
    write(b"b")
    return iter([b"c", b"d"])
